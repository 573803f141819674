"""Which pairs people review, in which order, and what their labels say about each tier's precision.

Strata: tier x score band. Within a tier, pairs are ranked by (score ascending, then population
order, which is garment_id) and band b of B holds ranks [b*N/B, (b+1)*N/B): equal-count quantile
bands, exact even with tied scores, band 0 the lowest scores. A stratum is named "<tier>/<band>".

Sample: `per_stratum` pairs drawn without replacement from each stratum, by a random permutation
seeded with (seed, stratum index), so the sample depends only on the pairs, the seed, the band
count and `per_stratum`. The review order interleaves the strata (the first draw of every
stratum, then the second of every stratum, ...), so every stratum is labelled early and the
estimate tightens evenly.

Estimate (one tier, strata h with N_h pairs, n_h labelled, a_h accepted, W_h = N_h / N):
    p = sum_h W_h p_h,  p_h = a_h / n_h
    V = sum_h W_h^2 (1 - n_h/N_h) p_h (1 - p_h) / (n_h - 1)
the unbiased stratified estimator and its unbiased variance estimator under simple random sampling
without replacement in each stratum (Cochran, Sampling Techniques, 5.3 and 5.9); a stratum with a
single label (and N_h > 1) contributes its worst case W_h^2 (1 - 1/N_h) / 4. The 95 % interval is
Wilson's score interval at the effective sample size n_eff = p (1 - p) / V (Korn and Graubard
1998), n_eff = sum n_h when p (1 - p) or V is 0: inside [0, 1] by construction and not collapsed
to a point when every label agrees; a census (n_h = N_h everywhere) gives [p, p]. p is undefined
until every stratum of the tier has a label. Skipped pairs are non-response: the estimate treats
the labelled pairs of a stratum as a simple random sample of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from core.tiering import TIER_ORDER, TIERS
from quality.evaluation import Z_95, wilson_interval

UNCERTAIN_HIGH = "uncertain-high"
STRATIFIED = "stratified"
ORDERS = (STRATIFIED, UNCERTAIN_HIGH)


@dataclass(frozen=True)
class Stratum:
    """One tier x score band: `size` pairs (N_h) with scores in [score_min, score_max]."""

    name: str
    tier: str
    band: int
    size: int
    score_min: float
    score_max: float


def stratum_name(tier: str, band: int) -> str:
    return f"{tier}/{band}"


def assign_strata(
    tiers: np.ndarray, scores: np.ndarray, bands: int, tier_order: Sequence[str] = TIER_ORDER
) -> tuple[list[Stratum], np.ndarray]:
    """(strata, stratum index of every row; -1 for a tier outside `tier_order`).

    Strata come in `tier_order`, then band ascending; a tier of N pairs gets min(bands, N) bands;
    a NaN score ranks lowest. Ties in score keep row order (callers pass rows sorted by garment_id).
    """
    if bands < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    tiers = np.asarray(tiers, dtype=object)
    scores = np.asarray(scores, dtype=np.float64)
    of = np.full(len(tiers), -1, dtype=np.int64)
    strata: list[Stratum] = []
    for tier in tier_order:
        rows = np.flatnonzero(tiers == tier)
        if len(rows) == 0:
            continue
        ranked = rows[np.argsort(np.nan_to_num(scores[rows], nan=-np.inf), kind="stable")]
        count = min(bands, len(ranked))
        band_of_rank = np.arange(len(ranked)) * count // len(ranked)
        for band in range(count):
            members = ranked[band_of_rank == band]
            of[members] = len(strata)
            values = scores[members]
            strata.append(
                Stratum(
                    stratum_name(tier, band),
                    tier,
                    band,
                    len(members),
                    float(np.nanmin(values)) if not np.isnan(values).all() else math.nan,
                    float(np.nanmax(values)) if not np.isnan(values).all() else math.nan,
                )
            )
    return strata, of


def stratified_sample(stratum_of: np.ndarray, n_strata: int, per_stratum: int, seed: int) -> list[np.ndarray]:
    """Row indices drawn from each stratum, in draw order: the first min(per_stratum, N_h) of a
    permutation of the stratum's rows (ascending row order) by `default_rng([seed, h])`."""
    if per_stratum < 1:
        raise ValueError(f"per_stratum must be >= 1, got {per_stratum}")
    draws = []
    for h in range(n_strata):
        members = np.flatnonzero(stratum_of == h)
        draws.append(np.random.default_rng([seed, h]).permutation(members)[:per_stratum])
    return draws


def interleave(draws: Sequence[np.ndarray]) -> np.ndarray:
    """Round robin over the strata: draw 0 of each stratum in stratum order, then draw 1, ..."""
    width = max((len(d) for d in draws), default=0)
    order = [int(d[k]) for k in range(width) for d in draws if k < len(d)]
    return np.asarray(order, dtype=np.int64)


def uncertain_high(tiers: np.ndarray, key: np.ndarray, limit: int) -> np.ndarray:
    """The first `limit` high-tier rows by `key` (score or margin) ascending, NaN last, ties in row order."""
    rows = np.flatnonzero(np.asarray(tiers, dtype=object) == TIERS[0])
    values = np.nan_to_num(np.asarray(key, dtype=np.float64)[rows], nan=np.inf)
    return rows[np.argsort(values, kind="stable")][:limit]


@dataclass(frozen=True)
class Estimate:
    """A stratified precision estimate of one tier (see the module docstring). `value`, `low`,
    `high`, `variance`, `n_eff` are None until every stratum has a label."""

    value: float | None
    low: float | None
    high: float | None
    variance: float | None
    n_eff: float | None
    labels: int  # sum n_h
    accepted: int  # sum a_h
    population: int  # N
    strata: int  # H
    covered: int  # strata with at least one label

    def as_dict(self) -> dict:
        return asdict(self)


def stratified_estimate(
    sizes: Sequence[int], accepted: Sequence[int], labels: Sequence[int], z: float = Z_95
) -> Estimate:
    """The estimate of a tier from its strata's population sizes N_h, accepts a_h and labels n_h
    (0 <= a_h <= n_h <= N_h); see the module docstring for the formulas."""
    n_pop = np.asarray(sizes, dtype=np.float64)
    a = np.asarray(accepted, dtype=np.float64)
    n = np.asarray(labels, dtype=np.float64)
    if not (len(n_pop) == len(a) == len(n)) or (a < 0).any() or (a > n).any() or (n > n_pop).any():
        raise ValueError(f"need 0 <= accepted <= labels <= sizes, got {list(accepted)}, {list(labels)}, {list(sizes)}")
    total, covered = float(n_pop.sum()), int((n > 0).sum())
    counts = dict(labels=int(n.sum()), accepted=int(a.sum()), population=int(total), strata=len(n_pop), covered=covered)
    if total == 0 or covered < len(n_pop):
        return Estimate(None, None, None, None, None, **counts)
    weight, p_h = n_pop / total, a / n
    fpc = 1.0 - n / n_pop
    spread = np.where(n > 1, p_h * (1 - p_h) / np.maximum(n - 1, 1), 0.25)
    variance = float(np.sum(weight**2 * fpc * spread))
    p = float(np.sum(weight * p_h))
    if (n == n_pop).all():
        return Estimate(p, p, p, 0.0, float(n.sum()), **counts)
    n_eff = p * (1 - p) / variance if p * (1 - p) > 0 and variance > 0 else float(n.sum())
    low, high = wilson_interval(p * n_eff, n_eff, z)  # Wilson's formula only needs p and n, integer or not
    return Estimate(p, low, high, variance, n_eff, **counts)
