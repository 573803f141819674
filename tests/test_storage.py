"""Pure tests for the uri allow-list in core/storage.py."""

from __future__ import annotations

import pytest

from core.config import load_config
from core.storage import StorageConfig, forbidden, read_bytes, redact

ANY_BUCKET = StorageConfig()
ONE_PREFIX = StorageConfig(allowed_s3_prefixes=["s3://my-bucket/lookbook"])
S3_ONLY = StorageConfig(allowed_schemes=["s3"])


@pytest.mark.parametrize(
    "uri, storage",
    [
        ("/data/images/a.jpg", ANY_BUCKET),
        ("images/a.jpg", ANY_BUCKET),
        ("file:///data/a.jpg", ANY_BUCKET),
        ("s3://any-bucket/a.jpg", ANY_BUCKET),
        ("s3://my-bucket/lookbook/2026/a.jpg", ONE_PREFIX),
        ("s3://my-bucket/lookbook/a..b.jpg", ONE_PREFIX),  # '..' inside a name is not a segment
        ("s3://bucket/a.jpg", S3_ONLY),
    ],
)
def test_allowed_uris(uri, storage):
    assert forbidden(uri, storage) == ""


@pytest.mark.parametrize(
    "uri, storage, why",
    [
        ("http://example.com/a.jpg", ANY_BUCKET, "scheme 'http' of http://example.com/a.jpg is not in"),
        ("gs://bucket/a.jpg", ANY_BUCKET, "scheme 'gs'"),
        ("S3://bucket/a.jpg", ANY_BUCKET, "scheme 'S3'"),
        ("file:///etc/passwd", S3_ONLY, "scheme 'file' of file:///etc/passwd"),
        ("/etc/passwd", S3_ONLY, "scheme 'file' of /etc/passwd"),
        ("/data/images/../../etc/passwd", ANY_BUCKET, "has a '..' path segment"),
        ("../secrets/a.jpg", ANY_BUCKET, "has a '..' path segment"),
        ("s3://my-bucket/lookbook/../private/a.jpg", ONE_PREFIX, "has a '..' path segment"),
        ("s3://other-bucket/lookbook/a.jpg", ONE_PREFIX, "under none of storage.allowed_s3_prefixes"),
        ("s3://my-bucket/lookbook-private/a.jpg", ONE_PREFIX, "under none of"),  # a prefix is a folder
        ("s3://AKIAXXX:s3cr3t@my-bucket/lookbook/a.jpg", ONE_PREFIX, "s3://***@my-bucket/lookbook/a.jpg carries"),
    ],
)
def test_forbidden_uris_say_why(uri, storage, why):
    message = forbidden(uri, storage)
    assert why in message
    assert "s3cr3t" not in message


def test_redact_hides_user_info_only():
    assert redact("s3://key:secret@bucket/a@b.jpg") == "s3://***@bucket/a@b.jpg"
    assert redact("s3://bucket/a@b.jpg") == "s3://bucket/a@b.jpg"
    assert redact("/local/a@b.jpg") == "/local/a@b.jpg"


def test_file_uris_read_like_paths(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    assert read_bytes(f"file://{tmp_path}/a.bin", ANY_BUCKET, 10) == b"abc"


@pytest.mark.parametrize(
    "override, match",
    [
        ("storage.allowed_schemes=[file,http]", r"may list only \['file', 's3'\], got \['http'\]"),
        ("storage.allowed_s3_prefixes=[my-bucket/x]", "must be s3://bucket/prefix URIs"),
        ("storage.s3_endpoint=http://user:pass@127.0.0.1:9000", r"\['storage.s3_endpoint'\] carry credentials"),
        ("output=s3://key:pass@bucket/run", r"\['output'\] carry credentials"),
        ("embedder.model.spec=s3://key:pass@bucket/siglip", r"\['embedder.model.spec'\] carry credentials"),
    ],
)
def test_config_refuses_unreadable_schemes_bad_prefixes_and_endpoint_credentials(override, match):
    with pytest.raises(ValueError, match=match) as refused:
        load_config(["lookbook=x", "garments=x", "output=x", override])
    assert "pass" not in str(refused.value)
