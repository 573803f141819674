"""Tests for core/index.py (faiss-cpu): shard partition, training sample, index-type picker,
exact fan-out search, manifest, checksums, GPU placement logic; and pipeline/index_build.py on Ray."""

import dataclasses
import itertools
import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import index as shard_index
from core.index import (
    FLAT_MAX_ROWS,
    GPU_MAX_K,
    GPU_MAX_NPROBE,
    FileSlice,
    IndexManifest,
    ShardEntry,
    build_shard,
    default_nprobe,
    deserialize,
    gpu_choice,
    gpu_limit_error,
    index_spec,
    ivf_lists,
    merge_topk,
    needs_float16_lut,
    new_index,
    partition,
    pick_factory,
    pq_factory,
    resolve,
    sample_rows,
    search,
    search_shards,
    serialize,
    sha256,
    to_gpu_if_available,
    train_template,
)

GIB = 2**30


def _global_ids(row_counts: list[int], slices: list[FileSlice]) -> list[int]:
    offsets = np.concatenate([[0], np.cumsum(row_counts)]).astype(int).tolist()
    return [offsets[s.position] + r for s in slices for r in range(s.start, s.stop)]


@pytest.mark.parametrize(
    ("row_counts", "shards"),
    [
        ([10], 1),
        ([10], 3),
        ([3, 4, 5], 4),
        ([7, 0, 0, 5, 0], 3),  # empty files
        ([0, 6], 2),
        ([2, 1], 5),  # more shards than rows
        ([1], 8),
        ([100, 1, 37, 0, 12], 7),
    ],
)
def test_partition_contiguous_equal_every_row_once(row_counts: list[int], shards: int) -> None:
    total = sum(row_counts)
    result = partition(row_counts, shards)
    assert len(result) == min(shards, total)
    expected_start = 0
    sizes = []
    for first_id, slices in result:
        ids = _global_ids(row_counts, slices)
        # contiguous, starting where the previous shard stopped, in id order
        assert first_id == expected_start
        assert ids == list(range(first_id, first_id + len(ids)))
        assert len(ids) > 0
        for s in slices:
            assert 0 <= s.start <= s.stop <= row_counts[s.position]
        positions = [s.position for s in slices]
        assert positions == sorted(positions)
        expected_start += len(ids)
        sizes.append(len(ids))
    assert expected_start == total  # every row exactly once
    assert max(sizes) - min(sizes) <= 1


def test_partition_by_hand() -> None:
    # 12 rows over files of 3, 4, 5 rows (ids 0-2, 3-6, 7-11) in 3 shards of 4: ids 0-3, 4-7, 8-11
    assert partition([3, 4, 5], 3) == [
        (0, [FileSlice(0, 0, 3), FileSlice(1, 0, 1)]),
        (4, [FileSlice(1, 1, 4), FileSlice(2, 0, 1)]),
        (8, [FileSlice(2, 1, 5)]),
    ]
    # 5 rows in 2 shards: sizes 2 and 3
    assert partition([5], 2) == [(0, [FileSlice(0, 0, 2)]), (2, [FileSlice(0, 2, 5)])]


def test_partition_no_rows() -> None:
    assert partition([], 3) == []
    assert partition([0, 0], 2) == []


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _exact(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    return flat.search(queries, k)


def _sharded(vectors: np.ndarray, queries: np.ndarray, k: int, shards: int, factory: str, template, nprobe: int):
    first_ids = [first for first, _ in partition([len(vectors)], shards)]
    bounds = first_ids + [len(vectors)]
    results = [
        search(build_shard(vectors[lo:hi], lo, factory, template, "off"), queries, k, nprobe)
        for lo, hi in itertools.pairwise(bounds)
    ]
    return merge_topk([s for s, _ in results], [i for _, i in results], k)


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_sharded_flat_search_equals_exact(shards: int) -> None:
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng, 402, 16), _unit(rng, 25, 16)
    k = 10
    scores, ids = _sharded(vectors, queries, k, shards, "Flat", None, 1)
    want_scores, want_ids = _exact(vectors, queries, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    # and the exact scores are the cosines
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ vectors.T, axis=1), atol=1e-5)


def test_sharded_search_k_larger_than_a_shard() -> None:
    rng = np.random.default_rng(1)
    vectors, queries = _unit(rng, 9, 8), _unit(rng, 4, 8)
    scores, ids = _sharded(vectors, queries, 6, 4, "Flat", None, 1)  # shards of 2-3 vectors, k = 6
    want_scores, want_ids = _exact(vectors, queries, 6)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    # k beyond the whole index: padded with (-inf, -1)
    scores, ids = _sharded(vectors, queries, 12, 4, "Flat", None, 1)
    assert (ids[:, 9:] == -1).all() and np.isneginf(scores[:, 9:]).all()
    assert sorted(ids[0, :9].tolist()) == list(range(9))


def test_ivf_all_lists_probed_equals_exact() -> None:
    rng = np.random.default_rng(2)
    vectors, queries = _unit(rng, 600, 16), _unit(rng, 20, 16)
    template = train_template(vectors, "IVF8,Flat", "off")
    assert isinstance(template, bytes)
    assert train_template(vectors, "Flat", "off") is None  # nothing to train
    k = 8
    scores, ids = _sharded(vectors, queries, k, 3, "IVF8,Flat", template, nprobe=8)
    want_scores, want_ids = _exact(vectors, queries, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_new_index_accepts_ids() -> None:
    index = new_index("Flat", 4)
    index.add_with_ids(np.eye(4, dtype=np.float32), np.array([10, 11, 12, 13], np.int64))
    scores, ids = index.search(np.eye(4, dtype=np.float32)[2:3], 2)
    assert ids[0, 0] == 12 and scores[0, 0] == pytest.approx(1.0)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT


def _manifest(**changes) -> IndexManifest:
    fields = dict(
        index_type="IVF8,Flat",
        dim=16,
        metric="inner_product",
        nprobe=8,
        shards=[
            ShardEntry("shard-00000.faiss", "shard-00000.parquet", 5, 0, 5, "ab" * 32),
            ShardEntry("shard-00001.faiss", "shard-00001.parquet", 4, 5, 9, "cd" * 32),
        ],
        rows=9,
        train_rows=9,
        params={"picked_by": "config", "nlist": 8, "pq_m": 0, "nprobe": 8, "faiss": faiss.__version__},
    )
    return IndexManifest(**{**fields, **changes})


def test_manifest_json_round_trip() -> None:
    manifest = _manifest()
    back = IndexManifest.from_json(manifest.to_json())
    assert back == manifest
    assert all(isinstance(s, ShardEntry) for s in back.shards)
    assert dataclasses.asdict(back) == dataclasses.asdict(manifest)
    data = json.loads(manifest.to_json())
    assert {"index_type", "dim", "metric", "nprobe", "rows", "train_rows", "params", "shards"} <= set(data)
    assert set(data["shards"][0]) == {"index_file", "payload_file", "rows", "id_start", "id_end", "sha256"}


def test_manifest_without_new_fields_still_loads() -> None:
    data = json.loads(_manifest().to_json())
    for name in ("rows", "train_rows", "params"):
        del data[name]
    back = IndexManifest.from_json(json.dumps(data))
    assert (back.rows, back.train_rows, back.params) == (9, 0, {})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": 10}, "says 10 rows but its shards hold 9"),
        ({"metric": "l2"}, "metric"),
        ({"shards": [ShardEntry("a", "a", 5, 0, 5, ""), ShardEntry("b", "b", 4, 6, 10, "")]}, "starting at 5"),
        ({"shards": [ShardEntry("a", "a", 4, 0, 5, "")], "rows": 5}, "holds ids"),
        ({"shards": [ShardEntry("a", "a", 5, 1, 6, "")], "rows": 5}, "starting at 0"),
    ],
)
def test_manifest_with_inconsistent_shards_is_refused(changes: dict, message: str) -> None:
    text = dataclasses.replace(_manifest(), **changes).to_json()
    with pytest.raises(ValueError, match=message):
        IndexManifest.from_json(text)


def test_empty_manifest_is_valid() -> None:
    manifest = _manifest(shards=[], rows=0, train_rows=0)
    assert IndexManifest.from_json(manifest.to_json()) == manifest


def test_serialize_round_trip_and_corruption() -> None:
    rng = np.random.default_rng(3)
    vectors, queries = _unit(rng, 30, 8), _unit(rng, 5, 8)
    index = build_shard(vectors, 100, "Flat", None, "off")
    data = serialize(index)
    assert isinstance(data, bytes)
    checksum = sha256(data)
    back = deserialize(data, checksum, "shard-00000")
    assert back.ntotal == 30
    got, want = search(back, queries, 5, 1), search(index, queries, 5, 1)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].min() >= 100 and got[1].max() < 130

    corrupted = bytearray(data)
    corrupted[len(corrupted) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        deserialize(bytes(corrupted), checksum, "shard-00000")
    with pytest.raises(ValueError, match="shard-00007"):
        deserialize(data, "0" * 64, "shard-00007")


# --- training sample ---------------------------------------------------------------------------


def test_sample_rows_across_all_files_deterministic() -> None:
    counts = [1000, 0, 3000, 500, 0, 5500]
    sample = sample_rows(counts, 2000, seed=0)
    again = sample_rows(counts, 2000, seed=0)
    assert len(again) == len(sample)
    assert all(p == q and np.array_equal(a, b) for (p, a), (q, b) in zip(sample, again))
    positions = [p for p, _ in sample]
    assert positions == [0, 2, 3, 5]  # every non-empty file, in order; empty ones never
    assert sum(len(rows) for _, rows in sample) == 2000
    for position, rows in sample:
        assert rows.dtype == np.int64 and (np.diff(rows) > 0).all()  # sorted, no duplicates
        assert rows.min() >= 0 and rows.max() < counts[position]
        # roughly proportional to the file's size (2000 of 10000 rows = 20 %)
        assert abs(len(rows) - 0.2 * counts[position]) < 0.05 * counts[position] + 30
    other = sample_rows(counts, 2000, seed=1)
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in zip(sample, other))


def test_sample_rows_bounded_by_total() -> None:
    sample = sample_rows([3, 0, 4], 100)
    assert [(p, rows.tolist()) for p, rows in sample] == [(0, [0, 1, 2]), (2, [0, 1, 2, 3])]
    assert sample_rows([], 10) == [] and sample_rows([0, 0], 10) == [] and sample_rows([5], 0) == []


# --- index type picker ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_rows", "nlist"), [(1, 1), (100, 2), (10_000, 256), (30_000, 512), (100_000, 1024), (1_000_000, 4096)]
)
def test_ivf_lists(n_rows: int, nlist: int) -> None:
    assert ivf_lists(n_rows) == nlist
    assert nlist == 1 or n_rows >= nlist * shard_index.MIN_POINTS_PER_LIST


def test_default_nprobe() -> None:
    sizes = (1, 4, 256, 1024, 4096, 16384, 2**20, 2**30)
    assert [default_nprobe(n) for n in sizes] == [1, 4, 16, 16, 16, 64, 2048, 2048]


@pytest.mark.parametrize(
    ("n_rows", "dim", "budget_gib", "factory"),
    [
        (0, 768, 8, "Flat"),
        (10_000, 768, 8, "Flat"),
        (FLAT_MAX_ROWS - 1, 768, 8, "Flat"),
        (FLAT_MAX_ROWS, 768, 8, "IVF512,Flat"),
        (100_000, 768, 8, "IVF1024,Flat"),
        (1_000_000, 768, 8, "IVF4096,Flat"),  # 2.9 GiB of vectors fit
        (1_000_000, 768, 1, "IVF4096,PQ96"),  # they don't: the largest PQ code that fits
        (3_000_000, 768, 8, "IVF8192,PQ96"),
        (10_000_000, 768, 1, "OPQ64,IVF16384,PQ64"),  # 12-wide sub-vectors: rotate first
        (100_000_000, 768, 2, "OPQ8_256,IVF32768,PQ8"),  # 8 codes of <= 32 dims (GPU limit)
        (1_000_000, 64, 8, "IVF4096,Flat"),
        (1_000_000, 64, 0.05, "IVF4096,PQ32"),  # PQ64 (72 MB) and OPQ48_48 (56 MB) do not fit
    ],
)
def test_pick_factory(n_rows: int, dim: int, budget_gib: float, factory: str) -> None:
    assert pick_factory(n_rows, dim, int(budget_gib * GIB)) == factory
    assert index_spec(factory, dim).bytes_for(n_rows) <= budget_gib * GIB


def test_pick_factory_nothing_fits() -> None:
    with pytest.raises(ValueError, match="no index type holds 100000000 vectors of dim 768 in 1.00 GiB"):
        pick_factory(100_000_000, 768, GIB)
    with pytest.raises(ValueError, match="no index type"):  # too few rows to train PQ, Flat too big
        pick_factory(5_000, 768, 1_000_000)


def test_pq_factory_keeps_sub_vectors_gpu_sized() -> None:
    assert pq_factory(64, 96, 768) == "IVF64,PQ96"
    assert pq_factory(64, 48, 768) == "OPQ48,IVF64,PQ48"
    assert pq_factory(64, 16, 768) == "OPQ16_512,IVF64,PQ16"
    assert pq_factory(64, 48, 100) == "OPQ48_96,IVF64,PQ48"  # 100 % 48 != 0: rotate to 96 dims


def test_index_spec_memory() -> None:
    flat = index_spec("Flat", 768)
    assert (flat.nlist, flat.pq_m, flat.code_bytes) == (0, 0, 768 * 4)
    assert flat.bytes_for(1_000_000) == 1_000_000 * (768 * 4 + 8)
    ivf = index_spec("IVF4096,Flat", 768)
    assert (ivf.nlist, ivf.code_bytes, ivf.fixed_bytes) == (4096, 768 * 4, 4096 * 768 * 4)
    pq96 = index_spec("IVF4096,PQ96", 768)
    assert (pq96.pq_m, pq96.code_bytes) == (96, 96)
    opq = index_spec("OPQ16_512,IVF1024,PQ16", 768)
    assert (opq.nlist, opq.pq_m, opq.code_bytes) == (1024, 16, 16)
    assert opq.fixed_bytes == 768 * 512 * 4 + 1024 * 512 * 4 + 256 * 512 * 4


def test_resolve_auto_and_configured() -> None:
    factory, params = resolve("auto", 100_000, 768, 8 * GIB, None)
    assert factory == "IVF1024,Flat"
    assert params["picked_by"] == "auto" and params["nlist"] == 1024 and params["nprobe"] == default_nprobe(1024)
    assert params["estimated_bytes"] == index_spec(factory, 768).bytes_for(100_000)
    factory, params = resolve("IVF64,PQ8", 10, 16, 0, 5)
    assert (factory, params["picked_by"], params["nlist"], params["pq_m"], params["nprobe"]) == (
        "IVF64,PQ8",
        "config",
        64,
        8,
        5,
    )
    assert resolve("Flat", 10, 16, 0, 7)[1]["nprobe"] == 0  # not an IVF type


# --- building and searching every type ---------------------------------------------------------


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int = 16) -> np.ndarray:
    """Unit vectors around `centres` fixed centres (the same for every call with this d, centres)."""
    c = _unit(np.random.default_rng([d, centres]), centres, d)
    v = c[rng.integers(centres, size=n)] + 1.0 * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("factory", ["IVF16,PQ8", "OPQ4_16,IVF16,PQ4", "PQ8"])
def test_compressed_types_build_shards_with_global_ids(factory: str) -> None:
    rng = np.random.default_rng(5)
    vectors = _clustered(rng, 1200, 32)
    template = train_template(vectors, factory, "off", nprobe=16)
    own = np.arange(0, 1200, 12)  # query with stored vectors: each should find itself despite lossy codes
    scores, ids = _sharded(vectors, vectors[own], 10, 3, factory, template, nprobe=16)
    assert ((ids >= 0) & (ids < 1200)).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert np.mean([i in row for i, row in zip(own, ids)]) >= 0.8


def test_ivf_recall_on_clustered_data_at_default_nprobe() -> None:
    rng = np.random.default_rng(6)
    vectors, queries = _clustered(rng, 20_000, 32, centres=64), _clustered(rng, 200, 32, centres=64)
    nlist = ivf_lists(len(vectors))
    factory = f"IVF{nlist},Flat"
    template = train_template(vectors, factory, "off", nprobe=default_nprobe(nlist))
    _, ids = _sharded(vectors, queries, 10, 4, factory, template, nprobe=None)  # nprobe stored in the shards
    _, want = _exact(vectors, queries, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ids, want)]) / 10 >= 0.95


def test_template_carries_nprobe_into_shards() -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 500, 8)
    template = train_template(vectors, "IVF8,Flat", "off", nprobe=5)
    shard = build_shard(vectors, 0, "IVF8,Flat", template, "off")
    back = faiss.deserialize_index(np.frombuffer(serialize(shard), np.uint8))
    assert faiss.extract_index_ivf(back).nprobe == 5
    search(back, vectors[:2], 3, 100)  # capped at nlist
    assert faiss.extract_index_ivf(back).nprobe == 8
    assert train_template(vectors, "IVF8,Flat", "off", nprobe=50) is not None  # nprobe > nlist is capped


def test_search_shards_equals_exact_and_empty() -> None:
    rng = np.random.default_rng(8)
    vectors, queries = _unit(rng, 301, 16), _unit(rng, 7, 16)
    bounds = [0, 100, 200, 301]
    indexes = [build_shard(vectors[a:b], a, "Flat", None, "off") for a, b in itertools.pairwise(bounds)]
    scores, ids = search_shards(indexes, queries, 5)
    want_scores, want_ids = _exact(vectors, queries, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    scores, ids = search_shards([], queries, 5)
    assert ids.shape == (7, 5) and (ids == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("factory", ["IVF32,Flat", "IVF32,PQ8"])
def test_search_shards_is_the_merge_of_per_shard_searches(factory: str) -> None:
    rng = np.random.default_rng(11)
    vectors, queries = _clustered(rng, 3000, 16), _clustered(rng, 30, 16)
    template = train_template(vectors, factory, "off", nprobe=4)
    bounds = [0, 1000, 2000, 3000]
    shards = [build_shard(vectors[a:b], a, factory, template, "off") for a, b in itertools.pairwise(bounds)]
    for nprobe in (None, 1, 4, 32):
        got_scores, got_ids = search_shards(shards, queries, 10, nprobe)
        results = [search(shard, queries, 10, nprobe) for shard in shards]
        want_scores, want_ids = merge_topk([r[0] for r in results], [r[1] for r in results], 10)
        np.testing.assert_array_equal(got_ids, want_ids)
        np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)
    if factory == "IVF32,Flat":  # all lists probed: exact
        np.testing.assert_array_equal(search_shards(shards, queries, 10, 32)[1], _exact(vectors, queries, 10)[1])


def test_merge_breaks_score_ties_by_lower_id() -> None:
    # the same vector in three shards under ids 7, 2 and 5: equal scores, merged as 2, 5, 7
    v = np.eye(4, dtype=np.float32)
    indexes = [build_shard(v[:1], start, "Flat", None, "off") for start in (7, 2, 5)]
    _, ids = search_shards(indexes, v[:1], 3)
    assert ids.tolist() == [[2, 5, 7]]


# --- GPU placement (pure logic; runs on CPU) ---------------------------------------------------


def test_gpu_limit_error() -> None:
    assert gpu_limit_error(GPU_MAX_K, GPU_MAX_NPROBE) is None
    assert gpu_limit_error(None, None) is None
    assert "k=2049 exceeds the faiss GPU limit of 2048" in gpu_limit_error(GPU_MAX_K + 1, 1)
    assert "nprobe=4096 exceeds" in gpu_limit_error(10, 4096)


@pytest.mark.parametrize(
    ("use_gpu", "gpus", "k", "nprobe", "place", "reason"),
    [
        ("off", 1, 10, 10, False, "off"),
        ("auto", 0, 10, 10, False, "no_gpu"),
        ("auto", 1, 10, 10, True, "gpu"),
        ("auto", 1, None, None, True, "gpu"),
        ("auto", 2, 4096, 10, False, "over_gpu_limit: k=4096"),
        ("auto", 1, 10, 3000, False, "over_gpu_limit: nprobe=3000"),
    ],
)
def test_gpu_choice(use_gpu: str, gpus: int, k, nprobe, place: bool, reason: str) -> None:
    got_place, got_reason = gpu_choice(use_gpu, gpus, k, nprobe)
    assert got_place == place and got_reason.startswith(reason)


def test_gpu_choice_rejects_unknown_setting() -> None:
    with pytest.raises(ValueError, match="index.use_gpu"):
        gpu_choice("yes", 1)


def test_cpu_build_never_moves_to_gpu() -> None:
    index = new_index("Flat", 4)
    assert to_gpu_if_available(index, "auto") is index
    assert to_gpu_if_available(index, "off", k=10**6, nprobe=10**6) is index


def test_over_gpu_limit_falls_back_to_cpu(monkeypatch) -> None:
    monkeypatch.setattr(shard_index, "_gpus_visible", lambda: 1)
    index = new_index("Flat", 4)
    with pytest.warns(UserWarning, match="stays on CPU: k=5000 exceeds"):
        assert to_gpu_if_available(index, "auto", k=5000, nprobe=8) is index


def test_gpu_search_over_limit_is_refused_clearly(monkeypatch) -> None:
    monkeypatch.setattr(shard_index, "_on_gpu", lambda index: True)
    index = build_shard(np.eye(4, dtype=np.float32), 0, "Flat", None, "off")
    with pytest.raises(ValueError, match="faiss GPU search refused: k=3000 exceeds .* index.use_gpu=off"):
        search(index, np.eye(4, dtype=np.float32), 3000, None)


def test_float16_lookup_tables_only_where_faiss_needs_them() -> None:
    assert needs_float16_lut(new_index("IVF16,PQ96", 768))  # 96 * 256 > 16384
    assert not needs_float16_lut(new_index("IVF16,PQ64", 768))
    assert needs_float16_lut(new_index("OPQ96,IVF16,PQ96", 768))
    assert not needs_float16_lut(new_index("IVF16,Flat", 768))
    assert not needs_float16_lut(new_index("Flat", 768))


# --- pipeline/index_build.py on Ray ---------------------------------------------------------------


def _crop_files(root, rng: np.random.Generator, sizes: list[int], dim: int) -> np.ndarray:
    root.mkdir(parents=True)
    vectors = _clustered(rng, sum(sizes), dim)
    start = 0
    for n, size in enumerate(sizes):
        part = vectors[start : start + size]
        table = pa.table(
            {
                "crop_id": [f"c{i}" for i in range(start, start + size)],
                "image_id": [f"i{i}" for i in range(start, start + size)],
                "box": pa.array([[0.0, 0.0, 1.0, 1.0]] * size, pa.list_(pa.float32(), 4)),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
                "caption_embedding": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim),
            }
        )
        pq.write_table(table, root / f"part-{n:03d}.parquet")
        start += size
    return vectors


def parquet_files(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.parquet"))


@pytest.mark.ray
@pytest.mark.parametrize(("factory", "train_sample"), [("auto", 100_000), ("IVF8,Flat", 300)])
def test_build_on_ray_matches_exact(local_ray, tmp_path, monkeypatch, factory: str, train_sample: int) -> None:
    from actors import scorer
    from actors.scorer import ShardedSearcher
    from core.config import IndexConfig
    from core.storage import StorageConfig
    from pipeline.index_build import build

    rng = np.random.default_rng(9)
    vectors = _crop_files(tmp_path / "crops", rng, [120, 0, 250, 130], 16)
    queries = _clustered(rng, 9, 16)
    cfg = IndexConfig(shards=3, factory=factory, train_sample=train_sample, use_gpu="off")
    cfg.nprobe = 8 if factory != "auto" else None
    manifest = build(
        str(tmp_path / "crops"), parquet_files(tmp_path / "crops"), str(tmp_path / "index"), cfg, StorageConfig()
    )
    assert manifest.rows == 500 and manifest.dim == 16 and len(manifest.shards) == 3
    assert [(s.id_start, s.id_end) for s in manifest.shards] == [(0, 166), (166, 333), (333, 500)]
    on_disk = IndexManifest.from_json((tmp_path / "index" / "manifest.json").read_text())
    assert on_disk == manifest
    if factory == "auto":
        assert (manifest.index_type, manifest.train_rows, manifest.params["picked_by"]) == ("Flat", 0, "auto")
    else:
        assert (manifest.index_type, manifest.train_rows, manifest.nprobe) == ("IVF8,Flat", 300, 8)
        assert manifest.params == {**manifest.params, "picked_by": "config", "nlist": 8, "nprobe": 8}
    placed = []  # (k, nprobe) each shard was offered to a GPU with (#13, item 12: the limits' CPU fallback)
    move = scorer.shard_index.to_gpu_if_available
    monkeypatch.setattr(
        scorer.shard_index, "to_gpu_if_available", lambda i, g, k, n: placed.append((k, n)) or move(i, g, k, n)
    )
    searcher = ShardedSearcher(str(tmp_path / "index"), cfg, StorageConfig(), k=10)
    assert placed == [(10, manifest.nprobe if factory == "auto" else 8)] * 3
    _, want = _exact(vectors, queries, 10)
    np.testing.assert_array_equal(searcher.search(queries, 10), want)  # every list probed / exact


@pytest.mark.ray
def test_the_searcher_keeps_the_payload_columnar_and_in_its_stored_dtype(local_ray, tmp_path) -> None:
    """One step of #14: a scorer held every crop's vectors widened to float32 and its ids as Python objects."""
    from actors.scorer import ShardedSearcher
    from core.config import IndexConfig
    from core.storage import StorageConfig
    from pipeline.index_build import build

    vectors = _crop_files(tmp_path / "crops", np.random.default_rng(3), [30, 20], 8)
    for path in parquet_files(tmp_path / "crops"):  # as the job stores them: embedding.store_dtype float16
        table = pq.read_table(path)
        half = pa.list_(pa.float16(), 8)
        for name in ("embedding", "caption_embedding"):
            table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(half))
        pq.write_table(table, path)
    cfg = IndexConfig(shards=2, factory="Flat", use_gpu="off")
    build(str(tmp_path / "crops"), parquet_files(tmp_path / "crops"), str(tmp_path / "index"), cfg, StorageConfig())
    searcher = ShardedSearcher(str(tmp_path / "index"), cfg, StorageConfig(), k=5)
    assert searcher.image.dtype == searcher.caption.dtype == np.float16 and searcher.image.shape == (51, 8)
    assert isinstance(searcher.crop_id, pa.Array) and isinstance(searcher.image_id, pa.Array)
    rows = searcher.rows(np.array([[0, 49, -1]]))
    assert searcher.strings(searcher.crop_id, rows).tolist() == [["c0", "c49", None]]
    np.testing.assert_allclose(searcher.image[rows[0, :2]], vectors[[0, 49]], atol=1e-3)


@pytest.mark.ray
def test_an_empty_index_leaves_every_garment_unmatched(local_ray, tmp_path) -> None:
    """#13, item 9: a lookbook that gave no crop crashed the scorer (zero-width payload)."""
    from actors.scorer import GarmentScorer
    from core.config import IndexConfig, ScoringConfig, TierConfig
    from core.schemas import ERROR, REASON, SHARD
    from core.storage import StorageConfig
    from core.tiering import UNMATCHED, by_threshold
    from pipeline.index_build import build

    (tmp_path / "crops").mkdir()
    cfg = IndexConfig(use_gpu="off")
    assert (
        build(
            str(tmp_path / "crops"), parquet_files(tmp_path / "crops"), str(tmp_path / "index"), cfg, StorageConfig()
        ).rows
        == 0
    )
    scorer = GarmentScorer(str(tmp_path / "index"), ScoringConfig(top_k=5), cfg, StorageConfig())
    n, dim = 3, 16
    garments = {
        "image_id": np.array(["g0", "g1", "g2"], dtype=object),
        "uri": np.array(["a", "b", "c"], dtype=object),
        "caption": np.array(["x", "y", "z"], dtype=object),
        "embedding": _clustered(np.random.default_rng(0), n, dim),
        "caption_embedding": _clustered(np.random.default_rng(1), n, dim),
        REASON: np.array(["", "", "decode_error"], dtype=object),
        ERROR: np.array(["", "", "bad"], dtype=object),
        SHARD: np.zeros(n, np.int32),
    }
    scored = scorer(garments)
    assert scored["n_candidates"].tolist() == [0, 0, 0] and np.isnan(scored["score"]).all()
    assert scored["crop_id"].tolist() == [None] * 3
    thresholds = TierConfig(thresholds={"high": 0.9, "mid": 0.5, "low": 0.1}).thresholds
    assert by_threshold(scored["score"], thresholds).tolist() == [UNMATCHED] * 3


@pytest.mark.ray
def test_build_refuses_a_corrupted_shard(local_ray, tmp_path) -> None:
    from actors.scorer import ShardedSearcher
    from core.config import IndexConfig
    from core.storage import StorageConfig
    from pipeline.index_build import build

    _crop_files(tmp_path / "crops", np.random.default_rng(10), [40, 30], 8)
    cfg = IndexConfig(shards=2, factory="Flat", use_gpu="off")
    build(str(tmp_path / "crops"), parquet_files(tmp_path / "crops"), str(tmp_path / "index"), cfg, StorageConfig())
    shard = tmp_path / "index" / "shard-00001.faiss"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="index shard shard-00001.faiss is corrupt: sha256"):
        ShardedSearcher(str(tmp_path / "index"), cfg, StorageConfig(), k=10)


@pytest.mark.ray
def test_build_keeps_an_index_of_the_same_crop_files_and_settings(local_ray, tmp_path) -> None:
    from core.config import IndexConfig
    from core.storage import StorageConfig
    from pipeline.index_build import build

    crops, index, storage = tmp_path / "crops", tmp_path / "index", StorageConfig()
    _crop_files(crops, np.random.default_rng(11), [40, 30], 8)
    cfg = IndexConfig(shards=2, factory="Flat", use_gpu="off")
    first = build(str(crops), parquet_files(crops), str(index), cfg, storage)
    shard = index / first.shards[0].index_file
    built_at = shard.stat().st_mtime_ns
    assert (
        build(str(crops), parquet_files(crops), str(index), cfg, storage) == first
        and shard.stat().st_mtime_ns == built_at
    )

    cfg.shards = 1  # other settings: rebuilt
    assert len(build(str(crops), parquet_files(crops), str(index), cfg, storage).shards) == 1
    rewritten = crops / "part-001.parquet"  # a redone work shard rewrites its crop files
    pq.write_table(pq.read_table(rewritten).slice(0, 10), rewritten)
    assert build(str(crops), parquet_files(crops), str(index), cfg, storage).rows == 50
    (index / "shard-00000.faiss").unlink()  # a lost shard file: rebuilt
    rebuilt = build(str(crops), parquet_files(crops), str(index), cfg, storage)
    assert (index / "shard-00000.faiss").exists() and rebuilt.rows == 50
