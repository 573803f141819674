"""Calibrate a run's tiers from labelled pairs, or apply a calibration to another run (no model runs).

python -m jobs.calibrate RUN --labels (SPLIT_DIR | REVIEW_DB) [--out DIR] [key=value ...]
python -m jobs.calibrate RUN --apply CALIBRATION.json [--labels ...] [--out DIR]

Fit: labels are a benchmark split (every pair judged by its truth) or the review app's SQLite file
(the reviewed pairs). With a split, lambda_vlm is chosen first on a grid (lambda_vlm + lambda_siglip
kept), by the number of true best matches, and the best candidates are re-picked; review labels
judge only the pair a reviewer saw, so the run's lambdas stay. Then the confidence model
(core.confidence) is fitted and each tier's cut-off certified (quality.calibration). key=value
overrides apply to the run's config (e.g. tiers.target_precision.high=0.9, tiers.delta=0.1).

Apply: the lambdas, confidence and cut-offs of a calibration.json made on other labels; with
--labels, the tiers' precision on these held-out labels, with Clopper-Pearson intervals.

Writes DIR (default RUN/calibrated): pairs/ (the re-tiered pairs, with `confidence`),
calibration.json, tiers.yaml (the conf overlay for the next run) and README.md (the data card).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from core.confidence import Confidence, pair_features
from core.config import MineConfig, load_config
from core.data_card import CARD, data_card
from core.schemas import CROPS_DIR, PAIRS_DIR
from core.tiering import TIER_ORDER
from quality import calibration, evaluation
from quality.labels import from_review, from_truth, label_rows
from quality.retier import repicked, retiered
from quality.runs import read_split
from quality.tables import format_calibration
from review.pairs import read_population
from review.sampling import assign_strata
from review.store import read_labels

LAMBDA_GRID = 11  # lambda_vlm / (lambda_vlm + lambda_siglip) in 0, 0.1, ..., 1


@dataclass(frozen=True)
class Labels:
    """Per pair of a run: `labelled` and `true` (n,) bool; `weights` (n,) the label's weight when
    certifying and estimating precision: 1 for a benchmark's labels, N_h / n_h for a review's
    stratified sample, 0 for labels not drawn at random (fitting only); `source` says which."""

    labelled: np.ndarray
    true: np.ndarray
    weights: np.ndarray
    source: str

    @property
    def drawn(self) -> np.ndarray:
        """The labels a precision can be certified or estimated from."""
        return self.labelled & (self.weights > 0)


def labels_of(pairs: pa.Table, path: str, run: Path, bands: int) -> Labels:
    """The labels of `pairs` (the run `run`) from a benchmark split (every pair with a candidate is
    labelled) or a review database (reviewed accept/reject decisions; `bands` as the app had)."""
    garment_ids = pairs["garment_id"].combine_chunks()
    if Path(path, "truth.parquet").is_file():
        judged = from_truth(garment_ids, pairs["image_id"].combine_chunks(), read_split(path)[0])
        return Labels(judged.labelled, judged.true, judged.labelled.astype(np.float64), judged.source)
    reviewed = read_labels(path)
    judged = from_review(garment_ids, pairs["crop_id"].combine_chunks(), reviewed)
    rows = label_rows(garment_ids, pairs["crop_id"].combine_chunks(), reviewed)
    weights = np.zeros(len(rows))
    weights[rows >= 0] = sample_weights(reviewed, run, bands)[rows[rows >= 0]]
    return Labels(judged.labelled, judged.true, weights, "review sample")


def sample_weights(reviewed: pa.Table, run: Path, bands: int) -> np.ndarray:
    """Per review label: N_h / n_h of its stratum (population over labels) for the stratified
    sample, 0 for a label of another queue."""
    population = read_population(run)
    sizes = {s.name: s.size for s in assign_strata(population.tier, population.score, bands)[0]}
    strata = reviewed["stratum"].to_numpy(zero_copy_only=False)
    names, counts = np.unique(strata, return_counts=True)
    labels = dict(zip(names.tolist(), counts.tolist()))
    return np.array([sizes[s] / labels[s] if s in sizes else 0.0 for s in strata])


def best_lambdas(pairs: pa.Table, truth_dir: str, total: float) -> tuple[float, float]:
    """The (lambda_vlm, lambda_siglip) on the grid, summing to `total`, whose best matches hold the
    most true pairs (ties: the smaller lambda_vlm)."""
    truth, _ = read_split(truth_dir)
    garment_ids = pairs["garment_id"].combine_chunks()

    def hits(weight: float) -> int:
        images = evaluation.picked_images(
            pairs, evaluation.best_of_candidates(pairs, weight * total, (1 - weight) * total)
        )
        return int(evaluation.is_true_pair(garment_ids, images, truth).sum())

    best = max(np.linspace(0, 1, LAMBDA_GRID), key=lambda w: (hits(w), -w))
    return float(best * total), float((1 - best) * total)


def fit(pairs: pa.Table, labels: str, cfg: MineConfig, run: Path, bands: int) -> tuple[pa.Table, dict, Labels]:
    """The pairs re-picked (benchmark labels), the fitted calibration (see the module doc) and the
    labels of those pairs."""
    lambdas = (cfg.scoring.lambda_vlm, cfg.scoring.lambda_siglip)
    if Path(labels, "truth.parquet").is_file():
        lambdas = best_lambdas(pairs, labels, sum(lambdas))
        pairs = repicked(pairs, *lambdas, str(run / CROPS_DIR))
    found = labels_of(pairs, labels, run, bands)
    features = pair_features(pairs)
    confidence = calibration.fit_confidence(features[found.labelled], found.true[found.labelled])
    drawn, targets = found.drawn, cfg.tiers.target_precision
    values = confidence.of_features(features)[drawn]
    cuts = calibration.certify(values, found.true[drawn], targets, cfg.tiers.delta, weights=found.weights[drawn])
    settings = {
        "scoring": {"lambda_vlm": lambdas[0], "lambda_siglip": lambdas[1]},
        "confidence": confidence.as_dict(),
        "thresholds": calibration.thresholds(cuts),
        "delta": cfg.tiers.delta,
        "tiers": [cut.as_dict() for cut in cuts],
        "fitted_on": {
            "labels": labels,
            "source": found.source,
            "labelled": int(found.labelled.sum()),
            "true": int(found.true[found.labelled].sum()),
            "certified_on": int(drawn.sum()),
        },
    }
    return pairs, settings, found


def overlay(settings: dict, targets: dict[str, float]) -> str:
    """The conf overlay that makes the next run tier as calibrated."""
    tiers = {
        "mode": "calibrated",
        "thresholds": settings["thresholds"],
        "calibration": settings["confidence"],
        "target_precision": targets,
        "delta": settings["delta"],
    }
    return OmegaConf.to_yaml({"scoring": settings["scoring"], "tiers": tiers})


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished run's output folder (local)")
    parser.add_argument("--labels", help="benchmark split folder, or the review app's SQLite file")
    parser.add_argument("--apply", help="a calibration.json to apply instead of fitting one")
    parser.add_argument("--out", help="output folder (default: RUN/calibrated)")
    parser.add_argument("--bands", type=int, default=4, help="score bands per tier the review app sampled with")
    args, overrides = parser.parse_known_args(argv)
    if not (args.labels or args.apply):
        parser.error("give --labels to fit, or --apply with a calibration.json")
    run = Path(args.run)
    cfg = load_config([str(run / "config.yaml"), *overrides])
    pairs = pq.read_table(run / PAIRS_DIR, partitioning=None)
    found = None  # the labels of the pairs, once read
    if args.apply:
        settings = json.loads(Path(args.apply).read_text())
        scoring = settings["scoring"]
        pairs = repicked(pairs, scoring["lambda_vlm"], scoring["lambda_siglip"], str(run / CROPS_DIR))
    else:
        pairs, settings, found = fit(pairs, args.labels, cfg, run, args.bands)
    pairs = retiered(pairs, Confidence.from_dict(settings["confidence"]), settings["thresholds"])
    tiers = pairs["tier"].to_numpy(zero_copy_only=False)
    estimate, how = None, "not estimated"
    if args.labels:
        if found is None:  # re-tiering keeps every pair's pick, so labels read by `fit` hold
            found = labels_of(pairs, args.labels, run, args.bands)
        drawn = found.drawn
        estimate = calibration.tier_precision(tiers[drawn], found.true[drawn], settings["delta"], found.weights[drawn])
        how = f"on {'held-out ' if args.apply else 'the fitting '}{found.source} labels: {int(drawn.sum())} pairs"
        settings["evaluation"] = {"labels": args.labels, "held_out": bool(args.apply), "tiers": estimate}
    out = Path(args.out) if args.out else run / "calibrated"
    (out / PAIRS_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(pairs, out / PAIRS_DIR / "part-00000.parquet")
    (out / "calibration.json").write_text(json.dumps(settings, indent=2))
    (out / "tiers.yaml").write_text(overlay(settings, dict(cfg.tiers.target_precision)))
    counts = {t: int((tiers == t).sum()) for t in TIER_ORDER}
    summary = json.loads((run / "summary.json").read_text())
    interval = f"{1 - 2 * settings['delta']:.0%} Clopper-Pearson interval"
    card = data_card(counts, summary["models"], summary["config_hash"], estimate, f"{how}, {interval}")
    (out / CARD).write_text(card)
    print(format_calibration(settings, counts))
    print(f"\nwrote {out}/: pairs/, calibration.json, tiers.yaml, {CARD}")
    return settings


if __name__ == "__main__":
    main()
