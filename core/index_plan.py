"""Choosing an index: its type, how many shards, and how many IVF lists a search visits.

- **Type** (`factory_candidates`, `choose_type`): exact `Flat` below FLAT_MAX_ROWS rows; above,
  IVF with nlist = 4·√n lists (`ivf_lists`) and, from HNSW_MIN_NLIST lists on, an HNSW coarse
  quantizer, with one of two kinds of codes, chosen by measurement on the training sample:
  - exact codes: `SQfp16` for float16 embeddings (exact on the stored vectors), `Flat` for float32;
  - compressed codes: 4-bit fast-scan product quantization (`PQ{dim/4}x4fs`, dim/8 bytes a
    vector, scanned several times faster), whose top `index.rerank_depth` candidates are
    re-scored exactly against the stored embedding kept in the payload (`core.shard_search`).
  Both are trained on the same sample with the same coarse quantizer, filled with it, and
  searched with rows of it; compressed codes are kept when they find what exact codes find,
  within RERANK_TOLERANCE at every nprobe (`choose_type`); on a GPU, exact codes. Compressed
  codes win on data with the structure of learned embeddings; where the top-10 scores lie
  inside the codes' error (isotropic noise, bench/README.md), exact codes win.
- **Shards** (`plan`): a scorer actor holds one index shard (its vectors and the payload the
  scoring reads), so the shard count is the smallest (at least `index.shards`) whose largest shard
  fits one actor's `index.memory_budget_gb`. The budget bounds memory per actor at any index size.
- **nprobe** (`shard_recall`, `choose_nprobe`): measured on every shard when it is built, the
  smallest number of lists at which the shards' recall, weighted by their rows, reaches
  `index.target_recall`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

from core import index as shard_index
from core.shard_search import ShardSearch, array_vectors, exact_topk, reranked

FLAT_MAX_ROWS = 30_000  # below this exact search costs < 1 s per 1,000 queries at dim 768 on 2 cores
MIN_POINTS_PER_LIST = 39  # faiss k-means warns below 39 training points per centroid
HNSW_MIN_NLIST = 8192  # from here the coarse quantizer is an HNSW graph, not a flat scan
HNSW_M = 32  # links per node of that graph
ID_BYTES = 8  # int64 id stored next to each code
# Per row of the payload a scorer actor maps besides the caption embedding: index id, box
# (4 float32), two short strings (crop id, image id: 4-byte offsets plus ~36 characters each) and the
# image's uri (an offset plus ~64 characters).
PAYLOAD_FIXED_BYTES = 8 + 16 + 2 * (4 + 36) + (4 + 64)
# A scorer actor's own memory besides its shard: Python, numpy, faiss, pyarrow, the Ray worker and
# a batch in flight (bench/README.md "scoring" measures it).
ACTOR_BASE_BYTES = 768 * 2**20
RECALL_K = 10  # recall@10, as bench/index reports it
RECALL_QUERIES = 256  # rows of a shard used as queries when measuring its recall
RECALL_CEILING = 0.999  # stop probing more lists once a shard's recall reaches this
# Compressed codes are kept when their recall on the training sample is at most this much below
# the exact codes' at every nprobe (a 4-bit fast-scan list scans several times faster).
RERANK_TOLERANCE = 0.01


@dataclass(frozen=True)
class IndexSpec:
    """What a factory string means for memory: `nlist` IVF lists (0: not IVF), `code_bytes` stored
    per vector besides its id, `fixed_bytes` for quantizers and rotations."""

    factory: str
    dim: int
    nlist: int
    code_bytes: int
    fixed_bytes: int

    def bytes_for(self, n_rows: int) -> int:
        """Resident size of an index of `n_rows` vectors, in bytes."""
        return n_rows * (self.code_bytes + ID_BYTES) + self.fixed_bytes


def index_spec(factory: str, dim: int) -> IndexSpec:
    """Inspect an empty index of type `factory` (no training, no vectors)."""
    index = shard_index.new_index(factory, dim)
    ivf = faiss.try_extract_index_ivf(index)
    fixed = 0
    layer = faiss.downcast_index(index)
    if isinstance(layer, faiss.IndexIDMap):
        layer = faiss.downcast_index(layer.index)
    if isinstance(layer, faiss.IndexPreTransform):
        for i in range(layer.chain.size()):
            fixed += layer.chain.at(i).d_in * layer.chain.at(i).d_out * 4
        layer = faiss.downcast_index(layer.index)
    if ivf is None:
        return IndexSpec(factory, dim, 0, layer.sa_code_size(), fixed)
    fixed += ivf.nlist * ivf.d * 4  # coarse centroids
    if isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
        fixed += ivf.nlist * HNSW_M * 2 * 4  # level-0 links; upper levels add ~1/M of that
    if reranked(factory):
        fixed += (16 if "x4fs" in factory else 256) * ivf.d * 4  # PQ codebooks (4- or 8-bit codes)
    return IndexSpec(factory, dim, ivf.nlist, ivf.code_size, fixed)


def ivf_lists(n_rows: int) -> int:
    """IVF list count for `n_rows`: 4·sqrt(n) rounded to a power of two (the autofaiss and faiss
    wiki rule), halved until every list gets >= MIN_POINTS_PER_LIST rows to train on."""
    nlist = 2 ** round(math.log2(4 * math.sqrt(max(n_rows, 1))))
    while nlist > 1 and nlist * MIN_POINTS_PER_LIST > n_rows:
        nlist //= 2
    return nlist


def train_rows(nlist: int, n_rows: int, train_sample: int) -> int:
    """Rows to train `nlist` lists on: `index.train_sample`, raised to what faiss asks for
    (MIN_POINTS_PER_LIST per list), at most all rows."""
    return min(n_rows, max(train_sample, MIN_POINTS_PER_LIST * nlist))


def factory_candidates(n_rows: int, dim: int, store_dtype: str) -> list[str]:
    """The faiss factory strings `choose_type` measures for `n_rows` crops of `dim` stored as
    `store_dtype` (module docstring): ["Flat"], or IVF with exact codes and with compressed codes."""
    if n_rows < FLAT_MAX_ROWS:
        return ["Flat"]
    nlist = ivf_lists(n_rows)
    quantizer = f"IVF{nlist}_HNSW{HNSW_M}" if nlist >= HNSW_MIN_NLIST else f"IVF{nlist}"
    exact = "SQfp16" if store_dtype == "float16" else "Flat"
    return [f"{quantizer},{exact}", f"{quantizer},PQ{pq_subquantizers(dim)}x4fs"]


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of the compressed codes: one per 4 dimensions (per 2 or 1 when 4 does not divide dim)."""
    return next(dim // step for step in (4, 2, 1) if dim % step == 0)


def payload_bytes_per_row(dim: int, store_dtype: str, rerank: bool = False) -> int:
    """Bytes a scorer actor maps per crop besides its index code: caption embedding and ids, and
    the image embedding when the codes are re-ranked."""
    return (2 if rerank else 1) * dim * np.dtype(store_dtype).itemsize + PAYLOAD_FIXED_BYTES


@dataclass(frozen=True)
class IndexPlan:
    """The index for a crops table: `factory`, `shards` index shards, and the bytes one scorer
    actor holds for the largest of them (`actor_bytes`: its rows × `bytes_per_row`, plus the
    quantizer and ACTOR_BASE_BYTES); `total_bytes`: index and payload of every shard."""

    factory: str
    nlist: int
    shards: int
    bytes_per_row: int
    largest_shard_rows: int
    actor_bytes: int
    total_bytes: int

    def params(self, budget_bytes: int, picked_by: str) -> dict:
        """What the manifest records of how the index was chosen."""
        return {
            "picked_by": picked_by,
            "nlist": self.nlist,
            "memory_budget_bytes": budget_bytes,
            "estimated_actor_bytes": self.actor_bytes,
            "estimated_total_bytes": self.total_bytes,
            "faiss": faiss.__version__,
        }


def plan(
    rows_per_work_shard: list[int],
    dim: int,
    store_dtype: str,
    budget_bytes: int,
    min_shards: int,
    factory: str = "auto",
) -> IndexPlan:
    """The index for crops whose work shards hold `rows_per_work_shard` rows: `factory` ("auto":
    whichever of `factory_candidates` needs more memory, so that the shard count fits either) in
    the fewest shards (>= min_shards, <= the work shards) whose largest fits `budget_bytes` per
    scorer actor. Raises ValueError when even one work shard per index shard does not fit."""
    n_rows, work_shards = sum(rows_per_work_shard), len(rows_per_work_shard)
    min_shards = min_shards if n_rows else 1  # no crops: one empty shard
    if factory == "auto":
        candidates = factory_candidates(n_rows, dim, store_dtype)
        factory = max(candidates, key=lambda f: bytes_per_row(f, dim, store_dtype))
    spec = index_spec(factory, dim)
    per_row = bytes_per_row(factory, dim, store_dtype)
    fixed = spec.fixed_bytes + ACTOR_BASE_BYTES
    for shards in range(max(1, min(min_shards, work_shards)), max(work_shards, 1) + 1):
        largest = max((sum(rows_per_work_shard[s::shards]) for s in range(shards)), default=0)
        if fixed + largest * per_row <= budget_bytes or not n_rows:
            total = n_rows * per_row + shards * spec.fixed_bytes
            return IndexPlan(factory, spec.nlist, shards, per_row, largest, fixed + largest * per_row, total)
    need = fixed + max(rows_per_work_shard) * per_row
    raise ValueError(
        f"a {factory} index of {n_rows} crops needs {need / 2**30:.2f} GiB per scorer actor even with one work"
        f" shard per index shard ({work_shards}); raise index.memory_budget_gb"
        f" ({budget_bytes / 2**30:.2f}) or work.shards"
    )


def bytes_per_row(factory: str, dim: int, store_dtype: str) -> int:
    """What one crop costs a scorer actor: its code, id and payload."""
    return index_spec(factory, dim).code_bytes + ID_BYTES + payload_bytes_per_row(dim, store_dtype, reranked(factory))


def probes(nlist: int) -> list[int]:
    """The nprobe values measured: powers of two up to nlist (and the faiss GPU limit)."""
    top = min(nlist, shard_index.GPU_MAX_NPROBE)
    return [2**i for i in range(top.bit_length()) if 2**i <= top]


def shard_recall(shard: ShardSearch, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """nprobe -> recall@RECALL_K of a CPU shard at that nprobe ({"0": 1.0} for exact types, {}
    for an IVF shard of at most RECALL_K rows).

    Leave-one-out: `queries` are vectors stored in the shard under `query_ids`; `truth` (q, >=
    RECALL_K + 1) their exact nearest ids, self included (`exact_neighbours`); each query's own
    id is dropped from both lists. Probing stops once recall reaches RECALL_CEILING.
    """
    ivf = faiss.try_extract_index_ivf(shard.index)
    if ivf is None:
        return {"0": 1.0}
    if shard.index.ntotal <= RECALL_K or not len(queries):
        return {}  # too few rows to measure
    expected = _without_self(truth, query_ids)
    recalls = {}
    for nprobe in probes(ivf.nlist):
        found = _without_self(shard.search(queries, RECALL_K + 1, nprobe)[1], query_ids)
        recalls[str(nprobe)] = float(np.mean([len(set(a) & set(b)) for a, b in zip(found, expected)]) / RECALL_K)
        if recalls[str(nprobe)] >= RECALL_CEILING:
            break
    return recalls


def _without_self(ids: np.ndarray, own: np.ndarray) -> list[list[int]]:
    return [[i for i in row if i != me and i >= 0][:RECALL_K] for row, me in zip(ids.tolist(), own.tolist())]


def exact_neighbours(shard: ShardSearch, queries: np.ndarray, blocks=None) -> np.ndarray:
    """(q, RECALL_K + 1) exact nearest ids of `queries` in the shard: by exhaustive search when its
    codes are exact, else from the stored vectors' `blocks` ((vectors, ids) pairs)."""
    ivf = faiss.try_extract_index_ivf(shard.index)
    if shard.vectors is None:
        return shard.search(queries, RECALL_K + 1, ivf.nlist if ivf is not None else None)[1]
    return exact_topk(queries, blocks, RECALL_K + 1)[1]


def measure_type(factory: str, template: bytes, sample: np.ndarray, depth: int) -> dict[str, float]:
    """`shard_recall` of the trained empty `template` of `factory` filled with `sample` (ids = row
    numbers), RECALL_QUERIES of its rows as queries, compressed codes re-ranked at `depth`."""
    index = shard_index.add(shard_index.from_template(template, "off"), sample, np.arange(len(sample)))
    shard = ShardSearch(index, array_vectors(sample) if reranked(factory) else None, depth)
    picks = np.random.default_rng(shard_index.SEED).choice(len(sample), min(RECALL_QUERIES, len(sample)), replace=False)
    truth = exact_topk(sample[picks], [(sample, np.arange(len(sample)))], RECALL_K + 1)[1]
    return shard_recall(shard, sample[picks], picks, truth)


def recall_at(table: dict[str, float], nprobe: int) -> float:
    """A shard's measured recall at `nprobe`: that of the largest measured nprobe not above it (a
    table that stopped at RECALL_CEILING keeps its last), the smallest measured when all are above."""
    measured = sorted(map(int, table))
    return table[str(max((p for p in measured if p <= nprobe), default=measured[0]))]


def choose_type(recalls: dict[str, dict[str, float]], on_gpu: bool) -> str:
    """Of an exact-codes and a compressed-codes factory with their `measure_type` recalls, the
    compressed one when its recall is within RERANK_TOLERANCE of the exact one's at every nprobe
    measured, else the exact one; on a GPU (exact codes, no fast-scan kernels) the exact one.

    The training sample is sparser than the shards it stands for, and the denser the vectors the
    closer the scores that re-ranking must recover from the codes' shortlist: compressed codes
    that lose recall on the sample lose more on the shards (bench/README.md, isotropic noise).
    """
    exact, compressed = sorted(recalls, key=reranked)
    if on_gpu:
        return exact
    close = all(r >= recall_at(recalls[exact], int(p)) - RERANK_TOLERANCE for p, r in recalls[compressed].items())
    return compressed if recalls[compressed] and close else exact


def choose_nprobe(recalls: list[dict[str, float]], rows: list[int], target: float) -> tuple[int, float]:
    """(smallest nprobe at which the shards' recall, weighted by their `rows`, reaches `target`,
    that recall); the largest measured nprobe when none does; (0, 1.0) for exact types.

    The weighted mean is the recall of a search over every shard: a query's true neighbours lie
    in each shard in proportion to its rows, and each shard finds its share at its own recall.
    A shard that stopped probing below some nprobe (it had reached RECALL_CEILING) counts with
    its last measured recall; an exact shard ({"0": 1.0}) or an unmeasured one ({}) as 1.0.
    """
    tables = [table if table and "0" not in table else {} for table in recalls]
    candidates = sorted({int(p) for table in tables for p in table})
    if not candidates:
        return 0, 1.0
    weights = np.asarray(rows, np.float64) if sum(rows) else np.ones(len(rows))

    def overall(nprobe: int) -> float:
        return float(np.average([recall_at(t, nprobe) if t else 1.0 for t in tables], weights=weights))

    return next(
        ((p, overall(p)) for p in candidates if overall(p) >= target), (candidates[-1], overall(candidates[-1]))
    )


# ---------------------------------------------------------------------------------------------
# Memory per node type (README "The index")

# cluster.yaml's worker types: (GiB of RAM, GiB of GPU memory). Each starts Ray with a 16 GB object
# store (worker_start_ray_commands), and the OS and raylet take about 2 GiB more.
NODE_TYPES = {"g5.2xlarge / g6.2xlarge": (32, 24), "c6i.8xlarge": (64, 0)}
NODE_RESERVED_GIB = 16e9 / 2**30 + 2


def memory_table(
    sizes: tuple[int, ...] = (10**6, 10**7, 10**8),
    dim: int = 768,
    dtype: str = "float16",
    budget_gib: float = 8.0,
    work_shards: int = 512,
) -> str:
    """The Markdown table of `plan` for each crop count (equal work shards, at least one index
    shard): the candidate types, the shards that fit either, memory per scorer actor and in all,
    and per node type of `NODE_TYPES` how many scorer actors fit one node and how many nodes
    hold one actor of every shard."""
    header = ["crops", "index type", "shards", "GiB per scorer actor", "GiB all shards", "GPU GiB per actor"]
    header += [f"{name}: actors per node, nodes" for name in NODE_TYPES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in sizes:
        p = plan([n // work_shards] * work_shards, dim, dtype, int(budget_gib * 2**30), 1)
        candidates = factory_candidates(n, dim, dtype)
        spec = index_spec(candidates[0], dim)  # exact codes: the type a GPU searches
        gpu = (spec.fixed_bytes + p.largest_shard_rows * (spec.code_bytes + ID_BYTES)) / 2**30
        kinds = " or ".join(f"`{f}`" for f in candidates)
        cells = [f"{n:.0e}".replace("+0", ""), kinds, str(p.shards), f"{p.actor_bytes / 2**30:.1f}"]
        cells += [f"{p.total_bytes / 2**30:.0f}", f"{gpu:.1f}"]
        for ram, _ in NODE_TYPES.values():
            per_node = int((ram - NODE_RESERVED_GIB) // (p.actor_bytes / 2**30))
            cells.append(f"{per_node}, {-(-p.shards // per_node)}" if per_node else "0, -")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
