"""Ablation of the seed method on one benchmark split: crops (detector or whole image) x score
(S_SigLIP only, S_VLM only, combined, VLM pre-filter then S_SigLIP), in one table.

python -m jobs.ablate --truth SPLIT_DIR --out OUT_DIR [overlay.yaml ...] [key=value ...]

Runs the mining job twice on the split, into OUT_DIR/detector (detection crops) and
OUT_DIR/whole_image (`detector.enabled=false`); a run whose summary.json carries the same config hash
is reused, an unfinished one resumes from its committed shards. Each run is then evaluated with the
three lambda settings of `quality.evaluation.ablation_lambdas`, and with the VLM as the seed paper
uses it, a semantic pre-filter (`vlm_prefilter_K`: S_SigLIP ranks a garment's K candidates with
the highest S_VLM, `--vlm-prefilter`), by re-scoring its stored candidates (no rerun); S_SigLIP only
and the combined score are also tiered by S plus the crop margin (`core.crop_rivals`).
Overlays and key=value overrides go to the mining job (models, tiers, pools), as for
`python -m jobs.mine`. Writes OUT_DIR/ablation.json, OUT_DIR/ablation.md (the table) and one
precision-vs-coverage curve per row under OUT_DIR/curves/. With --calibration (a calibration.json
that jobs.calibrate fitted on another split), the detector run gains a `calibrated` row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa

from core.confidence import Confidence
from core.config import config_hash, load_config
from core.schemas import CROPS_DIR
from quality import evaluation
from quality.retier import repicked, retiered
from quality.runs import Run, read_run, read_split, write_curve
from quality.tables import format_report, markdown, table_row

CROPS = {"detector": "detector.enabled=true", "whole_image": "detector.enabled=false"}  # run name: override


def mine_once(args: list[str]) -> dict:
    """The run's summary: from its summary.json when that carries this config's hash, else mined now
    by `python -m jobs.mine` in a process of its own (its own Ray instance, stopped with it)."""
    cfg = load_config(args)
    summary_path = Path(cfg.output) / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("config_hash") == config_hash(cfg):
            print(f"[ablate] reusing {cfg.output} (config {summary['config_hash']})", flush=True)
            return summary
    subprocess.run([sys.executable, "-m", "jobs.mine", *args], check=True)
    return json.loads(summary_path.read_text())


def scored_settings(
    run: Run, calibration: dict | None, vlm_prefilter: int
) -> dict[str, tuple[tuple[float, float], pa.Table]]:
    """setting -> (lambdas, the run's pairs re-scored and tiered with them): the three of
    `evaluation.ablation_lambdas` and `vlm_prefilter` (the seed's use of the VLM: S_SigLIP ranks
    only the `vlm_prefilter` candidates with the highest S_VLM), tiered by S as the seed does, in
    the run's tier mode; `siglip_only+crop_margin` and `combined+crop_margin`, tiered by S plus
    the crop margin (`tiers.key=score_plus_crop_margin`); and
    `calibrated` when a calibration (a jobs.calibrate calibration.json) is given: its lambdas,
    confidence and certified cut-offs."""
    scoring = run.cfg.scoring
    by_score = replace(run.cfg.tiers, key="score")
    by_crop_margin = replace(run.cfg.tiers, key="score_plus_crop_margin")
    settings = evaluation.ablation_lambdas(scoring.lambda_vlm, scoring.lambda_siglip)
    out = {name: (lambdas, evaluation.rescored(run.pairs, *lambdas, by_score)) for name, lambdas in settings.items()}
    siglip_only = settings["siglip_only"]
    out[f"vlm_prefilter_{vlm_prefilter}"] = (
        siglip_only,
        evaluation.rescored(run.pairs, *siglip_only, by_score, vlm_prefilter),
    )
    for name in ("siglip_only", "combined"):
        lambdas = settings[name]
        out[f"{name}+crop_margin"] = (lambdas, evaluation.rescored(run.pairs, *lambdas, by_crop_margin))
    if calibration:
        lambdas = (calibration["scoring"]["lambda_vlm"], calibration["scoring"]["lambda_siglip"])
        pairs = repicked(run.pairs, *lambdas, str(run.folder / CROPS_DIR))
        out["calibrated"] = (
            lambdas,
            retiered(pairs, Confidence.from_dict(calibration["confidence"]), calibration["thresholds"]),
        )
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--truth", required=True, help="benchmark split folder (garments, lookbook, truth Parquet)")
    parser.add_argument("--out", required=True, help="folder for the two runs and the ablation table")
    parser.add_argument("--top-k", type=int, default=50, help="candidates kept per garment (recall@k needs k <= this)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 50], help="retrieval recall@k cut-offs")
    parser.add_argument("--min-iou", type=float, default=0.5, help="IoU at which a crop finds a truth box")
    parser.add_argument("--target-precision", type=float, default=0.95, help="precision the threshold must reach")
    parser.add_argument("--vlm-prefilter", type=int, default=10, help="candidates the VLM pre-filter keeps")
    parser.add_argument("--calibration", help="a calibration.json fitted on another split: adds a `calibrated` row")
    args, mine_args = parser.parse_known_args(argv)
    split, out = Path(args.truth).resolve(), Path(args.out).resolve()
    truth, garments = read_split(split)
    settings = evaluation.EvalSettings(tuple(args.ks), args.min_iou, args.target_precision)
    inputs = [f"lookbook={split / 'lookbook.parquet'}", f"garments={split / 'garments.parquet'}"]
    readable = f"storage.allowed_local_roots=[{split}]"  # the split's images; mine_args may widen it
    calibration = json.loads(Path(args.calibration).read_text()) if args.calibration else None
    results, rows = {}, []
    (out / "curves").mkdir(parents=True, exist_ok=True)
    for crops, switch in CROPS.items():
        start = time.perf_counter()
        summary = mine_once(
            [f"scoring.top_k={args.top_k}", readable, *mine_args, *inputs, f"output={out / crops}", switch]
        )
        mined_s = time.perf_counter() - start
        run = read_run(out / crops)
        results[crops] = {"output": str(out / crops), "summary": summary, "mine_seconds": round(mined_s, 1)}
        for setting, (lambdas, pairs) in scored_settings(
            run, calibration if crops == "detector" else None, args.vlm_prefilter
        ).items():
            report = evaluation.report(pairs, truth, garments, run.crops, run.top_k, settings)
            results[crops][setting] = {"lambdas": list(lambdas), **report}
            write_curve(pairs, truth, out / "curves" / f"{crops}-{setting}.parquet")
            rows.append(table_row(crops, setting, lambdas, report))
            print(f"\n[ablate] {crops}, {setting} (lambda_vlm={lambdas[0]:g}, lambda_siglip={lambdas[1]:g})")
            print(format_report(report), flush=True)
    table = markdown(rows)
    (out / "ablation.json").write_text(json.dumps({"truth": str(split), "runs": results}, indent=2))
    (out / "ablation.md").write_text(table + "\n")
    print(f"\n{table}\n\nwrote {out / 'ablation.json'}, {out / 'ablation.md'} and {out / 'curves'}/")
    return results


if __name__ == "__main__":
    main()
