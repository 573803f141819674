"""Sharded FAISS index: stable crop ids, index shards that own whole work shards, a JSON manifest,
exact fan-out search and the merge of per-shard top-k.

Vectors are L2-normalised and the metric is inner product, so a search score is a cosine. A crop's
index id is stable across runs: its work shard in the high bits, its row in that work shard's crop
files in the low `ROW_BITS` (`index_ids`). Index shard `s` of `S` holds every work shard `w` with
`w % S == s`, so redoing or adding a work shard touches one index shard: its old ids are removed
(`remove_work_shards`) and its new rows added. Each index shard is a standalone faiss file plus an
Arrow IPC payload of its rows (sorted by id); a searcher memory-maps both. All shards of one index
share one trained (empty) template, so an IVF list means the same region of space in every shard
and per-shard top-k results merge exactly. Choosing the type and the shard count: `core.index_plan`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

from core.storage import StorageConfig, join, read_bytes

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20
HNSW_MIN_EF_SEARCH = 64  # an HNSW coarse quantizer explores max(this, 2 * nprobe) candidates
METRIC = "inner_product"
SEED = 0  # training-sample draw; faiss k-means has its own fixed seed (ClusteringParameters.seed)
ROW_BITS = 40  # rows per work shard < 2**40; work shards < 2**23

# faiss GPU limits (GPU_MAX_SELECTION_K): k and nprobe above these fail inside faiss.
GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048
# GpuIndexIVFPQConfig: float16 lookup tables are required when m * 2**nbits exceeds this.
GPU_FLOAT32_LUT_MAX = 16384


def index_ids(work_shard: int, rows: int, first_row: int = 0) -> np.ndarray:
    """The stable index ids of rows first_row..first_row+rows-1 of a work shard's crop files."""
    return (np.int64(work_shard) << ROW_BITS) + np.arange(first_row, first_row + rows, dtype=np.int64)


def work_shard_of(ids: np.ndarray) -> np.ndarray:
    """The work shard of each index id (ids >= 0)."""
    return np.asarray(ids, np.int64) >> ROW_BITS


def index_shard_of(work_shard: int, index_shards: int) -> int:
    """The index shard that holds a work shard's crops."""
    return work_shard % index_shards


@dataclass(frozen=True)
class ShardEntry:
    """One index shard: `index_file` (faiss) and `payload_file` (Arrow IPC, one row per vector,
    sorted by `index_id`) hold `rows` crops of the work shards in `work_shards` (work shard ->
    digest of the crop files it was built from, see `pipeline.index_build.work_shard_digest`);
    `recall`: nprobe -> recall@10 measured on this shard (`core.index_plan.shard_recall`)."""

    index_file: str
    payload_file: str
    rows: int
    work_shards: dict[str, str]
    sha256: str
    recall: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexManifest:
    """What a search needs to load an index: its type and the shards, written after every shard.

    `nprobe`: IVF lists a search visits (the smallest measured to reach `index.target_recall`,
    also stored in each shard file); `rows` the total row count; `train_rows` the size of the
    sample the template was trained on and `trained_at_rows` the index's rows then (0 for types
    that need no training); `template_file` the trained empty index that later adds start from;
    `generation` counts the builds and updates that wrote this folder (it names their files);
    `params` how the type and shard count were chosen (`core.index_plan.IndexPlan`); `source` the
    digest of the work shards and settings it was built from ("" when unknown).
    """

    index_type: str
    dim: int
    metric: str
    nprobe: int
    shards: list[ShardEntry]
    rows: int = 0
    train_rows: int = 0
    trained_at_rows: int = 0
    template_file: str = ""
    generation: int = 0
    params: dict = field(default_factory=dict)
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        """The manifest in `text`; raises ValueError when its shards do not each hold their own work shards."""
        data = json.loads(text)
        shards = [ShardEntry(**s) for s in data.pop("shards")]
        manifest = cls(**data, shards=shards)
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise ValueError unless shard s holds only work shards w with w % len(shards) == s, each
        work shard at most once, and the shards' rows add up to `rows`."""
        if self.metric != METRIC:
            raise ValueError(f"index manifest metric {self.metric!r} is not {METRIC!r}")
        for s, shard in enumerate(self.shards):
            stray = [w for w in shard.work_shards if index_shard_of(int(w), len(self.shards)) != s]
            if stray or shard.rows < 0:
                raise ValueError(
                    f"index manifest shard {shard.index_file} (index shard {s} of {len(self.shards)}) holds"
                    f" work shards {stray} of another index shard, or {shard.rows} rows"
                )
        if sum(s.rows for s in self.shards) != self.rows:
            raise ValueError(
                f"index manifest says {self.rows} rows but its shards hold {sum(s.rows for s in self.shards)}"
            )

    def work_shards(self) -> dict[int, str]:
        """Every work shard in the index -> the digest of the crop files it was built from."""
        return {int(w): digest for s in self.shards for w, digest in s.work_shards.items()}


def load_manifest(index_dir: str, storage: StorageConfig) -> IndexManifest:
    """The manifest of the index under `index_dir`; raises FileNotFoundError when there is none."""
    return IndexManifest.from_json(read_bytes(join(index_dir, MANIFEST), storage, MAX_MANIFEST_BYTES).decode())


def sample_rows(row_counts: list[int], size: int, seed: int = SEED) -> list[tuple[int, np.ndarray]]:
    """A uniform sample without replacement of min(size, total) rows drawn across all files.

    Returns (file position, sorted row numbers in that file) for each file with sampled rows, in
    file order; the same arguments always give the same sample.
    """
    total = int(sum(row_counts))
    size = min(size, total)
    if size <= 0:
        return []
    ids = np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))
    offsets = np.concatenate([[0], np.cumsum(row_counts)]).astype(np.int64)
    positions = np.searchsorted(offsets, ids, side="right") - 1
    starts = np.flatnonzero(np.diff(positions, prepend=-1))
    return [(int(positions[a]), ids[a:b] - offsets[positions[a]]) for a, b in zip(starts, [*starts[1:], len(ids)])]


# ---------------------------------------------------------------------------------------------
# Building, updating and (de)serializing shards


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty index of `factory` type with inner-product metric that accepts `add_with_ids`
    and `remove_ids`.

    PQ types skip the polysemous training index_factory turns on: it only serves Hamming-filtered
    search, which is never used here, and costs minutes of training. IVF float16 codes store the
    vectors themselves, not their residuals from the list centroid: float16 embeddings (as the job
    stores them) are then held exactly, and scanning a list needs no centroid term.
    """
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    coded = faiss.downcast_index(ivf) if ivf is not None else _innermost(index)
    if hasattr(coded, "do_polysemous_training"):
        coded.do_polysemous_training = False
    if isinstance(coded, faiss.IndexIVFScalarQuantizer) and coded.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
        coded.by_residual = False
    needs_id_map = ivf is None and "IDMap" not in factory
    return faiss.IndexIDMap(index) if needs_id_map else index


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(faiss.index_gpu_to_cpu(index) if _on_gpu(index) else index).tobytes()


def read_local(path: str, expected_sha256: str, name: str, io_flags: int = 0) -> faiss.Index:
    """The index in the local file `path`, read by faiss with `io_flags` (0: all of it into memory,
    with no copy of the file's bytes besides); raises ValueError when the file's checksum differs
    from the manifest's."""
    check_sha256(file_sha256(path), expected_sha256, name)
    return faiss.read_index(path, io_flags)


def read_mapped(path: str, expected_sha256: str, name: str, factory: str) -> faiss.Index:
    """The index of type `factory` in the local file `path`, its vectors memory-mapped read-only
    (IVF lists or flat codes stay in the page cache, shared by every process that maps the file,
    not in the process's own memory); raises ValueError when the file's checksum differs from the
    manifest's."""
    mapped = faiss.IO_FLAG_MMAP if "IVF" in factory else faiss.IO_FLAG_MMAP_IFC  # faiss maps one or the other
    return read_local(path, expected_sha256, name, mapped | faiss.IO_FLAG_READ_ONLY)


def check_sha256(actual: str, expected: str, name: str) -> None:
    if actual != expected:
        raise ValueError(f"index shard {name} is corrupt: sha256 {actual} != manifest {expected}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a local file, read 1 MiB at a time (larger reads leave their buffers resident)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def train_template(
    sample: np.ndarray, factory: str, use_gpu: str, nprobe: int | None = None, quantizer: faiss.Index | None = None
) -> bytes:
    """Serialized trained, empty index of `factory` with `nprobe` set (nothing to train for some
    types). On a GPU (see `gpu_choice`) the k-means assignment runs there. An IVF type given the
    trained coarse `quantizer` of another (same nlist and quantizer type) takes a copy of it and
    trains only its codes."""
    index = new_index(factory, sample.shape[1])
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe:
        ivf.nprobe = min(nprobe, ivf.nlist)
    if ivf is not None and quantizer is not None:
        hnsw = [isinstance(faiss.downcast_index(q), faiss.IndexHNSW) for q in (quantizer, ivf.quantizer)]
        if quantizer.ntotal != ivf.nlist or hnsw[0] != hnsw[1]:
            raise ValueError(f"{factory} cannot reuse a quantizer of {quantizer.ntotal} centroids (HNSW: {hnsw[0]})")
        copy = faiss.clone_index(quantizer)
        copy.this.disown()  # the IVF index owns and frees it
        ivf.quantizer, ivf.own_fields = copy, True
    if index.is_trained:
        return serialize(index)
    clustering = None
    if ivf is not None and gpu_choice(use_gpu, gpus_visible())[0]:
        clustering = faiss.index_cpu_to_gpu(_gpu_resources(), 0, faiss.IndexFlatL2(ivf.d))
        ivf.clustering_index = clustering
    index.train(np.ascontiguousarray(sample, np.float32))
    if clustering is not None:
        ivf.clustering_index = None
    return serialize(index)


def from_template(template: bytes, use_gpu: str) -> faiss.Index:
    """An empty index from a serialized template, on GPU 0 when `use_gpu` allows and one is visible."""
    return to_gpu_if_available(faiss.deserialize_index(np.frombuffer(template, np.uint8)), use_gpu)


def add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """`index` with `vectors` (n, dim) added under `ids` (n,) int64."""
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
    return index


def remove_work_shards(index: faiss.Index, work_shards: list[int]) -> int:
    """Remove every vector of the given work shards from a CPU index; returns how many went."""
    removed = 0
    for w in work_shards:
        removed += index.remove_ids(faiss.IDSelectorRange(int(w) << ROW_BITS, (int(w) + 1) << ROW_BITS))
    return removed


# ---------------------------------------------------------------------------------------------
# GPU placement and its limits


def gpu_limit_error(k: int | None, nprobe: int | None) -> str | None:
    """Why a faiss GPU search with these k / nprobe would fail, or None when it is within limits."""
    if k is not None and k > GPU_MAX_K:
        return f"k={k} exceeds the faiss GPU limit of {GPU_MAX_K}"
    if nprobe is not None and nprobe > GPU_MAX_NPROBE:
        return f"nprobe={nprobe} exceeds the faiss GPU limit of {GPU_MAX_NPROBE}"
    return None


def gpu_choice(use_gpu: str, gpus: int, k: int | None = None, nprobe: int | None = None) -> tuple[bool, str]:
    """(place the index on GPU 0?, reason): reason is "gpu", "off", "no_gpu" or "over_gpu_limit: ..."
    (a CPU fallback for searches the GPU cannot run). `use_gpu` is "auto" or "off"."""
    if use_gpu not in ("auto", "off"):
        raise ValueError(f"index.use_gpu must be 'auto' or 'off', got {use_gpu!r}")
    if use_gpu == "off":
        return False, "off"
    if gpus <= 0:
        return False, "no_gpu"
    problem = gpu_limit_error(k, nprobe)
    if problem:
        return False, f"over_gpu_limit: {problem}"
    return True, "gpu"


def needs_float16_lut(index: faiss.Index) -> bool:
    """Whether a faiss GPU copy of `index` needs float16 PQ lookup tables (m * 2**nbits > 16384,
    GpuIndexIVFPQConfig); otherwise the faiss default (float32 tables) is kept."""
    ivf = faiss.try_extract_index_ivf(index)
    pq = getattr(faiss.downcast_index(ivf), "pq", None) if ivf is not None else None
    return pq is not None and pq.M * (1 << pq.nbits) > GPU_FLOAT32_LUT_MAX


def gpu_cloner_options(index: faiss.Index):
    """faiss.GpuClonerOptions (GPU builds only): faiss defaults, plus `needs_float16_lut`."""
    options = faiss.GpuClonerOptions()
    options.useFloat16 = needs_float16_lut(index)
    return options


def to_gpu_if_available(
    index: faiss.Index, use_gpu: str, k: int | None = None, nprobe: int | None = None
) -> faiss.Index:
    """The index moved to GPU 0 when `use_gpu` is "auto" and this process sees a GPU faiss build;
    given the `k` and `nprobe` its searches will use, it stays on CPU (with a warning) when they
    exceed the faiss GPU limits. Fast-scan (4-bit PQ) indexes, which faiss has no GPU version of,
    stay on CPU."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):
        return index  # fast-scan codes have no faiss GPU implementation
    place, reason = gpu_choice(use_gpu, gpus_visible(), k, nprobe)
    if reason.startswith("over_gpu_limit"):
        warnings.warn(f"faiss index stays on CPU: {reason.split(': ', 1)[1]}", stacklevel=2)
    if not place:
        return index
    return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, gpu_cloner_options(index))


def gpus_visible() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


@functools.cache
def _gpu_resources():
    """One StandardGpuResources per process: each reserves scratch memory on the device."""
    return faiss.StandardGpuResources()


def _innermost(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexIDMap | faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _on_gpu(index: faiss.Index) -> bool:
    return hasattr(faiss, "GpuIndex") and isinstance(_innermost(index), faiss.GpuIndex)


# ---------------------------------------------------------------------------------------------
# Search


def search(index: faiss.Index, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (n, k); ids are -1 where the shard has fewer than k vectors.

    `nprobe` (IVF types; capped at nlist) None keeps the value stored with the index. On a GPU,
    k or nprobe above the faiss limits raise ValueError (move the index with `to_gpu_if_available`
    given k and nprobe to fall back to CPU instead).
    """
    if _on_gpu(index):
        inner = _innermost(index)
        problem = gpu_limit_error(k, nprobe if nprobe else getattr(inner, "nprobe", None))
        if problem:
            raise ValueError(f"faiss GPU search refused: {problem}; lower it or set index.use_gpu=off")
        if nprobe and hasattr(inner, "nlist"):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", min(nprobe, inner.nlist))
    else:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and nprobe:
            ivf.nprobe = min(nprobe, ivf.nlist)
        quantizer = faiss.downcast_index(ivf.quantizer) if ivf is not None else None
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(HNSW_MIN_EF_SEARCH, 2 * ivf.nprobe)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def topk_order(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """(b, min(k, width)) column positions of the top-k of each row of (b, width) `scores` / `ids`:
    by score descending, ties by id ascending, id -1 (no result) last."""
    ranked = np.where(ids < 0, -np.inf, scores)
    tie_key = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    return np.lexsort((tie_key, -ranked), axis=1)[:, :k]


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the union of per-shard results (`topk_order`).

    scores[i], ids[i]: (b, k_i) from shard i; missing results have id -1.
    Returns (b, k) scores and ids, padded with (-inf, -1) where fewer than k exist.
    """
    all_scores = np.concatenate(scores, axis=1).astype(np.float32)
    all_ids = np.concatenate(ids, axis=1).astype(np.int64)
    order = topk_order(all_scores, all_ids, k)
    top_scores = np.where(
        np.take_along_axis(all_ids, order, axis=1) < 0, -np.inf, np.take_along_axis(all_scores, order, axis=1)
    )
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    if top_ids.shape[1] < k:
        pad = k - top_ids.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores.astype(np.float32), top_ids
