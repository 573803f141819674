"""Pure tests for miner/index.py (faiss-cpu): shard partition, exact fan-out search, manifest, checksums."""

import dataclasses
import itertools

import faiss
import numpy as np
import pytest

from miner.index import (
    FileSlice,
    IndexManifest,
    ShardEntry,
    build_shard,
    deserialize,
    new_index,
    partition,
    search,
    serialize,
    sha256,
    train_template,
)
from miner.scoring import merge_topk


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


def test_manifest_json_round_trip() -> None:
    manifest = IndexManifest(
        index_type="IVF8,Flat",
        dim=16,
        metric="inner_product",
        nprobe=8,
        shards=[
            ShardEntry("shard-00000.faiss", "shard-00000.parquet", 5, 0, 5, "ab" * 32),
            ShardEntry("shard-00001.faiss", "shard-00001.parquet", 4, 5, 9, "cd" * 32),
        ],
    )
    back = IndexManifest.from_json(manifest.to_json())
    assert back == manifest
    assert all(isinstance(s, ShardEntry) for s in back.shards)
    assert dataclasses.asdict(back) == dataclasses.asdict(manifest)


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
