"""Index stage: crop embeddings (Parquet) -> FAISS shards built in parallel Ray tasks + manifest.

Global ids are row positions in the sorted list of crop files, so each shard holds a contiguous
id range. One task trains the shared template on a sample drawn across all files (at most
`index.train_sample` rows), then one task per shard fills a copy of it: no process ever holds
more than one shard's vectors or the training sample. A finished index whose manifest records
the same crop files (names, sizes, modification times) and index settings is kept as it is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from core import index as shard_index
from core.arrow import matrix
from core.config import IndexConfig, MineConfig
from core.schemas import CROPS_DIR, INDEX_DIR
from core.storage import StorageConfig, filesystem, join, read_bytes, write_bytes, write_table
from pipeline import commits
from pipeline.commits import ShardCommit

PAYLOAD_COLUMNS = ["crop_id", "image_id", "box", "embedding", "caption_embedding"]
MAX_MANIFEST_BYTES = 64 * 2**20


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


def read_sample(files: list[str], sample: list[tuple[int, np.ndarray]], storage: StorageConfig) -> np.ndarray:
    """(n, dim) float32 embeddings of the sampled rows, reading one file's embedding column at a time."""
    parts = []
    for position, rows in sample:
        fs, path = filesystem(files[position], storage)
        column = pq.read_table(path, filesystem=fs, columns=["embedding"])["embedding"]
        parts.append(matrix(column.take(pa.array(rows))))
    return np.concatenate(parts)


@ray.remote
def _train(
    files: list[str], counts: list[int], factory: str, nprobe: int, cfg: IndexConfig, storage: StorageConfig
) -> tuple[bytes, int]:
    """(serialized trained empty index, rows it was trained on)."""
    sample = read_sample(files, shard_index.sample_rows(counts, cfg.train_sample), storage)
    return shard_index.train_template(sample, factory, cfg.use_gpu, nprobe), len(sample)


@ray.remote
def _build(
    shard: int,
    files: list[str],
    slices: list[shard_index.FileSlice],
    id_start: int,
    factory: str,
    template: bytes | None,
    index_dir: str,
    cfg: IndexConfig,
    storage: StorageConfig,
) -> shard_index.ShardEntry:
    payload = read_payload(files, slices, storage)
    index = shard_index.build_shard(matrix(payload["embedding"]), id_start, factory, template, cfg.use_gpu)
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


def source_fingerprint(crops_dir: str, files: list[str], cfg: IndexConfig, storage: StorageConfig) -> str:
    """sha256 of what an index is built from: each crop file's name under `crops_dir`, size and
    modification time (a redone work shard rewrites its files), and the index settings."""
    fs, root = filesystem(crops_dir, storage)
    infos = fs.get_file_info([filesystem(uri, storage)[1] for uri in files])
    listing = [(i.path.removeprefix(root), i.size, i.mtime_ns) for i in infos]
    return hashlib.sha256(json.dumps([listing, asdict(cfg)], sort_keys=True).encode()).hexdigest()


def finished(index_dir: str, source: str, storage: StorageConfig) -> shard_index.IndexManifest | None:
    """The index under `index_dir` when its manifest records `source` and all its shard files
    exist (their checksums are verified when a searcher loads them), else None."""
    try:
        manifest = shard_index.IndexManifest.from_json(
            read_bytes(join(index_dir, shard_index.MANIFEST), storage, MAX_MANIFEST_BYTES).decode()
        )
    except FileNotFoundError:
        return None
    fs, root = filesystem(index_dir, storage)
    paths = [f"{root}/{name}" for s in manifest.shards for name in (s.index_file, s.payload_file)]
    present = all(info.type == pafs.FileType.File for info in fs.get_file_info(paths))
    return manifest if manifest.source == source and present else None


def build(
    crops_dir: str, files: list[str], index_dir: str, cfg: IndexConfig, storage: StorageConfig
) -> shard_index.IndexManifest:
    """Index the crop Parquet `files` (the committed ones, `commits.shard_files`; their names
    are recorded relative to `crops_dir`): pick the index type, train its template once, build
    every shard (one Ray task each) and write `manifest.json` last; or return the finished index
    built from the same crop files and settings (see `finished`)."""
    source = source_fingerprint(crops_dir, files, cfg, storage)
    if manifest := finished(index_dir, source, storage):
        print(f"[lookbook-miner] index: {index_dir} is up to date with the crop files, kept", flush=True)
        return manifest
    counts, dims = footers(files, storage)
    if len(dims) > 1:
        raise ValueError(f"crop files under {crops_dir} mix embedding dimensions {sorted(dims)}")
    dim, total = (dims.pop() if dims else 0), sum(counts)
    budget = int(cfg.memory_budget_gb * 2**30)
    factory, params = shard_index.resolve(cfg.factory, total, max(dim, 1), budget, cfg.nprobe)
    shards = shard_index.partition(counts, cfg.shards)
    resources = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    template, train_rows = None, 0
    if shards and not shard_index.new_index(factory, dim).is_trained:
        task = _train.options(**resources).remote(files, counts, factory, params["nprobe"], cfg, storage)
        template, train_rows = ray.get(task)
    entries = ray.get(
        [
            _build.options(**resources).remote(n, files, slices, start, factory, template, index_dir, cfg, storage)
            for n, (start, slices) in enumerate(shards)
        ]
    )
    manifest = shard_index.IndexManifest(
        index_type=factory,
        dim=dim,
        metric=shard_index.METRIC,
        nprobe=params["nprobe"],
        shards=entries,
        rows=total,
        train_rows=train_rows,
        params=params,
        source=source,
    )
    manifest.check()
    write_bytes(join(index_dir, shard_index.MANIFEST), manifest.to_json().encode(), storage)
    return manifest


def index_run(cfg: MineConfig, crops: dict[int, ShardCommit]) -> shard_index.IndexManifest:
    """`build` over the crop files of the run's committed lookbook shards `crops`, into `<output>/index`."""
    files = commits.shard_files(cfg.output, crops, CROPS_DIR)
    return build(join(cfg.output, CROPS_DIR), files, join(cfg.output, INDEX_DIR), cfg.index, cfg.storage)
