"""The mining job reading images and manifests from, and writing every output to, a real S3 API
(moto's server over HTTP on loopback), reached through pyarrow exactly as AWS would be."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import mine

from .s3_server import CREDENTIALS, S3Server

pytestmark = pytest.mark.ray
BUCKET = "lookbook-test"
SECRET = CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


def upload_manifest(
    client, table: pa.Table, key: str, id_column: str, sample_root: str, extra: dict[str, str] | None = None
) -> str:
    """Upload every image of the manifest and the manifest itself (with s3:// uris, plus the `extra`
    rows {id: uri} as they are); return its URI."""
    uris = []
    for uri in table["uri"].to_pylist():
        image_key = "images/" + uri.removeprefix(sample_root).lstrip("/")
        with open(uri, "rb") as f:
            client.put_object(Bucket=BUCKET, Key=image_key, Body=f.read())
        uris.append(f"s3://{BUCKET}/{image_key}")
    extra = extra or {}
    ids = table[id_column].to_pylist() + list(extra)
    buffer = io.BytesIO()
    pq.write_table(pa.table({id_column: ids, "uri": uris + list(extra.values())}), buffer)
    client.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
    return f"s3://{BUCKET}/{key}"


def test_job_reads_and_writes_s3(s3, sample, model_overrides, local_ray, capfd):
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    root = str(sample.lookbook_path.parent)
    outside = {  # quarantined as forbidden_uri: another bucket, and credentials in the uri
        "l_other_bucket": "s3://other-bucket/images/a.jpg",
        "l_user_info": f"s3://{CREDENTIALS['AWS_ACCESS_KEY_ID']}:{SECRET}@{BUCKET}/images/a.jpg",
    }
    lookbook = upload_manifest(
        client, pq.read_table(sample.lookbook_path), "lookbook.parquet", "image_id", root, outside
    )
    garments = upload_manifest(client, pq.read_table(sample.garments_path), "garments.parquet", "garment_id", root)
    output = f"s3://{BUCKET}/runs/one"
    summary = mine.main(
        [
            *model_overrides,
            f"storage.s3_endpoint={s3.endpoint}",
            f"storage.allowed_s3_prefixes=[s3://{BUCKET}/images/]",
            f"lookbook={lookbook}",
            f"garments={garments}",
            f"output={output}",
        ]
    )
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="runs/one/")["Contents"]}
    assert {"runs/one/summary.json", "runs/one/index/manifest.json"} <= keys
    assert any(k.startswith("runs/one/pairs/shard=00000/part-") for k in keys)
    assert any(k.startswith("runs/one/_commits/lookbook/shard-") for k in keys)
    stored = json.loads(client.get_object(Bucket=BUCKET, Key="runs/one/summary.json")["Body"].read())
    assert stored["counts"] == summary["counts"]
    assert summary["counts"]["garments_scored"] == pq.read_table(sample.garments_path).num_rows
    assert summary["quarantine"]["lookbook"] == {"decode_error": len(sample.bad_ids), "forbidden_uri": 2}
    assert not [k for k in keys if ".tmp" in k]
    quarantine = pq.read_table(
        f"{BUCKET}/runs/one/quarantine/lookbook", filesystem=s3.filesystem(), partitioning=None
    ).to_pylist()
    assert {q["id"] for q in quarantine if q["reason"] == "forbidden_uri"} == set(outside)
    written = {
        "summary.json": stored_text(client, "runs/one/summary.json"),
        "config.yaml": stored_text(client, "runs/one/config.yaml"),
        "quarantine": json.dumps(quarantine),  # errors, and uris with user info redacted
        "driver output": "".join(capfd.readouterr()),
    }
    for what, text in written.items():  # credentials never reach outputs or logs
        assert SECRET not in text, what
        assert CREDENTIALS["AWS_ACCESS_KEY_ID"] not in text, what


def stored_text(client, key: str) -> str:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def test_s3_reads_stop_at_the_limit(s3, monkeypatch):
    """#13, item 3: the size check trusted the object's HEAD, which can change before the GET."""
    from core.storage import StorageConfig, TooLargeError, read_bytes

    for name, value in {**CREDENTIALS, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    client = s3.client()
    client.create_bucket(Bucket="limits")
    client.put_object(Bucket="limits", Key="big.bin", Body=b"x" * 2000)
    storage = StorageConfig(s3_endpoint=s3.endpoint)
    assert read_bytes("s3://limits/big.bin", storage, 2000) == b"x" * 2000
    with pytest.raises(TooLargeError, match="more than the limit of 1000 bytes"):
        read_bytes("s3://limits/big.bin", storage, 1000)
    with pytest.raises(FileNotFoundError):
        read_bytes("s3://limits/none.bin", storage, 1000)
