"""Crop margins: in memory against a brute-force definition, and the job's shuffle by crop against memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import ray

from core import crop_rivals
from core.config import ScoringConfig
from pipeline.tier_passes import with_crop_margins
from quality.evaluation import best_of_candidates, element


def random_pairs(seed: int, garments: int = 60, crops: int = 25, k: int = 6) -> pa.Table:
    """Garments with up to k distinct candidate crops each (some none) and random cosines; scores
    rounded to 0.05 so that equal scores (ties) are common."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(garments):
        n = int(rng.integers(0, k + 1))
        rows.append(
            {
                "garment_id": f"g{g:03d}",
                "candidate_crop_ids": [f"c{c:03d}" for c in rng.choice(crops, n, replace=False)],
                "candidate_s_vlm": np.round(rng.uniform(-1, 1, n) * 20) / 20,
                "candidate_s_siglip": np.round(rng.uniform(-1, 1, n) * 20) / 20,
            }
        )
    types = {"candidate_s_vlm": pa.list_(pa.float32()), "candidate_s_siglip": pa.list_(pa.float32())}
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema([("garment_id", pa.string()), ("candidate_crop_ids", pa.list_(pa.string())), *types.items()]),
    )


def brute_force(pairs: pa.Table, lambdas: tuple[float, float], crop_ids: list, scores: np.ndarray) -> np.ndarray:
    """The definition: score minus the best score of the same crop among the other garments' candidates."""
    claims: dict[str, list[tuple[str, float]]] = {}
    for row in pairs.to_pylist():
        for crop, v, s in zip(row["candidate_crop_ids"], row["candidate_s_vlm"], row["candidate_s_siglip"]):
            score = np.float32(lambdas[0]) * np.float32(v) + np.float32(lambdas[1]) * np.float32(s)
            claims.setdefault(crop, []).append((row["garment_id"], float(np.float32(score))))
    out = []
    for garment, crop, score in zip(pairs["garment_id"].to_pylist(), crop_ids, scores):
        rivals = [s for g, s in claims.get(crop, []) if g != garment] if crop is not None else []
        out.append(score - max(rivals) if rivals else np.nan)
    return np.array(out, np.float32)


@pytest.mark.parametrize("lambdas", [(0.5, 0.5), (0.0, 1.0), (0.3, 0.7)])
def test_crop_margins_in_memory_follow_the_definition(lambdas):
    for seed in range(5):
        pairs = random_pairs(seed)
        match = best_of_candidates(pairs, *lambdas)
        crop_ids = element(pairs["candidate_crop_ids"].combine_chunks(), match.index)
        got = crop_rivals.crop_margins(pairs, *lambdas, crop_ids, match.score)
        want = brute_force(pairs, lambdas, crop_ids.to_pylist(), match.score)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert np.isnan(got).sum() == np.isnan(want).sum() > 0  # no candidate, or a crop only one garment holds


def test_top_two_of_each_group_equals_top_two_of_all():
    """What the job's group-by computes crop by crop is what the whole table gives at once."""
    claimed = crop_rivals.claims(random_pairs(7), 0.5, 0.5)
    whole = crop_rivals.top_two(claimed).to_pylist()
    crop_ids = claimed["crop_id"].to_numpy(zero_copy_only=False)
    grouped = [
        crop_rivals.top_two(claimed.filter(pa.array(crop_ids == c))).to_pylist()[0] for c in sorted(set(crop_ids))
    ]
    assert whole == grouped and crop_rivals.top_two(claimed.slice(0, 0)).num_rows == 0


def test_job_crop_margins_equal_those_in_memory(local_ray):
    pairs = random_pairs(11, garments=200, crops=80)
    scoring = ScoringConfig(lambda_vlm=0.3, lambda_siglip=0.7)
    match = best_of_candidates(pairs, scoring.lambda_vlm, scoring.lambda_siglip)
    crop_ids = element(pairs["candidate_crop_ids"].combine_chunks(), match.index)
    scored = pairs.append_column("crop_id", crop_ids).append_column("score", pa.array(match.score, pa.float32()))
    ds = with_crop_margins(ray.data.from_arrow(scored).repartition(5), scoring, partitions=3)
    got = {row["garment_id"]: row["crop_margin"] for row in ds.take_all()}
    want = crop_rivals.crop_margins(pairs, scoring.lambda_vlm, scoring.lambda_siglip, crop_ids, match.score)
    ids = pairs["garment_id"].to_pylist()
    np.testing.assert_allclose([got[g] for g in ids], want, atol=0)
