"""Index stage: crop embeddings (Parquet) -> FAISS shards built in parallel Ray tasks + manifest.

Global ids are row positions in the sorted list of crop files, so each shard holds a contiguous
id range and no process ever holds more than one shard's vectors.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from miner import index as shard_index
from miner.arrow import matrix
from miner.config import IndexConfig, StorageConfig
from miner.dataflow import write_table
from miner.storage import filesystem, join, list_files, write_bytes

PAYLOAD_COLUMNS = ["crop_id", "image_id", "box", "embedding", "caption_embedding"]


def footers(files: list[str], storage: StorageConfig) -> tuple[list[int], set[int]]:
    """Rows per Parquet file and the set of embedding dimensions, from the file footers only."""
    counts, dims = [], set()
    for uri in files:
        fs, path = filesystem(uri, storage)
        with fs.open_input_file(path) as f:
            footer = pq.ParquetFile(f)
            counts.append(footer.metadata.num_rows)
            dims.add(footer.schema_arrow.field("embedding").type.list_size)
    return counts, dims


def read_payload(files: list[str], slices: list[shard_index.FileSlice], storage: StorageConfig) -> pa.Table:
    """The payload columns of the given row slices, in order."""
    tables = []
    for piece in slices:
        fs, path = filesystem(files[piece.position], storage)
        table = pq.read_table(path, filesystem=fs, columns=PAYLOAD_COLUMNS)
        tables.append(table.slice(piece.start, piece.stop - piece.start))
    return pa.concat_tables(tables)


@ray.remote
def _train(
    files: list[str], slices: list[shard_index.FileSlice], cfg: IndexConfig, storage: StorageConfig
) -> bytes | None:
    sample = matrix(read_payload(files, slices, storage)["embedding"])[: cfg.train_sample]
    return shard_index.train_template(sample, cfg.factory, cfg.use_gpu)


@ray.remote
def _build(
    shard: int,
    files: list[str],
    slices: list[shard_index.FileSlice],
    id_start: int,
    template: bytes | None,
    index_dir: str,
    cfg: IndexConfig,
    storage: StorageConfig,
) -> shard_index.ShardEntry:
    payload = read_payload(files, slices, storage)
    index = shard_index.build_shard(matrix(payload["embedding"]), id_start, cfg.factory, template, cfg.use_gpu)
    data = shard_index.serialize(index)
    entry = shard_index.ShardEntry(
        index_file=f"shard-{shard:05d}.faiss",
        payload_file=f"shard-{shard:05d}.parquet",
        rows=len(payload),
        id_start=id_start,
        id_end=id_start + len(payload),
        sha256=shard_index.sha256(data),
    )
    write_bytes(join(index_dir, entry.index_file), data, storage)
    write_table(payload, join(index_dir, entry.payload_file), storage)
    return entry


def build(crops_dir: str, index_dir: str, cfg: IndexConfig, storage: StorageConfig) -> shard_index.IndexManifest:
    """Build every shard (one Ray task each) and write `manifest.json` last."""
    files = list_files(crops_dir, storage, ".parquet")
    counts, dims = footers(files, storage)
    shards = shard_index.partition(counts, cfg.shards)
    template = ray.get(_train.remote(files, shards[0][1], cfg, storage)) if shards else None
    entries = ray.get(
        [
            _build.remote(n, files, slices, start, template, index_dir, cfg, storage)
            for n, (start, slices) in enumerate(shards)
        ]
    )
    if len(dims) > 1:
        raise ValueError(f"crop files under {crops_dir} mix embedding dimensions {sorted(dims)}")
    manifest = shard_index.IndexManifest(cfg.factory, dims.pop() if dims else 0, "inner_product", cfg.nprobe, entries)
    write_bytes(join(index_dir, shard_index.MANIFEST), manifest.to_json().encode(), storage)
    return manifest
