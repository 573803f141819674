"""Evaluate a mining run against a labelled benchmark split (see miner.evaluation for every metric).

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
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from miner import evaluation
from miner.config import MineConfig, load_config
from miner.tiering import TIERS
from miner.vocab import ATTRIBUTES

CROP_COLUMNS = ["crop_id", "image_id", "box", *ATTRIBUTES]  # what the metrics read (no embeddings)


@dataclass(frozen=True)
class Run:
    """A mining run's tables: pairs, crops (None when only pairs were given), its resolved config
    (None without config.yaml), and `folder`: the output folder, or the one holding the pairs."""

    folder: Path
    pairs: pa.Table
    crops: pa.Table | None
    cfg: MineConfig | None

    @property
    def top_k(self) -> int:
        """Candidates kept per garment: the run's `scoring.top_k`, else the longest candidate list."""
        if self.cfg is not None:
            return self.cfg.scoring.top_k
        return max((len(c) for c in self.pairs["candidate_image_ids"].to_pylist()), default=0)


def read_run(path: str | Path) -> Run:
    """The run at `path`: an output folder, its pairs/ folder, or one pairs Parquet file."""
    path = Path(path)
    run_dir = path if (path / "pairs").is_dir() else path.parent if path.name == "pairs" else None
    pairs = pq.read_table(run_dir / "pairs" if run_dir else path, partitioning=None)
    crops = cfg = None
    if run_dir and (run_dir / "crops").is_dir():
        crops = pq.read_table(run_dir / "crops", columns=CROP_COLUMNS, partitioning=None)
    if run_dir and (run_dir / "config.yaml").is_file():
        cfg = load_config([str(run_dir / "config.yaml")])
    return Run(run_dir or path.parent, pairs, crops, cfg)


def read_split(split_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """(truth, garments) tables of a benchmark split folder."""
    split = Path(split_dir)
    return pq.read_table(split / "truth.parquet"), pq.read_table(split / "garments.parquet")


def proportion_text(p: dict | None, ci: bool = False) -> str:
    """`0.512` or `0.512 [0.401, 0.622]` (95 % Wilson interval); `-` where undefined."""
    if p is None or p["value"] is None:
        return "-"
    text = f"{p['value']:.3f}"
    return f"{text} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]" if ci else text


def format_report(report: dict) -> str:
    """The metrics of one run as a readable plain-text table."""
    counts = report["counts"]
    lines = [
        "pairs {pairs} ({scored_pairs} scored), true pairs found {true_pairs_found}; "
        "truth: {matchable_garments} matchable garments, {true_pairs} true pairs, {truth_boxes} boxes; "
        "top_k {top_k}".format(**counts),
        "",
        f"{'tier':6s} {'precision [95% CI]':28s} {'cum. precision':16s} {'cum. recall [95% CI]':28s} {'pairs':>6s}",
    ]
    for tier in TIERS:
        m = report["tiers"][tier]
        lines.append(
            f"{tier:6s} {proportion_text(m['precision'], True):28s} "
            f"{proportion_text(m['cumulative_precision']):16s} "
            f"{proportion_text(m['cumulative_recall'], True):28s} {m['precision']['total']:6d}"
        )
    lines.append("")
    for k, p in report["retrieval_recall"].items():
        lines.append(f"retrieval recall@{k:<3s} {proportion_text(p, True)}")
    threshold = report["precision_threshold"]
    reached = "none" if threshold["score"] is None else f"{threshold['score']:.4f}"
    lines.append(
        f"score threshold for precision >= {threshold['target']}: {reached} (coverage {threshold['coverage']:.3f})"
    )
    lines.append(f"detection recall (IoU >= {report['min_iou']}): {proportion_text(report['detection_recall'], True)}")
    for name, p in (report["attribute_accuracy"] or {}).items():
        if p["total"]:
            lines.append(f"attribute accuracy {name:9s} {proportion_text(p, True)} of {p['total']}")
    return "\n".join(lines)


def write_curve(pairs: pa.Table, truth: pa.Table, path: Path) -> None:
    """The precision-vs-coverage curve of `pairs` as Parquet: rank, score, true, precision, coverage."""
    true = evaluation.is_true_pair(pairs["garment_id"].combine_chunks(), pairs["image_id"].combine_chunks(), truth)
    scores = pairs["score"].combine_chunks().fill_null(float("nan")).to_numpy(zero_copy_only=False)
    pq.write_table(pa.table(evaluation.precision_coverage(scores, true)), path)


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
