"""Calibration: the confidence features and model, Learn-then-Test cut-offs, re-tiering stored pairs."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from core import tiering
from core.confidence import FEATURES, Confidence, pair_features
from core.config import TierConfig
from core.schemas import PAIRS
from pipeline.tier_passes import assign
from quality import calibration
from quality.retier import retiered

TARGETS = {"high": 0.95, "mid": 0.8, "low": 0.5}


def pairs_table(rows: list[dict]) -> pa.Table:
    """A PAIRS table from the given columns of each row (the others null)."""
    return pa.Table.from_pylist([{name: row.get(name) for name in PAIRS.names} for row in rows], schema=PAIRS)


def test_features_measure_how_much_nearer_the_best_is_than_every_other_candidate() -> None:
    pairs = pairs_table(
        [
            # the best is the nearest: gap = 0.9 - 0.7
            {"s_vlm": 0.5, "s_siglip": 0.9, "margin": 0.1, "candidate_s_siglip": [0.9, 0.7, 0.2], "crop_margin": -0.3},
            # a farther candidate won on S_VLM: gap = 0.6 - 0.8 (negative)
            {"s_vlm": 0.9, "s_siglip": 0.6, "margin": 0.05, "candidate_s_siglip": [0.8, 0.6], "crop_margin": 0.2},
            # one candidate, no other garment holding its crop
            {"s_vlm": 0.3, "s_siglip": 0.4, "margin": None, "candidate_s_siglip": [0.4], "crop_margin": None},
            {"candidate_s_siglip": []},  # no candidate
        ]
    )
    features = pair_features(pairs)
    assert FEATURES == ("s_vlm", "s_siglip", "margin", "siglip_gap", "crop_margin")
    np.testing.assert_allclose(
        features[:3], [[0.5, 0.9, 0.1, 0.2, -0.3], [0.9, 0.6, 0.05, -0.2, 0.2], [0.3, 0.4, 0, 0, 0]], atol=1e-6
    )
    assert np.isnan(features[3]).all()


def test_fitted_confidence_recovers_the_direction_of_each_feature() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(4000, len(FEATURES)))
    logits = 2.0 * features[:, 1] + 1.0 * features[:, 3] - 1.0
    true = rng.random(4000) < 1 / (1 + np.exp(-logits))
    model = calibration.fit_confidence(features, true)
    weights = dict(zip(model.features, np.asarray(model.weights) / np.asarray(model.scale)))
    assert weights["s_siglip"] == pytest.approx(2.0, abs=0.3) and weights["siglip_gap"] == pytest.approx(1.0, abs=0.3)
    assert all(abs(weights[name]) < 0.2 for name in ("s_vlm", "margin", "crop_margin"))
    assert Confidence.from_dict(model.as_dict()) == model  # round trip through a config


def test_clopper_pearson_bounds_are_exact_binomial_bounds() -> None:
    low, high = calibration.clopper_pearson(5, 10, 0.05)
    assert (round(low, 4), round(high, 4)) == (0.1871, 0.8129)
    assert calibration.clopper_pearson(0, 10, 0.05)[0] == 0.0 and calibration.clopper_pearson(10, 10, 0.05)[1] == 1.0
    # the one-sided lower bound: P[Binomial(n, bound) >= hits] = delta
    bound = calibration.lower_bound(57, 60, 0.05)
    assert stats.binom.sf(56, 60, bound) == pytest.approx(0.05)
    # the walk starts where 2.5 % errors (half the 5 % allowed) pass: 3 of 153 pass, 3 of 152 do not
    assert calibration.first_count(0.95, 0.05) == 153
    assert stats.binom.cdf(3, 153, 0.05) <= 0.05 < stats.binom.cdf(3, 152, 0.05)


def _calibrated_sample(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences whose pairs are true with probability equal to the confidence."""
    confidence = rng.beta(4, 1, n)
    return confidence, rng.random(n) < confidence


def test_certified_tiers_reach_their_target_on_fresh_pairs_as_often_as_promised() -> None:
    """Each trial certifies on 1,500 labelled pairs; the tier's true precision is the mean confidence of
    the pairs its cut-offs accept (pairs are true with probability = confidence). Failures of the
    target must be at most about delta of the trials."""
    rng = np.random.default_rng(1)
    delta, trials = 0.1, 200
    failures = {tier: 0 for tier in tiering.TIERS}
    certified = {tier: 0 for tier in tiering.TIERS}
    population = rng.beta(4, 1, 200_000)
    for _ in range(trials):
        confidence, true = _calibrated_sample(rng, 1500)
        upper = np.inf
        for cut in calibration.certify(confidence, true, TARGETS, delta, step=15):
            if cut.cutoff is None:
                continue
            certified[cut.tier] += 1
            inside = population[(population >= cut.cutoff) & (population < upper)]
            failures[cut.tier] += inside.mean() < cut.target
            upper = cut.cutoff
    assert certified["high"] > trials / 2 and certified["mid"] > trials / 5  # the test has power
    assert all(failures[tier] <= delta * trials + 2 * math.sqrt(delta * trials) for tier in tiering.TIERS)


def test_noise_certifies_no_tier_whose_target_it_cannot_reach() -> None:
    rng = np.random.default_rng(2)
    confidence, true = rng.random(3000), rng.random(3000) < 0.45  # labels unrelated to confidence
    cuts = calibration.certify(confidence, true, TARGETS, 0.05)
    assert [c.cutoff is None for c in cuts] == [True, True, True]
    assert calibration.thresholds(cuts) == {"high": None, "mid": None, "low": None}
    assert cuts[0].labelled == 0 and cuts[0].precision is None and not cuts[0].certified


def test_tiers_split_where_certify_cut_and_their_bounds_hold_in_sample() -> None:
    rng = np.random.default_rng(3)
    confidence, true = _calibrated_sample(rng, 5000)
    cuts = calibration.certify(confidence, true, TARGETS, 0.05)
    tiers = tiering.by_threshold(confidence, calibration.thresholds(cuts))
    for cut in cuts:
        inside = tiers == cut.tier
        assert inside.sum() == cut.labelled and (~true[inside]).sum() == cut.errors
        if cut.certified:
            assert cut.lower_bound >= cut.target  # what the binomial test rejected, the bound confirms
    evaluated = calibration.tier_precision(tiers, true, 0.05)
    assert evaluated["high"]["labelled"] == cuts[0].labelled
    assert evaluated["high"]["interval"][0] == pytest.approx(cuts[0].lower_bound)


def test_a_missing_threshold_leaves_its_tier_empty() -> None:
    tiers = tiering.by_threshold(np.array([0.99, 0.6, 0.3, np.nan]), {"high": None, "mid": 0.5, "low": 0.2})
    assert tiers.tolist() == ["mid", "mid", "low", tiering.UNMATCHED]


def _scored_rows() -> list[dict]:
    return [
        {"garment_id": "g1", "crop_id": "c1", "s_vlm": 0.9, "s_siglip": 0.95, "score": 0.9, "margin": 0.3,
         "candidate_s_siglip": [0.95, 0.5]},
        {"garment_id": "g2", "crop_id": "c2", "s_vlm": 0.2, "s_siglip": 0.6, "score": 0.4, "margin": 0.01,
         "candidate_s_siglip": [0.6, 0.59]},
        {"garment_id": "g3", "candidate_s_siglip": []},
    ]  # fmt: skip


def test_the_job_and_the_calibrate_tool_tier_a_calibrated_config_alike() -> None:
    model = Confidence(("s_siglip", "siglip_gap"), (0.5, 0.0), (0.1, 0.1), (1.0, 2.0), 0.0)
    cfg = TierConfig(mode="calibrated", thresholds={"high": 0.99, "mid": 0.5, "low": None}, calibration=model.as_dict())
    scored = pairs_table(_scored_rows()).drop_columns(["tier", "confidence"])
    by_job = assign(scored, cfg, None)
    by_tool = retiered(pairs_table(_scored_rows()), model, cfg.thresholds)
    assert by_job.schema == PAIRS and by_tool.schema == PAIRS
    assert by_job["tier"].to_pylist() == by_tool["tier"].to_pylist() == ["high", "mid", tiering.UNMATCHED]
    confidence = by_job["confidence"].to_pylist()
    # logits: 4.5 + 2 * 4.5 and 1 + 2 * 0.1 (standardised s_siglip and siglip_gap)
    assert confidence[:2] == pytest.approx([1 / (1 + math.exp(-13.5)), 1 / (1 + math.exp(-1.2))], rel=1e-6)
    assert math.isnan(confidence[2])
    # other modes leave the confidence null
    plain = assign(scored, TierConfig(thresholds={"high": 0.85, "mid": 0.7, "low": 0.3}), None)
    assert np.isnan(plain["confidence"].to_numpy()).all() and plain["tier"].to_pylist() == [
        "high",
        "low",
        tiering.UNMATCHED,
    ]


def test_weighted_labels_count_as_their_effective_sample() -> None:
    rng = np.random.default_rng(4)
    confidence, true = _calibrated_sample(rng, 3000)
    plain = calibration.certify(confidence, true, TARGETS, 0.05)
    assert calibration.certify(confidence, true, TARGETS, 0.05, weights=np.full(3000, 7.0)) == plain  # scale-free
    # labels drawn at unequal rates: half the pairs stand for 9 pairs each, so fewer effective labels
    weights = np.where(rng.random(3000) < 0.5, 9.0, 1.0)
    weighted = calibration.certify(confidence, true, TARGETS, 0.05, weights=weights)
    high = weighted[0]
    assert high.cutoff is not None and high.lower_bound < high.precision
    inside = np.argsort(-confidence, kind="stable")[: high.labelled]
    hits, total = calibration.effective_counts(true[inside], weights[inside])
    assert total < high.labelled and hits / total == pytest.approx(high.precision)
    assert high.lower_bound == pytest.approx(calibration.lower_bound(hits, total, 0.05))
    assert calibration.binomial_p(3, 153, 0.95) == pytest.approx(stats.binom.cdf(3, 153, 0.05))


def test_review_labels_weigh_the_stratified_sample_and_keep_other_queues_for_fitting(tmp_path) -> None:
    import pyarrow.parquet as pq

    from jobs.calibrate import labels_of
    from review.store import ReviewStore

    rows = [
        {"garment_id": f"g{i}", "crop_id": f"c{i}", "image_id": f"i{i}", "tier": "high" if i < 4 else "low",
         "score": 1 - i / 10, "candidate_s_siglip": [0.5]}
        for i in range(8)
    ]  # fmt: skip
    (tmp_path / "run" / "pairs").mkdir(parents=True)
    pairs = pairs_table(rows)
    pq.write_table(pairs, tmp_path / "run" / "pairs" / "part-0.parquet")
    store = ReviewStore(tmp_path / "review.sqlite")
    for i, decision, stratum, queue in [
        (0, "accept", "high/0", "stratified"),
        (1, "accept", "uncertain-high", "uncertain-high"),
        (4, "reject", "low/0", "stratified"),
        (5, "accept", "low/0", "stratified"),
        (6, "skip", "low/0", "stratified"),  # a skip is no label
    ]:
        row = rows[i]
        key = (row["garment_id"], row["crop_id"])
        store.decide("ann", key, decision, image_id=row["image_id"], stratum=stratum, queue=queue,
                     tier=row["tier"], score=row["score"])  # fmt: skip
    labels = labels_of(pairs, str(tmp_path / "review.sqlite"), tmp_path / "run", bands=1)
    assert labels.labelled.tolist() == [True, True, False, False, True, True, False, False]
    assert labels.true.tolist() == [True, True, False, False, False, True, False, False]
    # strata high/0 and low/0 hold 4 pairs each: 1 and 2 of them labelled from the random sample
    assert labels.weights.tolist() == [4.0, 0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]
    assert labels.drawn.tolist() == [True, False, False, False, True, True, False, False]
