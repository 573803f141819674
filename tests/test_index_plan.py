"""Tests for core/index_plan.py: the type picker, shards sized to the per-actor budget, recall
measured per shard and the nprobe chosen from it."""

import faiss
import numpy as np
import pytest

from core import index as shard_index
from core.index import add, from_template, index_ids, train_template
from core.index_plan import (
    ACTOR_BASE_BYTES,
    FLAT_MAX_ROWS,
    HNSW_MIN_NLIST,
    MIN_POINTS_PER_LIST,
    RECALL_CEILING,
    choose_nprobe,
    choose_type,
    exact_neighbours,
    factory_candidates,
    index_spec,
    ivf_lists,
    measure_type,
    payload_bytes_per_row,
    plan,
    probes,
    shard_recall,
    train_rows,
)
from core.shard_search import ShardSearch

GIB = 2**30


@pytest.mark.parametrize(
    ("n_rows", "nlist"), [(1, 1), (100, 2), (10_000, 256), (30_000, 512), (100_000, 1024), (1_000_000, 4096)]
)
def test_ivf_lists(n_rows: int, nlist: int) -> None:
    assert ivf_lists(n_rows) == nlist
    assert nlist == 1 or n_rows >= nlist * MIN_POINTS_PER_LIST


def test_training_rows_follow_the_list_count() -> None:
    assert train_rows(1024, 1_000_000, 100_000) == 100_000
    assert train_rows(16384, 10_000_000, 100_000) == MIN_POINTS_PER_LIST * 16384  # faiss's 39 per list
    assert train_rows(16384, 300_000, 100_000) == 300_000  # never more than all rows


@pytest.mark.parametrize(
    ("n_rows", "dtype", "exact"),
    [
        (0, "float16", "Flat"),
        (FLAT_MAX_ROWS - 1, "float16", "Flat"),
        (FLAT_MAX_ROWS, "float16", "IVF512,SQfp16"),
        (1_000_000, "float16", "IVF4096,SQfp16"),
        (1_000_000, "float32", "IVF4096,Flat"),  # codes keep the stored precision
        (10_000_000, "float16", "IVF16384_HNSW32,SQfp16"),  # HNSW coarse quantizer from 8192 lists
        (100_000_000, "float16", "IVF32768_HNSW32,SQfp16"),
    ],
)
def test_factory_candidates(n_rows: int, dtype: str, exact: str) -> None:
    candidates = factory_candidates(n_rows, 768, dtype)
    if exact == "Flat":
        assert candidates == ["Flat"]
    else:  # the same lists with exact codes, or with 4-bit fast-scan codes (one per 4 dimensions)
        assert candidates == [exact, exact.split(",")[0] + ",PQ192x4fs"]
    assert ("HNSW" in exact) == (ivf_lists(n_rows) >= HNSW_MIN_NLIST and n_rows >= FLAT_MAX_ROWS)
    assert factory_candidates(10**6, 100, dtype)[1] == "IVF4096,PQ25x4fs"  # 4 does not divide 100


def test_index_spec_memory() -> None:
    flat = index_spec("Flat", 768)
    assert (flat.nlist, flat.code_bytes, flat.fixed_bytes) == (0, 768 * 4, 0)
    assert flat.bytes_for(1_000_000) == 1_000_000 * (768 * 4 + 8)
    sq = index_spec("IVF4096,SQfp16", 768)
    assert (sq.nlist, sq.code_bytes, sq.fixed_bytes) == (4096, 768 * 2, 4096 * 768 * 4)
    hnsw = index_spec("IVF16384_HNSW32,SQfp16", 768)
    assert hnsw.fixed_bytes == 16384 * 768 * 4 + 16384 * 32 * 2 * 4
    fast = index_spec("IVF4096,PQ192x4fs", 768)
    assert (fast.code_bytes, fast.fixed_bytes) == (96, 4096 * 768 * 4 + 16 * 768 * 4)
    pq = index_spec("OPQ16_512,IVF1024,PQ16", 768)  # an explicit factory string is still understood
    assert (pq.nlist, pq.code_bytes) == (1024, 16)
    assert pq.fixed_bytes == 768 * 512 * 4 + 1024 * 512 * 4 + 256 * 512 * 4


def test_plan_sizes_shards_to_the_budget_per_actor() -> None:
    rows = [156_250] * 64  # 1e7 crops in 64 equal work shards
    p = plan(rows, 768, "float16", 8 * GIB, 4)
    # "auto" plans for the candidate that needs more: compressed codes keep the embedding in the payload
    assert p.factory == "IVF16384_HNSW32,PQ192x4fs"
    per_row = 96 + 8 + payload_bytes_per_row(768, "float16", rerank=True)
    assert p.bytes_per_row == per_row > 768 * 2 + 8 + payload_bytes_per_row(768, "float16")
    fixed = ACTOR_BASE_BYTES + index_spec(p.factory, 768).fixed_bytes
    assert fixed + 16 * 156_250 * per_row > 8 * GIB  # 4 shards of 16 work shards do not fit
    assert p.shards == 5 and p.largest_shard_rows == 13 * 156_250  # 5 do: 13, 13, 13, 13 and 12
    assert p.actor_bytes == fixed + p.largest_shard_rows * per_row <= 8 * GIB
    small = plan(rows[:2], 768, "float16", 8 * GIB, 4)  # never more index shards than work shards
    assert small.shards == 2


def test_plan_uses_the_largest_index_shard_of_uneven_work_shards() -> None:
    p = plan([10, 1000, 10, 10], 16, "float16", 10**12, 2, "Flat")
    assert p.shards == 2 and p.largest_shard_rows == 1010


def test_plan_refuses_what_no_shard_count_fits() -> None:
    with pytest.raises(ValueError, match="needs .* GiB per scorer actor .* raise index.memory_budget_gb"):
        plan([5_000_000] * 2, 768, "float16", 4 * GIB, 1)
    assert plan([], 768, "float16", GIB, 4).shards == 1  # no crops: one empty shard


def test_probes_are_powers_of_two_within_the_gpu_limit() -> None:
    assert probes(1) == [1] and probes(12) == [1, 2, 4, 8]
    assert probes(16384)[-1] == shard_index.GPU_MAX_NPROBE


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int) -> np.ndarray:
    c = rng.normal(size=(centres, d)).astype(np.float32)
    v = c[rng.integers(centres, size=n)] / np.sqrt(d) * 4 + rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def test_shard_recall_is_leave_one_out_and_rises_with_nprobe() -> None:
    rng = np.random.default_rng(0)
    vectors = _clustered(rng, 20_000, 32, 64)
    ids = index_ids(5, len(vectors))
    shard = ShardSearch(add(from_template(train_template(vectors, "IVF128,SQfp16", "off"), "off"), vectors, ids))
    picks = rng.choice(len(vectors), 256, replace=False)
    truth = exact_neighbours(shard, vectors[picks])
    recalls = shard_recall(shard, vectors[picks], ids[picks], truth)
    measured = [recalls[str(p)] for p in probes(128) if str(p) in recalls]
    assert measured == sorted(measured) and measured[0] < 0.9  # one list misses neighbours
    assert measured[-1] >= RECALL_CEILING or len(measured) == len(probes(128))
    # the truth is exact search, the query itself first: check one query by brute force
    exact = np.argsort(-(vectors @ vectors[picks[0]]))[:11]
    assert truth[0].tolist() == ids[exact].tolist()
    flat = ShardSearch(add(from_template(train_template(vectors, "Flat", "off"), "off"), vectors, ids))
    assert shard_recall(flat, vectors[:5], ids[:5], exact_neighbours(flat, vectors[:5])) == {"0": 1.0}


def _low_rank(rng: np.random.Generator, n: int, d: int, rank: int) -> np.ndarray:
    """Clusters varying along `rank` directions each, as learned embeddings do."""
    centres = rng.normal(size=(32, d)).astype(np.float32)
    bases = rng.normal(size=(32, d, rank)).astype(np.float32) / np.sqrt(rank)
    label = rng.integers(32, size=n)
    v = centres[label] / np.sqrt(d) * 3 + np.einsum("ndr,nr->nd", bases[label], rng.normal(size=(n, rank)))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def _type_recalls(sample: np.ndarray, depth: int) -> dict[str, dict[str, float]]:
    exact, compressed = "IVF64,SQfp16", "IVF64,PQ16x4fs"
    template = train_template(sample, exact, "off")
    trained = from_template(template, "off")
    quantizer = faiss.extract_index_ivf(trained).quantizer  # both types share the coarse quantizer
    return {
        exact: measure_type(exact, template, sample, depth),
        compressed: measure_type(
            compressed, train_template(sample, compressed, "off", quantizer=quantizer), sample, depth
        ),
    }


def test_compressed_codes_are_kept_where_reranking_recovers_the_exact_neighbours() -> None:
    recalls = _type_recalls(_low_rank(np.random.default_rng(1), 12_000, 64, 4), 64)
    assert max(recalls["IVF64,PQ16x4fs"].values()) >= 0.95
    assert choose_type(recalls, on_gpu=False) == "IVF64,PQ16x4fs"
    assert choose_type(recalls, on_gpu=True) == "IVF64,SQfp16"  # a GPU scans exact codes


def test_exact_codes_are_kept_where_neighbours_lie_inside_the_codes_error() -> None:
    """Isotropic noise in 64 dimensions: the top-10 scores are closer than 4-bit codes can tell apart."""
    recalls = _type_recalls(_clustered(np.random.default_rng(2), 12_000, 64, 16), 16)
    assert max(recalls["IVF64,PQ16x4fs"].values()) < 0.95 <= max(recalls["IVF64,SQfp16"].values())
    assert choose_type(recalls, on_gpu=False) == "IVF64,SQfp16"


def test_choose_type_rule() -> None:
    exact, compressed = "IVF64,SQfp16", "IVF64,PQ16x4fs"
    same = {"1": 0.5, "2": 0.9, "4": 0.97}
    assert choose_type({exact: same, compressed: same}, on_gpu=False) == compressed
    assert choose_type({exact: same, compressed: same}, on_gpu=True) == exact
    lossy = {"1": 0.5, "2": 0.89, "4": 0.95}  # 0.02 below at nprobe 4
    assert choose_type({exact: same, compressed: lossy}, on_gpu=False) == exact
    # exact codes stopped probing at the ceiling (nprobe 2); the compressed ones compare with it
    stopped, behind = {"1": 0.9, "2": 0.9995}, {"1": 0.9, "2": 0.99, "4": 0.985}
    assert choose_type({exact: stopped, compressed: behind}, on_gpu=False) == exact
    assert choose_type({compressed: {"1": 0.9, "2": 0.995}, exact: stopped}, on_gpu=False) == compressed


def test_choose_nprobe_is_the_smallest_where_the_rows_weighted_recall_reaches_the_target() -> None:
    tables = [{"1": 0.5, "2": 0.9, "4": 0.97, "8": 1.0}, {"1": 0.6, "2": 0.96, "4": 0.999}]
    assert choose_nprobe(tables, [100, 100], 0.95) == (4, pytest.approx(0.9845))
    assert choose_nprobe(tables, [100, 300], 0.9) == (2, pytest.approx(0.945))  # the larger shard weighs more
    assert choose_nprobe(tables, [100, 100], 0.5) == (1, pytest.approx(0.55))
    # the second shard stopped at 4 (it reached the ceiling): at 8 it counts with 0.999
    assert choose_nprobe(tables, [100, 100], 0.9999) == (8, pytest.approx(0.9995))
    assert choose_nprobe([{"0": 1.0}, {}], [5, 0], 0.95) == (0, 1.0)  # exact types; an empty shard
    assert choose_nprobe([{"1": 0.5}, {}], [100, 100], 0.7) == (1, 0.75)  # an unmeasured shard counts as found


def test_the_readme_memory_table_is_the_planners() -> None:
    """#14: the README's memory per node type comes from the picker's own code."""
    from pathlib import Path

    from core.index_plan import memory_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert memory_table() in readme
    assert "| 1e7 | `IVF16384_HNSW32,SQfp16` or `IVF16384_HNSW32,PQ192x4fs` | 5 |" in memory_table()
