"""Tests for core/index.py (faiss-cpu): stable ids, the manifest, building, updating and mapping
shards, exact fan-out search and merge, checksums, GPU placement logic."""

import dataclasses
import json

import faiss
import numpy as np
import pytest

from core import index as shard_index
from core.index import (
    GPU_MAX_K,
    GPU_MAX_NPROBE,
    ROW_BITS,
    IndexManifest,
    ShardEntry,
    add,
    from_template,
    gpu_choice,
    gpu_limit_error,
    index_ids,
    index_shard_of,
    merge_topk,
    needs_float16_lut,
    new_index,
    read_local,
    read_mapped,
    remove_work_shards,
    sample_rows,
    search,
    serialize,
    sha256,
    to_gpu_if_available,
    train_template,
    work_shard_of,
)


def search_shards(indexes: list, queries: np.ndarray, k: int, nprobe: int | None = None):
    """Each shard's top-k merged, as the scorer pools do one shard after another."""
    if not indexes:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    results = [search(index, queries, k, nprobe) for index in indexes]
    return merge_topk([s for s, _ in results], [i for _, i in results], k)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int = 16) -> np.ndarray:
    """Unit vectors around `centres` fixed centres (the same for every call with this d, centres),
    rounded to float16 as the job stores embeddings (so float16 codes hold them exactly)."""
    c = _unit(np.random.default_rng([d, centres]), centres, d)
    v = c[rng.integers(centres, size=n)] + 1.0 * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def _exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    flat.add_with_ids(vectors, ids)
    return flat.search(queries, k)


def _shard(vectors: np.ndarray, ids: np.ndarray, factory: str, template: bytes | None = None) -> faiss.Index:
    template = template or train_template(vectors, factory, "off")
    return add(from_template(template, "off"), vectors, ids)


def _assert_same_results(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """Equal scores (float32 summation order aside) and the same ids per query (near-ties may swap)."""
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)
    assert [sorted(row) for row in got[1].tolist()] == [sorted(row) for row in want[1].tolist()]


def _work_shard_ids(sizes: list[int]) -> np.ndarray:
    """Stable ids of work shards 0..len(sizes)-1 holding `sizes` rows, concatenated."""
    return np.concatenate([index_ids(w, n) for w, n in enumerate(sizes)])


# --- stable ids ----------------------------------------------------------------------------------


def test_index_ids_are_work_shard_and_row() -> None:
    ids = index_ids(3, 4, first_row=10)
    assert ids.dtype == np.int64 and ids.tolist() == [(3 << ROW_BITS) + r for r in range(10, 14)]
    assert work_shard_of(ids).tolist() == [3] * 4
    assert work_shard_of(index_ids(511, 1)).tolist() == [511]  # gpu-64.yaml's work shards fit
    assert [index_shard_of(w, 4) for w in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,SQfp16", "IVF8_HNSW32,SQfp16"])
def test_remove_work_shards_leaves_the_others(factory: str) -> None:
    rng = np.random.default_rng(4)
    sizes = [120, 80, 100]
    vectors, ids = _clustered(rng, 300, 16), _work_shard_ids(sizes)
    index = _shard(vectors, ids, factory)
    assert remove_work_shards(index, [1, 7]) == 80 and index.ntotal == 220
    kept = work_shard_of(ids) != 1
    # every list probed: exact over what is left
    _assert_same_results(search(index, vectors[:30], 10, 8), _exact(vectors[kept], ids[kept], vectors[:30], 10))


# --- manifest -------------------------------------------------------------------------------------


def _manifest(**changes) -> IndexManifest:
    fields = dict(
        index_type="IVF8,SQfp16",
        dim=16,
        metric="inner_product",
        nprobe=8,
        shards=[
            ShardEntry("shard-00000.g00001.faiss", "shard-00000.g00001.arrow", 5, {"0": "a", "2": "b"}, "ab" * 32),
            ShardEntry("shard-00001.g00001.faiss", "shard-00001.g00001.arrow", 4, {"1": "c"}, "cd" * 32, {"8": 1.0}),
        ],
        rows=9,
        train_rows=9,
        trained_at_rows=9,
        template_file="template.g00001.faiss",
        generation=1,
        params={"picked_by": "config", "nlist": 8},
    )
    return IndexManifest(**{**fields, **changes})


def test_manifest_json_round_trip() -> None:
    manifest = _manifest()
    back = IndexManifest.from_json(manifest.to_json())
    assert back == manifest and all(isinstance(s, ShardEntry) for s in back.shards)
    assert back.work_shards() == {0: "a", 2: "b", 1: "c"}
    data = json.loads(manifest.to_json())
    assert set(data["shards"][0]) == {"index_file", "payload_file", "rows", "work_shards", "sha256", "recall"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": 10}, "says 10 rows but its shards hold 9"),
        ({"metric": "l2"}, "metric"),
        (
            {"shards": [ShardEntry("a", "a", 5, {"1": "x"}, ""), ShardEntry("b", "b", 4, {}, "")]},
            r"work shards \['1'\]",
        ),
        ({"shards": [ShardEntry("a", "a", -1, {}, "")], "rows": -1}, "-1 rows"),
    ],
)
def test_manifest_with_inconsistent_shards_is_refused(changes: dict, message: str) -> None:
    text = dataclasses.replace(_manifest(), **changes).to_json()
    with pytest.raises(ValueError, match=message):
        IndexManifest.from_json(text)


# --- building, mapping, searching ---------------------------------------------------------------


def test_serialize_round_trip_mapping_and_corruption(tmp_path) -> None:
    rng = np.random.default_rng(3)
    vectors, queries = _unit(rng, 300, 8), _unit(rng, 5, 8)
    for factory in ("Flat", "IVF4,SQfp16"):
        index = _shard(vectors, index_ids(2, 300), factory)
        data = serialize(index)
        checksum = sha256(data)
        (tmp_path / "shard.faiss").write_bytes(data)
        want = search(index, queries, 5, 4)
        for back in (
            read_local(str(tmp_path / "shard.faiss"), checksum, "s"),
            read_mapped(str(tmp_path / "shard.faiss"), checksum, "s", factory),
        ):
            got = search(back, queries, 5, 4)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
        corrupted = bytearray(data)
        corrupted[len(corrupted) // 2] ^= 0xFF
        (tmp_path / "corrupt.faiss").write_bytes(bytes(corrupted))  # never rewrite a mapped file in place
        with pytest.raises(ValueError, match="index shard shard-00000 is corrupt"):
            read_local(str(tmp_path / "corrupt.faiss"), checksum, "shard-00000")
        with pytest.raises(ValueError, match="index shard shard-00007 is corrupt"):
            read_mapped(str(tmp_path / "corrupt.faiss"), checksum, "shard-00007", factory)


def test_mapped_shard_keeps_its_vectors_out_of_process_memory(tmp_path) -> None:
    """#14: a scorer loaded every vector into its own memory; a mapped shard leaves them in the page cache."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60_000, 256), dtype=np.float32)  # 30 MB of fp16 codes
    index = _shard(
        vectors, index_ids(0, len(vectors)), "IVF64,SQfp16", train_template(vectors[:5000], "IVF64,SQfp16", "off")
    )
    data = serialize(index)
    (tmp_path / "s.faiss").write_bytes(data)
    del index, vectors

    def anon_kib() -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon"))

    warm = _shard(
        np.ones((100, 256), np.float32),
        np.arange(100),
        "IVF64,SQfp16",
        train_template(np.eye(256, dtype=np.float32)[:64].repeat(1, 0), "IVF64,SQfp16", "off"),
    )
    search(warm, np.ones((4, 256), np.float32), 5, 64)  # faiss's threads and buffers exist before measuring
    before = anon_kib()
    mapped = read_mapped(str(tmp_path / "s.faiss"), sha256(data), "s", "IVF64,SQfp16")
    search(mapped, np.ones((4, 256), np.float32), 5, 64)  # touches every list
    assert anon_kib() - before < 8 * 1024  # < 8 MiB of the 30 MB of codes became private memory
    loaded = read_local(str(tmp_path / "s.faiss"), sha256(data), "s")
    assert loaded.ntotal == mapped.ntotal == 60_000


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat", "IVF8,SQfp16"])
def test_sharded_search_with_every_list_probed_equals_exact(factory: str) -> None:
    rng = np.random.default_rng(0)
    sizes = [150, 0, 140, 112]
    vectors, queries, ids = _clustered(rng, 402, 16), _clustered(rng, 25, 16), _work_shard_ids(sizes)
    template = train_template(vectors, factory, "off")
    shards = [
        _shard(vectors[work_shard_of(ids) % 3 == s], ids[work_shard_of(ids) % 3 == s], factory, template)
        for s in range(3)
    ]
    _assert_same_results(search_shards(shards, queries, 10, 8), _exact(vectors, ids, queries, 10))


def test_sharded_search_k_larger_than_the_index() -> None:
    rng = np.random.default_rng(1)
    vectors, queries = _unit(rng, 9, 8), _unit(rng, 4, 8)
    shards = [_shard(vectors[a:b], index_ids(w, b - a), "Flat") for w, (a, b) in enumerate([(0, 3), (3, 9)])]
    scores, ids = search_shards(shards, queries, 12)
    assert (ids[:, 9:] == -1).all() and np.isneginf(scores[:, 9:]).all()
    assert sorted(work_shard_of(ids[0, :9]).tolist()) == [0] * 3 + [1] * 6
    scores, ids = search_shards([], queries, 5)
    assert ids.shape == (4, 5) and (ids == -1).all() and np.isneginf(scores).all()


def test_template_carries_nprobe_and_search_caps_it() -> None:
    vectors = _unit(np.random.default_rng(7), 500, 8)
    template = train_template(vectors, "IVF8,Flat", "off", nprobe=5)
    back = faiss.deserialize_index(
        np.frombuffer(serialize(_shard(vectors, index_ids(0, 500), "IVF8,Flat", template)), np.uint8)
    )
    assert faiss.extract_index_ivf(back).nprobe == 5
    search(back, vectors[:2], 3, 100)  # capped at nlist
    assert faiss.extract_index_ivf(back).nprobe == 8
    assert from_template(train_template(vectors, "Flat", "off"), "off").ntotal == 0  # nothing to train


def test_hnsw_quantizer_explores_at_least_twice_nprobe() -> None:
    vectors = _clustered(np.random.default_rng(8), 2000, 16)
    index = _shard(vectors, index_ids(0, 2000), "IVF32_HNSW32,SQfp16")
    search(index, vectors[:3], 5, 32)
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    assert quantizer.hnsw.efSearch == max(shard_index.HNSW_MIN_EF_SEARCH, 64)
    _assert_same_results(search(index, vectors[:50], 5, 32), _exact(vectors, index_ids(0, 2000), vectors[:50], 5))


def test_merge_breaks_score_ties_by_lower_id() -> None:
    # the same vector in three shards under ids 7, 2 and 5: equal scores, merged as 2, 5, 7
    v = np.eye(4, dtype=np.float32)
    indexes = [_shard(v[:1], np.array([i]), "Flat") for i in (7, 2, 5)]
    _, ids = search_shards(indexes, v[:1], 3)
    assert ids.tolist() == [[2, 5, 7]]
    scores, ids = merge_topk(
        [np.array([[0.5, 0.1]]), np.array([[0.9, -1.0]])], [np.array([[4, 3]]), np.array([[8, -1]])], 4
    )
    assert ids.tolist() == [[8, 4, 3, -1]] and scores[0, 3] == -np.inf


def test_new_index_accepts_ids() -> None:
    index = new_index("Flat", 4)
    index.add_with_ids(np.eye(4, dtype=np.float32), np.array([10, 11, 12, 13], np.int64))
    scores, ids = index.search(np.eye(4, dtype=np.float32)[2:3], 2)
    assert ids[0, 0] == 12 and scores[0, 0] == pytest.approx(1.0)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT


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
    monkeypatch.setattr(shard_index, "gpus_visible", lambda: 1)
    index = new_index("Flat", 4)
    with pytest.warns(UserWarning, match="stays on CPU: k=5000 exceeds"):
        assert to_gpu_if_available(index, "auto", k=5000, nprobe=8) is index


def test_gpu_search_over_limit_is_refused_clearly(monkeypatch) -> None:
    index = _shard(np.eye(4, dtype=np.float32), np.arange(4), "Flat")
    monkeypatch.setattr(shard_index, "_on_gpu", lambda index: True)
    with pytest.raises(ValueError, match="faiss GPU search refused: k=3000 exceeds .* index.use_gpu=off"):
        search(index, np.eye(4, dtype=np.float32), 3000, None)


def test_float16_lookup_tables_only_where_faiss_needs_them() -> None:
    assert needs_float16_lut(new_index("IVF16,PQ96", 768))  # 96 * 256 > 16384
    assert not needs_float16_lut(new_index("IVF16,PQ64", 768))
    assert needs_float16_lut(new_index("OPQ96,IVF16,PQ96", 768))
    assert not needs_float16_lut(new_index("IVF16,Flat", 768))
    assert not needs_float16_lut(new_index("Flat", 768))


@pytest.mark.gpu
def test_gpu_shard_equals_the_cpu_shard() -> None:
    """#14: faiss-gpu for real. Runs where a GPU faiss build sees a GPU (`pip install .[gpu]`)."""
    if shard_index.gpus_visible() < 1:
        pytest.skip("no GPU visible to faiss")
    rng = np.random.default_rng(12)
    vectors, queries = _clustered(rng, 20_000, 64), _clustered(rng, 100, 64)
    ids = index_ids(1, len(vectors))
    template = train_template(vectors, "IVF64,SQfp16", "auto")  # k-means on the GPU
    on_gpu = add(from_template(template, "auto"), vectors, ids)
    assert shard_index._on_gpu(on_gpu)
    on_cpu = add(from_template(template, "off"), vectors, ids)
    got_scores, got = search(on_gpu, queries, 10, 64)
    want_scores, want = search(on_cpu, queries, 10, 64)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(got, want)]) >= 9.9
    np.testing.assert_allclose(got_scores, want_scores, atol=2e-3)
    back = faiss.deserialize_index(np.frombuffer(serialize(on_gpu), np.uint8))  # back to CPU to store it
    assert not shard_index._on_gpu(back) and back.ntotal == len(vectors)
