"""Evaluate a mining run against a labelled benchmark split (see quality.evaluation for every metric).

python -m jobs.evaluate --pairs RUN_DIR --truth SPLIT_DIR [--out FILE.json] [--curve FILE.parquet]

RUN_DIR is the job's output folder (pairs/, crops/, config.yaml); a pairs folder or file alone also
works, without detection recall and attribute accuracy. SPLIT_DIR holds garments.parquet and
truth.parquet. Prints a table, writes the metrics as JSON and the precision-vs-coverage curve as
Parquet (default: next to the JSON). Local paths; no Ray.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from quality import evaluation
from quality.runs import read_run, read_split, write_curve
from quality.tables import format_report


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True, help="run output folder, its pairs/ folder, or a pairs file")
    parser.add_argument("--truth", required=True, help="benchmark split folder (truth.parquet, garments.parquet)")
    parser.add_argument("--out", help="metrics JSON (default: evaluation.json in the run folder)")
    parser.add_argument("--curve", help="precision-vs-coverage Parquet (default: the JSON's name + .curve.parquet)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 10, 50], help="retrieval recall@k cut-offs")
    parser.add_argument("--min-iou", type=float, default=0.5, help="IoU at which a crop finds a truth box")
    parser.add_argument("--target-precision", type=float, default=0.95, help="precision the threshold must reach")
    args = parser.parse_args(argv)
    run = read_run(args.pairs)
    truth, garments = read_split(args.truth)
    settings = evaluation.EvalSettings(tuple(args.ks), args.min_iou, args.target_precision)
    report = evaluation.report(run.pairs, truth, garments, run.crops, run.top_k, settings)
    report = {"pairs": str(args.pairs), "truth": str(args.truth), **report}
    out = Path(args.out) if args.out else run.folder / "evaluation.json"
    curve = Path(args.curve) if args.curve else out.with_suffix(".curve.parquet")
    out.write_text(json.dumps(report, indent=2))
    write_curve(run.pairs, truth, curve)
    print(format_report(report))
    print(f"\nwrote {out} and {curve}")
    return report


if __name__ == "__main__":
    main()
