"""Pure tests for the uri allow-list in core/storage.py."""

from __future__ import annotations

import os
import string
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import load_config, validate
from core.storage import StorageConfig, TooLargeError, forbidden, read_bytes, redact

ANY_BUCKET = StorageConfig(allowed_local_roots=["/data", "images"])
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


def test_reads_stop_at_the_limit_whatever_the_file_reports(tmp_path):
    """#13, item 3: /dev/zero reports size 0 and never ends; a FIFO would block the reader."""
    with pytest.raises(OSError, match="/dev/zero is not a regular file"):
        read_bytes("/dev/zero", ANY_BUCKET, 1000)
    (tmp_path / "big.bin").write_bytes(b"x" * 1001)
    with pytest.raises(TooLargeError, match="more than the limit of 1000 bytes"):
        read_bytes(str(tmp_path / "big.bin"), ANY_BUCKET, 1000)
    assert read_bytes(str(tmp_path / "big.bin"), ANY_BUCKET, 1001) == b"x" * 1001
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        read_bytes(str(tmp_path / "fifo"), ANY_BUCKET, 1000)


@pytest.mark.parametrize(
    "uri, why",
    [
        ("/etc/passwd", "under none of storage.allowed_local_roots"),
        ("/data/no-such-file.jpg", ""),  # allowed: whether it exists is the reader's business
        ("/nowhere/no-such-file.jpg", "under none of"),  # refused like an existing file outside
        ("file://data/a.jpg", "names a host"),
        ("file://localhost/data/a.jpg", "names a host"),
        ("/data/a\x00.jpg", "holds a control character"),
    ],
)
def test_local_reads_stay_under_the_allowed_roots(uri, why):
    """#13, items 3 and 4."""
    assert (why in forbidden(uri, ANY_BUCKET)) if why else forbidden(uri, ANY_BUCKET) == ""


def test_symlinks_out_of_a_root_are_refused_and_an_empty_list_allows_no_local_file(tmp_path):
    """#13, item 4."""
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").write_text("key")
    (tmp_path / "root" / "a.jpg").symlink_to(tmp_path / "secret")
    storage = StorageConfig(allowed_local_roots=[str(tmp_path / "root")])
    assert "under none of" in forbidden(str(tmp_path / "root" / "a.jpg"), storage)
    assert "no local file is read" in forbidden(str(tmp_path / "secret"), StorageConfig())


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


CONFIG = load_config(["lookbook=x", "garments=x", "output=x"])
USER = st.text(alphabet=string.ascii_letters + string.digits + "+-._~", min_size=1, max_size=20)
PASSWORD = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="@", exclude_categories=("Cc",)), max_size=40
)
HOST_PATH = st.from_regex(r"[a-z0-9][a-z0-9.-]{2,20}/[a-z0-9/._-]{0,30}", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(scheme=st.sampled_from(["s3", "file", "http", "https", "gs"]), user=USER, password=PASSWORD, rest=HOST_PATH)
def test_credentials_are_refused_and_redacted_whatever_their_characters(scheme, user, password, rest):
    """#13, item 2: a password may hold `/` (AWS secret keys do), `:` and any other character but `@`."""
    secret = f"SECRET{user}" + (f":{password}" if password else "")
    uri = f"{scheme}://{secret}@{rest}"
    assert redact(uri) == f"{scheme}://***@{rest}"
    why = forbidden(uri, ANY_BUCKET)
    assert why and "SECRET" not in why
    for where in ("output", "lookbook"):
        with pytest.raises(ValueError, match="carry credentials") as refused:
            validate(replace(CONFIG, **{where: uri}))
        assert "SECRET" not in str(refused.value)
