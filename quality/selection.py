"""Which pairs a report shows: a seeded sample per tier, the pairs on either side of each tier's
lower boundary, and the crops chosen as the best match of the most garments. Pure numpy/pyarrow
over whole columns (a million rows take well under a second)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.tiering import TIER_ORDER, TIERS


def tier_codes(tiers: pa.Array) -> np.ndarray:
    """(n,) int8 position of each row's tier in `TIER_ORDER`, -1 for a null or unknown tier."""
    codes = pc.index_in(tiers, value_set=pa.array(TIER_ORDER)).fill_null(-1)
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def tier_counts(codes: np.ndarray) -> dict[str, int]:
    """Rows per tier of `TIER_ORDER`, plus `other` (null or unknown tier) when there are any."""
    counts = np.bincount(codes + 1, minlength=len(TIER_ORDER) + 1)
    out = {tier: int(counts[i + 1]) for i, tier in enumerate(TIER_ORDER)}
    return {**out, "other": int(counts[0])} if counts[0] else out


def ranked(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`rows` by `key` descending, then row ascending (NaN keys last)."""
    values = np.nan_to_num(key[rows], nan=-np.inf)
    return rows[np.lexsort((rows, -values))]


def sample_per_tier(codes: np.ndarray, key: np.ndarray, per_tier: int, seed: int) -> dict[str, np.ndarray]:
    """Per tier of `TIER_ORDER`: at most `per_tier` of its rows drawn without replacement
    (numpy Generator seeded with `seed`, drawn tier by tier in that order), shown by `key` descending."""
    rng = np.random.default_rng(seed)
    out = {}
    for code, tier in enumerate(TIER_ORDER):
        rows = np.flatnonzero(codes == code)
        if len(rows) > per_tier:
            rows = np.sort(rng.choice(rows, size=per_tier, replace=False))
        out[tier] = ranked(rows, key)
    return out


@dataclass(frozen=True)
class Boundary:
    """The lower boundary of `tier`: `inside`, its rows with the lowest key, and `below`, the rows of
    the next tier (`below_tier`) with the highest; both by key descending, so `inside` then `below`
    reads down across the boundary. Rows without a key (no candidate) are never near a boundary."""

    tier: str
    below_tier: str
    inside: np.ndarray
    below: np.ndarray


def _extreme(rows: np.ndarray, key: np.ndarray, n: int, lowest: bool) -> np.ndarray:
    """The `n` rows with the lowest (or highest) key, by key descending."""
    if len(rows) > n:
        values = key[rows] if lowest else -key[rows]
        rows = rows[np.argpartition(values, n - 1)[:n]]
    return ranked(rows, key)


def boundaries(codes: np.ndarray, key: np.ndarray, n: int) -> list[Boundary]:
    """One `Boundary` per tier of high / mid / low with `n` rows on each side (fewer where a tier
    has fewer); a tier with no keyed row is left out."""
    keyed = ~np.isnan(key)
    out = []
    for code, tier in enumerate(TIERS):
        inside = np.flatnonzero((codes == code) & keyed)
        if not len(inside):
            continue
        below = np.flatnonzero((codes == code + 1) & keyed)
        out.append(Boundary(tier, TIER_ORDER[code + 1], _extreme(inside, key, n, True), _extreme(below, key, n, False)))
    return out


def most_chosen(crop_ids: pa.Array, top: int, at_least: int = 2) -> pa.Table:
    """The `top` crops that are the best match of the most garments (at least `at_least` each):
    crop_id, garments (how many pairs name it) and row (its first row), by garments descending,
    then crop_id ascending. Null crop_ids (no candidate) are not counted."""
    table = pa.table({"crop_id": crop_ids, "row": pa.array(np.arange(len(crop_ids)), pa.int64())})
    table = table.filter(pc.is_valid(table["crop_id"]))
    counts = table.group_by("crop_id").aggregate([("row", "count"), ("row", "min")])
    counts = pa.table({"crop_id": counts["crop_id"], "garments": counts["row_count"], "row": counts["row_min"]})
    counts = counts.filter(pc.greater_equal(counts["garments"], at_least))
    return counts.sort_by([("garments", "descending"), ("crop_id", "ascending")]).slice(0, top)
