"""Pure tests for core/tiering.py: threshold tiers and exact count-mode tiers from histogram cutoffs."""

import numpy as np
import pytest

from core.tiering import (
    TIERS,
    UNMATCHED,
    boundary_bins,
    by_cutoffs,
    by_threshold,
    cumulative_ranks,
    cutoff_in_bin,
    score_bins,
)

THRESHOLDS = {"high": 0.85, "mid": 0.7, "low": 0.5}


def test_by_threshold_boundaries_inclusive_and_nan_unmatched() -> None:
    scores = np.array([0.85, np.nextafter(0.85, 0), 0.7, 0.5, np.nextafter(0.5, 0), np.nan, 1.0, -1.0, 0.0])
    tiers = by_threshold(scores, THRESHOLDS)
    assert tiers.tolist() == ["high", "mid", "mid", "low", UNMATCHED, UNMATCHED, "high", UNMATCHED, UNMATCHED]
    assert tiers.dtype == object


def test_by_threshold_float32_scores_and_empty() -> None:
    thresholds = {"high": 0.75, "mid": 0.5, "low": 0.25}  # exactly representable in float32
    scores = np.array([0.75, 0.74, 0.5, 0.25, 0.24, np.nan], np.float32)
    assert by_threshold(scores, thresholds).tolist() == ["high", "mid", "mid", "low", UNMATCHED, UNMATCHED]
    assert by_threshold(np.zeros(0, np.float32), thresholds).tolist() == []


def test_cumulative_ranks() -> None:
    assert cumulative_ranks({"high": 5, "mid": 10, "low": 15}) == [5, 15, 30]
    # the order is always high, mid, low, whatever the mapping's order
    assert cumulative_ranks({"low": 1, "high": 2, "mid": 3}) == [2, 5, 6]
    assert cumulative_ranks({"high": 0, "mid": 0, "low": 4}) == [0, 0, 4]


def test_score_bins_by_hand() -> None:
    scores = np.array([-1.0, -0.5, 0.0, 0.49, 0.5, 1.0, 1.5, -2.0, -0.51])
    assert score_bins(scores, -1.0, 1.0, 4).tolist() == [0, 1, 2, 2, 3, 3, 3, 0, 0]
    assert score_bins(scores, -1.0, 1.0, 1).tolist() == [0] * len(scores)
    assert score_bins(scores, -1.0, 1.0, 4).dtype == np.int64


def test_boundary_bins_by_hand() -> None:
    histogram = np.array([2, 0, 3, 1])  # low bin first; from the top: 1, 3, 0, 2 -> cumulative 1, 4, 4, 6
    assert boundary_bins(histogram, [1, 2, 4, 5, 6, 7]) == [3, 2, 2, 0, 0, None]
    assert boundary_bins(np.zeros(3, np.int64), [1]) == [None]
    assert boundary_bins(np.array([0, 0, 5, 0]), [1, 5, 6]) == [2, 2, None]


def test_cutoff_in_bin_by_hand() -> None:
    scores = np.array([0.3, 0.5, 0.5, 0.4], np.float32)
    ids = np.array(["c", "b", "a", "d"], dtype=object)
    # in-bin order: (0.5, a), (0.5, b), (0.4, d), (0.3, c); 10 garments rank above this bin
    assert cutoff_in_bin(scores, ids, 10, 11) == (0.5, "a")
    assert cutoff_in_bin(scores, ids, 10, 12) == (0.5, "b")
    assert cutoff_in_bin(scores, ids, 10, 14) == (pytest.approx(0.3), "c")


def test_cutoff_at_rank_zero_is_above_every_garment() -> None:
    # counts.high = 0: cumulative rank 0; boundary_bins points at the top bin, which may even be empty
    scores = np.array([1.0, 0.5], np.float32)
    ids = np.array(["a", "b"], dtype=object)
    assert boundary_bins(np.array([0, 2]), [0]) == [1]
    cutoff = cutoff_in_bin(scores, ids, 0, 0)
    assert cutoff_in_bin(np.zeros(0, np.float32), np.zeros(0, object), 0, 0) == cutoff
    assert by_cutoffs(scores, ids, [cutoff, (0.5, "b"), None]).tolist() == ["mid", "mid"]


def test_by_cutoffs_by_hand() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.2, np.nan])
    ids = np.array(["x", "b", "a", "c", "d", "e"], dtype=object)
    tiers = by_cutoffs(scores, ids, [(0.9, "x"), (0.5, "b"), (0.2, "d")])
    assert tiers.tolist() == ["high", "mid", "mid", "low", "low", UNMATCHED]
    # low not full: every scored garment below mid is low
    assert by_cutoffs(scores, ids, [(0.9, "x"), (0.5, "a"), None]).tolist() == [
        "high", "low", "mid", "low", "low", UNMATCHED,
    ]  # fmt: skip
    # nothing full: everything scored is high
    assert by_cutoffs(scores, ids, [None, None, None]).tolist() == ["high"] * 5 + [UNMATCHED]


# Count mode end to end, as pipeline.tier_passes.count_cutoffs runs it (histogram pass, then only the
# boundary bins), checked against a brute-force ranking of all garments.


def _count_mode(scores: np.ndarray, ids: np.ndarray, counts: dict, bins: int, low: float, high: float) -> np.ndarray:
    scored = ~np.isnan(scores)
    garment_bins = score_bins(np.nan_to_num(scores.astype(np.float64), nan=0.0), low, high, bins)
    histogram = np.bincount(garment_bins[scored], minlength=bins)
    assert histogram.shape == (bins,)
    ranks = cumulative_ranks(counts)
    cutoffs = []
    for rank, b in zip(ranks, boundary_bins(histogram, ranks)):
        if b is None:
            cutoffs.append(None)
            continue
        mask = scored & (garment_bins == b)
        cutoffs.append(cutoff_in_bin(scores[mask], ids[mask], int(histogram[b + 1 :].sum()), rank))
    return by_cutoffs(scores, ids, cutoffs)


def _reference(scores: np.ndarray, ids: np.ndarray, counts: dict) -> list[str]:
    ranked = sorted((i for i in range(len(scores)) if not np.isnan(scores[i])), key=lambda i: (-scores[i], ids[i]))
    tiers = [UNMATCHED] * len(scores)
    position = 0
    for tier in TIERS:
        for i in ranked[position : position + counts[tier]]:
            tiers[i] = tier
        position += counts[tier]
    return tiers


def _garments(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # a handful of distinct float32 scores over [-1, 1], the range ends included -> many exact ties
    values = np.float32(np.round(rng.uniform(-1, 1, size=max(2, n // 6)), 2))
    values[:2] = [-1.0, 1.0]
    scores = rng.choice(values, size=n).astype(np.float32)
    scores[rng.random(n) < 0.15] = np.nan
    # string ids whose lexicographic order differs from their numeric order ("g10" < "g9")
    ids = np.array([f"g{i}" for i in rng.permutation(n)], dtype=object)
    return scores, ids


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bins", [1, 2, 7, 64, 4096])
@pytest.mark.parametrize(
    "counts",
    [
        {"high": 3, "mid": 7, "low": 11},  # all tiers full
        {"high": 1, "mid": 1, "low": 1},
        {"high": 20, "mid": 30, "low": 1000},  # low not full
        {"high": 500, "mid": 5, "low": 5},  # high not full: every scored garment is high
        {"high": 0, "mid": 4, "low": 0},  # empty tiers
    ],
)
def test_count_mode_equals_brute_force_ranking(seed: int, bins: int, counts: dict) -> None:
    scores, ids = _garments(seed, 60)
    tiers = _count_mode(scores, ids, counts, bins, -1.0, 1.0)
    reference = _reference(scores, ids, counts)
    assert tiers.tolist() == reference
    n_scored = int((~np.isnan(scores)).sum())
    # tiers hold exactly their counts while enough garments are scored
    remaining = n_scored
    for tier in TIERS:
        assert tiers.tolist().count(tier) == min(counts[tier], remaining)
        remaining -= min(counts[tier], remaining)


@pytest.mark.parametrize("id_dtype", [object, str])
@pytest.mark.parametrize("bins", [1, 3, 1000])
def test_count_mode_tiny_and_more_bins_than_rows(bins: int, id_dtype: type) -> None:
    scores = np.array([0.5, np.nan, 0.5, -0.25, 0.5, 0.75], np.float32)
    ids = np.array(["b", "z", "a", "c", "c2", "d"], dtype=id_dtype)
    counts = {"high": 2, "mid": 2, "low": 5}
    # ranked: (0.75 d), (0.5 a), (0.5 b), (0.5 c2), (-0.25 c); NaN z unmatched
    want = ["mid", UNMATCHED, "high", "low", "mid", "high"]
    assert _count_mode(scores, ids, counts, bins, -1.0, 1.0).tolist() == want
    assert _reference(scores, ids, counts) == want


def test_count_mode_no_scored_garments() -> None:
    scores = np.full(4, np.nan, np.float32)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    for counts in ({"high": 1, "mid": 1, "low": 1}, {"high": 0, "mid": 0, "low": 2}):
        assert _count_mode(scores, ids, counts, 16, -1.0, 1.0).tolist() == [UNMATCHED] * 4
