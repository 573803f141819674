"""Sharded FAISS index: contiguous id ranges per shard, a JSON manifest, exact fan-out search.

Vectors are L2-normalised float32 and the metric is inner product, so a search score is a cosine.
Each shard is a standalone faiss file plus a Parquet payload of the rows it holds (sorted by id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import faiss
import numpy as np

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardEntry:
    """One shard: `index_file` holds ids in [id_start, id_end), payload rows in the same order."""

    index_file: str
    payload_file: str
    rows: int
    id_start: int
    id_end: int
    sha256: str


@dataclass(frozen=True)
class IndexManifest:
    index_type: str
    dim: int
    metric: str
    nprobe: int
    shards: list[ShardEntry]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        data = json.loads(text)
        return cls(**{**data, "shards": [ShardEntry(**s) for s in data["shards"]]})


@dataclass(frozen=True)
class FileSlice:
    """Rows [start, stop) of the file at `position` in the sorted file list."""

    position: int
    start: int
    stop: int


def partition(row_counts: list[int], shards: int) -> list[tuple[int, list[FileSlice]]]:
    """Split the rows of consecutive files into at most `shards` contiguous id ranges of equal size
    (within one row). A row's global id is its file's offset plus its row number.

    Returns, per non-empty shard, (first global id, the file slices it holds in id order).
    """
    total = sum(row_counts)
    offsets = np.concatenate([[0], np.cumsum(row_counts)]).tolist()
    bounds = [total * k // shards for k in range(shards + 1)]
    result = []
    for lo, hi in zip(bounds, bounds[1:]):
        if lo == hi:
            continue
        slices = [
            FileSlice(i, max(lo, offsets[i]) - offsets[i], min(hi, offsets[i + 1]) - offsets[i])
            for i in range(len(row_counts))
            if row_counts[i] and offsets[i] < hi and offsets[i + 1] > lo
        ]
        result.append((lo, slices))
    return result


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty index of `factory` type with inner-product metric that accepts `add_with_ids`."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    return index if factory.startswith("IVF") or "IDMap" in factory else faiss.IndexIDMap2(index)


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(faiss.index_gpu_to_cpu(index) if _on_gpu(index) else index).tobytes()


def deserialize(data: bytes, expected_sha256: str, name: str) -> faiss.Index:
    """The index in `data`; raises ValueError when its checksum differs from the manifest's."""
    actual = sha256(data)
    if actual != expected_sha256:
        raise ValueError(f"index shard {name} is corrupt: sha256 {actual} != manifest {expected_sha256}")
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_gpu_if_available(index: faiss.Index, use_gpu: str) -> faiss.Index:
    """The index moved to GPU 0 when `use_gpu` is "auto" and this process sees a GPU faiss build."""
    if use_gpu == "auto" and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def _on_gpu(index: faiss.Index) -> bool:
    return hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex)


def build_shard(vectors: np.ndarray, id_start: int, factory: str, template: bytes | None, use_gpu: str) -> faiss.Index:
    """A shard holding `vectors` (n, dim) under ids id_start..id_start+n-1. `template` is a
    serialized trained empty index, needed when `factory` requires training."""
    index = (
        faiss.deserialize_index(np.frombuffer(template, np.uint8)) if template else new_index(factory, vectors.shape[1])
    )
    index = to_gpu_if_available(index, use_gpu)
    index.add_with_ids(
        np.ascontiguousarray(vectors, np.float32), np.arange(id_start, id_start + len(vectors), dtype=np.int64)
    )
    return index


def train_template(sample: np.ndarray, factory: str, use_gpu: str) -> bytes | None:
    """Serialized trained, empty index for `factory`, or None when the type needs no training."""
    index = new_index(factory, sample.shape[1])
    if index.is_trained:
        return None
    index = to_gpu_if_available(index, use_gpu)
    index.train(np.ascontiguousarray(sample, np.float32))
    return serialize(index)


def search(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (n, k); ids are -1 where the shard has fewer than k vectors."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = nprobe
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
