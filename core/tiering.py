"""Confidence tiers: by score thresholds, or exactly the top-N garments by score (two-pass, streaming).

Count mode ranks garments by (score descending, garment_id ascending), so ties are broken
deterministically and the tiers hold exactly `counts[tier]` garments when enough are matched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TIERS = ("high", "mid", "low")
UNMATCHED = "unmatched"
TIER_ORDER = (*TIERS, UNMATCHED)  # every value of the tier column, best first

Cutoff = tuple[float, str]  # the (key, garment_id) of the last garment inside a tier
KEYS = ("score", "score_plus_crop_margin")  # what tiers rank a pair by (TierConfig.key)


def tier_key(scores: np.ndarray, crop_margins: np.ndarray | None, key: str) -> np.ndarray:
    """(n,) float32 value a pair is tiered by: its score S, or S plus its crop margin
    (`core.crop_rivals`; NaN, no other garment claiming the crop, counts 0). NaN where S is NaN."""
    scores = np.asarray(scores, np.float32)
    if key == "score":
        return scores
    return (scores + np.nan_to_num(np.asarray(crop_margins, np.float32), nan=0.0)).astype(np.float32)


def key_range(key: str, width: float) -> tuple[float, float]:
    """The range of `tier_key` values when scores lie in [-width, width]: a crop margin lies in [-2w, 2w]."""
    return (-width, width) if key == "score" else (-3 * width, 3 * width)


def by_threshold(scores: np.ndarray, thresholds: Mapping[str, float | None]) -> np.ndarray:
    """Tier per score: the first of high/mid/low whose threshold the score reaches, else
    `unmatched` (NaN scores, i.e. garments without a candidate, are unmatched); a None threshold
    leaves its tier empty. Thresholds are compared in the scores' dtype, so a float32 score of 0.7
    reaches a threshold of 0.7. (n,) object."""
    tiers = np.full(len(scores), UNMATCHED, dtype=object)
    for tier in reversed(TIERS):
        if thresholds[tier] is not None:
            tiers[scores >= np.asarray(thresholds[tier], dtype=scores.dtype)] = tier
    return tiers


def cumulative_ranks(counts: Mapping[str, int]) -> list[int]:
    """The 1-based rank of the last garment of each tier: high, high+mid, high+mid+low."""
    return np.cumsum([counts[tier] for tier in TIERS]).tolist()


def boundary_bins(histogram: np.ndarray, ranks: Sequence[int]) -> list[int | None]:
    """For each 1-based rank (counted from the highest score), the histogram bin that holds it;
    None where fewer garments than `rank` have a score. histogram: (bins,) counts, low bin first."""
    from_top = np.cumsum(histogram[::-1])
    total = int(from_top[-1]) if len(from_top) else 0
    return [len(histogram) - 1 - int(np.searchsorted(from_top, r)) if r <= total else None for r in ranks]


def cutoff_in_bin(scores: np.ndarray, ids: np.ndarray, above: int, rank: int) -> Cutoff:
    """The cutoff of the garment at 1-based `rank`, given the scores and ids of every garment in
    its bin and the number `above` of garments in higher bins. Rank 0 (an empty tier, e.g.
    counts.high = 0) gives a cutoff above every score, so the tier holds no garment."""
    if rank < 1:
        return float("inf"), ""
    order = np.lexsort((ids, -scores))
    position = order[rank - above - 1]
    return float(scores[position]), str(ids[position])


def by_cutoffs(scores: np.ndarray, ids: np.ndarray, cutoffs: Sequence[Cutoff | None]) -> np.ndarray:
    """Tier per garment: inside high if (score, -id) >= high's cutoff, and so on; a None cutoff
    means the tier is not full, so every scored garment not in a higher tier belongs to it."""
    tiers = np.full(len(scores), UNMATCHED, dtype=object)
    scored = ~np.isnan(scores)
    for tier, cutoff in reversed(list(zip(TIERS, cutoffs))):
        if cutoff is None:
            inside = scored
        else:
            score, garment_id = cutoff
            inside = scored & ((scores > score) | ((scores == score) & (ids <= garment_id)))
        tiers[inside] = tier
    return tiers


def score_bins(scores: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    """Histogram bin of each score over [low, high] in `bins` equal bins (clipped at both ends). (n,) int64."""
    position = np.floor((scores.astype(np.float64) - low) / (high - low) * bins)
    return np.clip(position, 0, bins - 1).astype(np.int64)


def cutoffs_in_memory(scores: np.ndarray, ids: np.ndarray, counts: Mapping[str, int]) -> list[Cutoff | None]:
    """The count-mode cutoffs from every score at once: the same cutoffs the job's two streaming
    passes find (every scored garment treated as one bin). NaN scores are not ranked."""
    scored = ~np.isnan(scores)
    n = int(scored.sum())
    return [
        cutoff_in_bin(scores[scored], ids[scored], 0, rank) if rank <= n else None for rank in cumulative_ranks(counts)
    ]
