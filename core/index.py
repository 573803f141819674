"""Sharded FAISS index: contiguous id ranges per shard, a JSON manifest, exact fan-out search.

Vectors are L2-normalised float32 and the metric is inner product, so a search score is a cosine.
Each shard is a standalone faiss file plus a Parquet payload of the rows it holds (sorted by id).
All shards of one index share one trained (empty) template, so an IVF list means the same
region of space in every shard and per-shard top-k results merge exactly.

The index type is a faiss `index_factory` string, given or picked by `pick_factory` from the row
count and a memory budget (autofaiss-style: exact `Flat` for small sets, `IVF{nlist},Flat` while
the raw vectors fit, product quantization when they don't).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import warnings
from dataclasses import asdict, dataclass, field

import faiss
import numpy as np

MANIFEST = "manifest.json"
METRIC = "inner_product"
SEED = 0  # training-sample draw; faiss k-means has its own fixed seed (ClusteringParameters.seed)

# Picker constants.
FLAT_MAX_ROWS = 30_000  # below this exact search costs < 1 s per 1,000 queries at dim 768 on 2 cores
MIN_POINTS_PER_LIST = 39  # faiss k-means warns below 39 training points per centroid
PQ_CODE_BYTES = (96, 64, 48, 32, 24, 16, 8)  # code sizes faiss GPU IVFPQ supports, largest first
PQ_MAX_SUBDIM_WITHOUT_OPQ = 8  # coarser sub-vectors get an OPQ rotation first
PQ_NBITS = 8
ID_BYTES = 8  # int64 id stored next to each code

# faiss GPU limits (GPU_MAX_SELECTION_K): k and nprobe above these fail inside faiss.
GPU_MAX_K = 2048
GPU_MAX_NPROBE = 2048
# GpuIndexIVFPQConfig: float16 lookup tables are required when m * 2**nbits exceeds this.
GPU_FLOAT32_LUT_MAX = 16384


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
    """What a search needs to load an index: its type and the shards, written after every shard.

    `nprobe` is the number of IVF lists a search visits by default (also stored in each shard
    file); `rows` the total row count, ids 0..rows-1; `train_rows` the size of the sample the
    template was trained on (0 for types that need no training); `params` how the type was
    chosen (`picked_by`, `nlist`, `pq_m`, `memory_budget_bytes`, `estimated_bytes`, `faiss`);
    `source` the fingerprint of the crop files and settings it was built from
    (`pipeline.index_build.source_fingerprint`; "" when unknown).
    """

    index_type: str
    dim: int
    metric: str
    nprobe: int
    shards: list[ShardEntry]
    rows: int = 0
    train_rows: int = 0
    params: dict = field(default_factory=dict)
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> IndexManifest:
        """The manifest in `text`; raises ValueError when its shards are not one contiguous id range."""
        data = json.loads(text)
        shards = [ShardEntry(**s) for s in data.pop("shards")]
        data.setdefault("rows", sum(s.rows for s in shards))
        manifest = cls(**data, shards=shards)
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise ValueError unless the shards cover ids 0..rows-1 once, in order."""
        if self.metric != METRIC:
            raise ValueError(f"index manifest metric {self.metric!r} is not {METRIC!r}")
        expected = 0
        for s in self.shards:
            if s.id_start != expected or s.id_end - s.id_start != s.rows or s.rows <= 0:
                raise ValueError(
                    f"index manifest shard {s.index_file} holds ids [{s.id_start}, {s.id_end}) with {s.rows} rows;"
                    f" expected a non-empty range starting at {expected}"
                )
            expected = s.id_end
        if expected != self.rows:
            raise ValueError(f"index manifest says {self.rows} rows but its shards hold {expected}")


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
# Index type: the picker and what a factory string implies


@dataclass(frozen=True)
class IndexSpec:
    """What a factory string means for memory and search: `nlist` IVF lists (0: not IVF),
    `code_bytes` stored per vector besides its id, `fixed_bytes` for quantizers and rotations."""

    factory: str
    dim: int
    nlist: int
    pq_m: int
    code_bytes: int
    fixed_bytes: int

    def bytes_for(self, n_rows: int) -> int:
        """Resident size of an index of `n_rows` vectors (all shards together), in bytes."""
        return n_rows * (self.code_bytes + ID_BYTES) + self.fixed_bytes


def index_spec(factory: str, dim: int) -> IndexSpec:
    """Inspect an empty index of type `factory` (no training, no vectors)."""
    index = new_index(factory, dim)
    ivf = faiss.try_extract_index_ivf(index)
    fixed = 0
    layer = faiss.downcast_index(index)
    if isinstance(layer, faiss.IndexIDMap):
        layer = faiss.downcast_index(layer.index)
    if isinstance(layer, faiss.IndexPreTransform):
        for i in range(layer.chain.size()):
            fixed += layer.chain.at(i).d_in * layer.chain.at(i).d_out * 4
        layer = faiss.downcast_index(layer.index)
    pq_m = _pq_m(factory)
    if ivf is None:
        return IndexSpec(factory, dim, 0, pq_m, layer.sa_code_size(), fixed)
    fixed += ivf.nlist * ivf.d * 4  # flat coarse quantizer
    if pq_m:
        fixed += (1 << PQ_NBITS) * ivf.d * 4  # PQ codebooks
    return IndexSpec(factory, dim, ivf.nlist, pq_m, ivf.code_size, fixed)


def _pq_m(factory: str) -> int:
    match = re.search(r"(?:^|,)PQ(\d+)", factory)
    return int(match.group(1)) if match else 0


def ivf_lists(n_rows: int) -> int:
    """IVF list count for `n_rows`: 4·sqrt(n) rounded to a power of two (the autofaiss and faiss
    wiki rule), halved until every list gets >= MIN_POINTS_PER_LIST rows to train on."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n_rows, 1))))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > n_rows:
        nlist //= 2
    return nlist


def default_nprobe(nlist: int) -> int:
    """Lists a search visits: nlist/256, at least 16 (and at most nlist and the GPU limit).

    Measured with `python -m bench.index` on clustered unit vectors of dim 768 (bench/README.md):
    recall@10 against exact search 0.998 at 1e5 rows (IVF1024) and 0.968 at 1e6 rows (IVF4096),
    both at nprobe 16; doubling nprobe roughly halves queries/s (0.995 at 1e6 with nprobe 32).
    """
    return max(1, min(nlist, GPU_MAX_NPROBE, max(16, nlist // 256)))


def pq_factory(nlist: int, m: int, dim: int) -> str:
    """`IVF{nlist},PQ{m}` when sub-vectors are at most PQ_MAX_SUBDIM_WITHOUT_OPQ wide, else with an
    OPQ rotation in front (reducing the dimension so a sub-vector stays <= 32 wide, the GPU limit)."""
    if dim % m == 0 and dim // m <= PQ_MAX_SUBDIM_WITHOUT_OPQ:
        return f"IVF{nlist},PQ{m}"
    d_out = m * min(max(dim // m, 1), 32)
    return f"OPQ{m},IVF{nlist},PQ{m}" if d_out == dim else f"OPQ{m}_{d_out},IVF{nlist},PQ{m}"


def pick_factory(n_rows: int, dim: int, memory_budget_bytes: int) -> str:
    """The faiss factory string for `n_rows` vectors of `dim` whose index must fit in
    `memory_budget_bytes` (all shards together, as one searcher loads them):

    - `Flat` (exact) below FLAT_MAX_ROWS rows;
    - `IVF{nlist},Flat` with nlist = `ivf_lists(n_rows)` while the raw vectors fit;
    - else product quantization with the largest code (PQ_CODE_BYTES) that fits, see `pq_factory`.

    Raises ValueError when nothing fits.
    """
    if n_rows < FLAT_MAX_ROWS and index_spec("Flat", dim).bytes_for(n_rows) <= memory_budget_bytes:
        return "Flat"
    nlist = ivf_lists(n_rows)
    candidates = [f"IVF{nlist},Flat"]
    if n_rows >= (1 << PQ_NBITS) * MIN_POINTS_PER_LIST:  # enough rows to train the PQ codebooks
        candidates += [pq_factory(nlist, m, dim) for m in PQ_CODE_BYTES if m <= dim]
    for factory in candidates:
        if index_spec(factory, dim).bytes_for(n_rows) <= memory_budget_bytes:
            return factory
    raise ValueError(
        f"no index type holds {n_rows} vectors of dim {dim} in {memory_budget_bytes / 2**30:.2f} GiB;"
        f" the smallest, {candidates[-1]}, needs {index_spec(candidates[-1], dim).bytes_for(n_rows) / 2**30:.2f} GiB"
    )


def resolve(factory: str, n_rows: int, dim: int, memory_budget_bytes: int, nprobe: int | None) -> tuple[str, dict]:
    """(factory string, manifest params) for a configured `factory`, "auto" meaning `pick_factory`;
    `nprobe` None means `default_nprobe` of the type's list count."""
    picked = factory == "auto"
    if picked:
        factory = pick_factory(n_rows, dim, memory_budget_bytes)
    spec = index_spec(factory, dim)
    return factory, {
        "picked_by": "auto" if picked else "config",
        "nlist": spec.nlist,
        "pq_m": spec.pq_m,
        "nprobe": (nprobe or default_nprobe(spec.nlist)) if spec.nlist else 0,
        "memory_budget_bytes": int(memory_budget_bytes),
        "estimated_bytes": spec.bytes_for(n_rows),
        "faiss": faiss.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Building and (de)serializing shards


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty index of `factory` type with inner-product metric that accepts `add_with_ids`.

    PQ types skip the polysemous training index_factory turns on: it only serves Hamming-filtered
    search, which is never used here, and costs minutes of training.
    """
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    coded = faiss.downcast_index(ivf) if ivf is not None else _innermost(index)
    if hasattr(coded, "do_polysemous_training"):
        coded.do_polysemous_training = False
    needs_id_map = ivf is None and "IDMap" not in factory
    return faiss.IndexIDMap(index) if needs_id_map else index


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


def train_template(sample: np.ndarray, factory: str, use_gpu: str, nprobe: int | None = None) -> bytes | None:
    """Serialized trained, empty index for `factory` with `nprobe` set, or None when the type
    needs no training. On a GPU (see `gpu_choice`) the k-means assignment runs there."""
    index = new_index(factory, sample.shape[1])
    if index.is_trained:
        return None
    ivf = faiss.try_extract_index_ivf(index)
    clustering = None
    if ivf is not None:
        if nprobe:
            ivf.nprobe = min(nprobe, ivf.nlist)
        if gpu_choice(use_gpu, _gpus_visible())[0]:
            clustering = faiss.index_cpu_to_gpu(_gpu_resources(), 0, faiss.IndexFlatL2(ivf.d))
            ivf.clustering_index = clustering
    index.train(np.ascontiguousarray(sample, np.float32))
    if clustering is not None:
        ivf.clustering_index = None
    return serialize(index)


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
    exceed the faiss GPU limits."""
    place, reason = gpu_choice(use_gpu, _gpus_visible(), k, nprobe)
    if reason.startswith("over_gpu_limit"):
        warnings.warn(f"faiss index stays on CPU: {reason.split(': ', 1)[1]}", stacklevel=2)
    if not place:
        return index
    return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, gpu_cloner_options(index))


def _gpus_visible() -> int:
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
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of the union of per-shard results, by score descending, ties by id ascending.

    scores[i], ids[i]: (b, k_i) from shard i; missing results have id -1 and are ranked last.
    Returns (b, k) scores and ids, padded with (-inf, -1) where fewer than k exist.
    """
    all_scores = np.concatenate(scores, axis=1).astype(np.float32)
    all_ids = np.concatenate(ids, axis=1).astype(np.int64)
    all_scores = np.where(all_ids < 0, -np.inf, all_scores)
    tie_key = np.where(all_ids < 0, np.iinfo(np.int64).max, all_ids)
    order = np.lexsort((tie_key, -all_scores), axis=1)[:, :k]
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    if top_ids.shape[1] < k:
        pad = k - top_ids.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores, top_ids


def search_shards(
    indexes: list[faiss.Index], queries: np.ndarray, k: int, nprobe: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over all shards: each shard's top-k (`search`) merged by score, ties by lower id.

    (Assigning the queries to lists once and calling `search_preassigned` per shard was measured
    1.8x slower with faiss-cpu 1.15 on 2 cores: the coarse step is < 5 % of an IVF search.)
    """
    if not indexes:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    results = [search(index, queries, k, nprobe) for index in indexes]
    return merge_topk([s for s, _ in results], [i for _, i in results], k)
