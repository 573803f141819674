"""Calibration: from labelled pairs, a confidence per pair (`core.confidence`) and the confidence
cut-off of each tier, certified by Learn-then-Test so that the tier's precision reaches its target.

Certification (Angelopoulos et al., "Learn then Test", 2021; fixed-sequence testing). Per tier, in
the order high, mid, low, candidate cut-offs are walked from the strictest; the pairs a cut-off
accepts into the tier are those with confidence >= it and below the cut-off of the tier above.
At each one the null hypothesis "precision < target" is tested with the exact binomial test of the
errors among the accepted labelled pairs (p = P[Binomial(n, 1 - target) <= errors]); it is rejected
when p <= delta. The walk stops at the first cut-off whose null is not rejected, and the tier keeps
the last rejected one: then precision >= target holds with probability >= 1 - delta per tier
(>= 1 - 3 delta for all three at once), for pairs exchangeable with the labelled ones.

The walk's order must not depend on the labels: candidate cut-offs are the confidences of the
labelled pairs at fixed counts accepted, starting at `first_count` (the count at which a tier half
as wrong as allowed would pass: 153 pairs for 0.95 at delta 0.05), then every `step` more pairs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats

from core.confidence import FEATURES, Confidence, standardised
from core.tiering import TIERS

L2 = 1e-3  # ridge penalty on the standardised weights (the bias is not penalised)


def fit_confidence(features: np.ndarray, true: np.ndarray, names: Sequence[str] = FEATURES) -> Confidence:
    """Logistic regression of `true` (n,) bool on the `names` columns of `features` (n, len(FEATURES)),
    rows with a NaN dropped, by L-BFGS on the mean log loss plus L2 * |w|^2."""
    keep = ~np.isnan(features).any(axis=1)
    z, mean, scale = standardised(features[keep], names)
    y = true[keep].astype(np.float64)
    design = np.hstack([np.ones((len(z), 1)), z])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = design @ theta
        value = np.mean(np.logaddexp(0.0, logits) - y * logits) + L2 * theta[1:] @ theta[1:]
        gradient = design.T @ (1.0 / (1.0 + np.exp(-logits)) - y) / len(y)
        gradient[1:] += 2 * L2 * theta[1:]
        return value, gradient

    prior = np.clip(y.mean() if len(y) else 0.5, 1e-6, 1 - 1e-6)
    start = np.zeros(design.shape[1])
    start[0] = math.log(prior / (1 - prior))
    theta = optimize.minimize(loss, start, jac=True, method="L-BFGS-B").x
    return Confidence(
        features=tuple(names),
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        weights=tuple(theta[1:].tolist()),
        bias=float(theta[0]),
    )


def clopper_pearson(hits: int, total: int, alpha: float) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) interval of the proportion hits / total; (NaN, NaN) when total is 0.
    Its lower end at alpha = 2 * delta is the one-sided (1 - delta) lower bound."""
    if total == 0:
        return math.nan, math.nan
    low = stats.beta.ppf(alpha / 2, hits, total - hits + 1) if hits > 0 else 0.0
    high = stats.beta.ppf(1 - alpha / 2, hits + 1, total - hits) if hits < total else 1.0
    return float(low), float(high)


def lower_bound(hits: int, total: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson lower bound of hits / total (NaN when total is 0)."""
    return clopper_pearson(hits, total, 2 * delta)[0]


@functools.cache
def first_count(target: float, delta: float, most: int = 100_000) -> int:
    """Where a tier's walk starts: the fewest accepted pairs at which a tier with half the errors
    the target allows (precision 1 - (1 - target) / 2) passes the test at level delta. Fewer pairs
    would fail at once even on a good tier and end the walk; this depends on no label."""
    n = np.arange(1, most + 1)
    allowed = 1 - target
    passing = stats.binom.cdf(np.floor(n * allowed / 2), n, allowed) <= delta
    return int(n[np.argmax(passing)]) if passing.any() else most


@dataclass(frozen=True)
class TierCut:
    """A tier's certified cut-off (None: no cut-off passed, the tier is empty) and the labelled pairs
    it accepts into the tier: `labelled`, `errors`, `precision` and its (1 - delta) `lower_bound`."""

    tier: str
    target: float
    cutoff: float | None
    labelled: int
    errors: int
    precision: float | None
    lower_bound: float | None

    @property
    def certified(self) -> bool:
        return self.cutoff is not None

    def as_dict(self) -> dict:
        return {**asdict(self), "certified": self.certified}


def binomial_p(errors: float, n: float, target: float) -> float:
    """P[Binomial(n, 1 - target) <= errors]: the p-value of "precision < target" given `errors` of
    `n`; continuous in both (the regularised incomplete beta), so effective counts work too."""
    return 1.0 if errors >= n else float(special.betainc(n - errors, errors + 1, target))


def effective_counts(true: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(hits, total) of weighted labels at Kish's effective sample size (sum w)^2 / sum w^2, with the
    weighted proportion of hits: the plain counts when every weight is equal."""
    if not len(weights):
        return 0.0, 0.0
    total = weights.sum() ** 2 / (weights**2).sum()
    return total * (weights * true).sum() / weights.sum(), total


def _walk(confidence: np.ndarray, true: np.ndarray, weights: np.ndarray, target: float, delta: float, step: int) -> int:
    """How many of the pairs (sorted by confidence descending) the tier keeps: the last count of the
    fixed sequence first_count, +step, ... whose binomial test rejects "precision < target"; 0 if none."""
    kept = 0
    total, squares, hits = np.cumsum(weights), np.cumsum(weights**2), np.cumsum(weights * true)
    for n in range(first_count(target, delta), len(confidence) + 1, step):
        if confidence[n - 1] == (confidence[n] if n < len(confidence) else -np.inf):
            continue  # a cut-off between equal confidences is no cut-off: try the next count
        size = total[n - 1] ** 2 / squares[n - 1]
        if binomial_p(size * (1 - hits[n - 1] / total[n - 1]), size, target) > delta:
            break
        kept = n
    return kept


def certify(
    confidence: np.ndarray,
    true: np.ndarray,
    targets: Mapping[str, float],
    delta: float,
    step: int | None = None,
    weights: np.ndarray | None = None,
) -> list[TierCut]:
    """The cut-off of each tier (high, mid, low) over labelled pairs: (n,) `confidence` and `true`
    (NaN confidences, pairs without a candidate, are left out). `step`: pairs between two candidate
    cut-offs (default: 1 % of the labelled pairs, at least 1). `weights`: each label's inverse
    inclusion probability when the labels are a stratified sample (the tests then use Kish's
    effective counts, an approximation); None for labels of every pair or a simple random sample
    (exact binomial tests). A tier that certifies nothing is empty and the next tier starts where
    the previous one ended; `precision` is weighted, `labelled` and `errors` count labels."""
    scored = ~np.isnan(confidence)
    order = np.argsort(-confidence[scored], kind="stable")
    confidence, true = confidence[scored][order], true[scored][order].astype(bool)
    weights = np.ones(len(confidence)) if weights is None else np.asarray(weights, np.float64)[scored][order]
    step = step or max(1, len(confidence) // 100)
    cuts, start = [], 0
    for tier in TIERS:
        kept = _walk(confidence[start:], true[start:], weights[start:], targets[tier], delta, step)
        inside, mass = true[start : start + kept], weights[start : start + kept]
        hits, total = effective_counts(inside, mass)
        cuts.append(
            TierCut(
                tier=tier,
                target=float(targets[tier]),
                cutoff=float(confidence[start + kept - 1]) if kept else None,
                labelled=kept,
                errors=int(kept - inside.sum()),
                precision=float((mass * inside).sum() / mass.sum()) if kept else None,
                lower_bound=lower_bound(hits, total, delta) if kept else None,
            )
        )
        start += kept
    return cuts


def thresholds(cuts: Sequence[TierCut]) -> dict[str, float | None]:
    """tiers.thresholds of a calibrated config: each tier's cut-off (None: the tier is empty)."""
    return {cut.tier: cut.cutoff for cut in cuts}


def tier_precision(
    tiers: np.ndarray, true: np.ndarray, delta: float, weights: np.ndarray | None = None
) -> dict[str, dict]:
    """Per tier: labelled pairs, hits, precision and its two-sided (1 - 2 delta) Clopper-Pearson
    interval (whose lower end is the one-sided (1 - delta) bound), at effective counts when the
    labels are `weights`ed (see `certify`). tiers: (n,) tier names."""
    weights = np.ones(len(tiers)) if weights is None else np.asarray(weights, np.float64)
    out = {}
    for tier in TIERS:
        inside = tiers == tier
        hits, total = effective_counts(true[inside], weights[inside])
        low, high = clopper_pearson(hits, total, 2 * delta)
        out[tier] = {
            "labelled": int(inside.sum()),
            "hits": int(true[inside].sum()),
            "precision": hits / total if total else None,
            "interval": [None if math.isnan(low) else low, None if math.isnan(high) else high],
        }
    return out
