"""A run's visual report: one self-contained HTML file that opens from disk (quality.report).

python -m jobs.report RUN [--truth SPLIT_DIR | --labels REVIEW_DB] [--pairs DIR] [--calibration FILE]
    [--out FILE] [--per-tier N] [--boundary N] [--top-crops N] [--seed S] [storage.key=value ...]

RUN is the job's output folder (summary.json, config.yaml, pairs/, crops/, quarantine/). --pairs
reports another pairs folder against that run (e.g. RUN/calibrated/pairs). --truth (a benchmark
split) or --labels (the review app's SQLite file) add the precision-vs-coverage curve. Images are
read with the run's storage settings (allow-list, S3 endpoint); storage.key=value overrides them.
Thumbnails are cached under RUN/report/thumbs. Local run folders; no Ray.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from quality.report import ReportInputs, ReportResult, ReportSettings, build_report
from quality.run_files import decode_limits_of, storage_of
from quality.runs import read_split
from review.store import read_labels


def main(argv: Sequence[str] | None = None) -> ReportResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run's output folder")
    judged = parser.add_mutually_exclusive_group()
    judged.add_argument("--truth", help="benchmark split folder (truth.parquet): precision vs coverage")
    judged.add_argument("--labels", help="the review app's SQLite file: precision vs coverage over reviewed pairs")
    parser.add_argument("--pairs", type=Path, help="pairs folder or file to report (default RUN/pairs)")
    parser.add_argument(
        "--calibration", type=Path, help="calibration.json (default: beside the pairs folder, or in RUN)"
    )
    parser.add_argument("--out", type=Path, help="HTML file (default RUN/report/index.html)")
    defaults = ReportSettings()
    parser.add_argument("--per-tier", type=int, default=defaults.per_tier, help="pairs sampled per tier")
    parser.add_argument("--boundary", type=int, default=defaults.boundary, help="pairs on each side of a tier boundary")
    parser.add_argument("--top-crops", type=int, default=defaults.top_crops, help="most chosen crops shown")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the per-tier sample")
    args, overrides = parser.parse_known_args(argv)
    if bad := [o for o in overrides if "=" not in o]:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    inputs = ReportInputs(
        run=args.run,
        storage=storage_of(args.run, overrides),
        pairs=args.pairs,
        decode=decode_limits_of(args.run),
        truth=read_split(args.truth)[0] if args.truth else None,
        labels=read_labels(args.labels) if args.labels else None,
        calibration=args.calibration,
    )
    settings = ReportSettings(per_tier=args.per_tier, boundary=args.boundary, top_crops=args.top_crops, seed=args.seed)
    result = build_report(inputs, settings, args.out)
    print(
        f"wrote {result.path} ({result.html_bytes / 1e6:.1f} MB): {result.pairs:,} pairs in {result.seconds:.1f} s, "
        f"thumbnails {result.made} made, {result.cached} from the cache"
    )
    return result


if __name__ == "__main__":
    main()
