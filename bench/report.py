"""Benchmark of the visual report (`python -m jobs.report`) on a generated run of a million pairs.

    python -m bench.report [--pairs 1000000] [--lookbook 200000] [--workdir /tmp/bench-report]
        [--scenes 300] [--garments 100] [--lock /tmp/lookbook-bench.lock]

Generates, seeded and cached in `workdir`: the demo sample's renderer (`datagen.synthetic.make_sample`)
draws `scenes` lookbook JPEGs and `garments` product PNGs; a run folder holds `pairs` pairs in 16
shard files (row groups of at most 65,536 rows; every PAIRS column, 5 candidates each) whose
lookbook images, `lookbook` ids reusing the scene files, are drawn from a Pareto law so that a few
crops are chosen by hundreds of garments; tiers by score at the reference counts (10,000 / 50,000 /
300,000), the last 1 % without a candidate; a crops table with a row per chosen crop, a quarantine
table, summary.json, config.yaml; and a truth split marking about half the pairs true.

Then runs the report twice, each `python -m jobs.report RUN --truth SPLIT` in a fresh process
(imports included): `cold`, thumbnail cache emptied first, and `warm`, every thumbnail cached.
Peak memory is the summed PSS of that process (bench.memory.TreeMonitor). The last line printed
is `report: pairs=... cold_s=... warm_s=... peak_gb=... html_mb=... thumbnails=...`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.memory import TreeMonitor, exclusive
from core import schemas
from core.config import VOCAB_PATH
from core.tiering import TIERS, UNMATCHED, by_threshold
from core.vocab import ATTRIBUTES, load_vocab
from datagen.synthetic import make_sample

SEED, FILES, ROW_GROUP, CANDIDATES = 0, 16, 65_536, 5
COUNTS = {"high": 10_000, "mid": 50_000, "low": 300_000}  # conf/mine.yaml's tiers.counts


def ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """`prefix` + the zero-padded numbers, as strings (vectorised through Arrow)."""
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def thresholds(scores: np.ndarray) -> dict[str, float]:
    """Score thresholds that put about COUNTS[tier] pairs in each tier (highest scores first)."""
    ranked = np.sort(scores)[::-1]
    ends = np.cumsum([COUNTS[t] for t in TIERS])
    return {tier: float(ranked[min(end, len(ranked)) - 1]) for tier, end in zip(TIERS, ends)}


def pairs_table(n: int, lookbook: int, scenes: list[str], shots: list[str], rng: np.random.Generator) -> pa.Table:
    """`n` PAIRS rows; the last 1 % have no candidate (null ids and box, NaN scores)."""
    image = (rng.pareto(1.2, n) * 2000).astype(np.int64) % lookbook
    crop = rng.integers(0, 3, n)
    image_ids = ids("l", image, 7)
    crop_ids = pc.binary_join_element_wise(image_ids, pa.array(crop).cast(pa.string()), ":")
    has = np.arange(n) < n - n // 100
    s_vlm = rng.beta(6, 2, n).astype(np.float32)
    s_siglip = np.clip(s_vlm + rng.normal(0, 0.1, n), -1, 1).astype(np.float32)
    score = np.where(has, 0.5 * s_vlm + 0.5 * s_siglip, np.nan).astype(np.float32)
    crops = lookbook * 3  # a box per crop, the same in every pair that names it
    x0, y0 = rng.uniform(0, 400, crops), rng.uniform(0, 250, crops)
    boxes = np.stack([x0, y0, x0 + rng.uniform(60, 230, crops), y0 + rng.uniform(80, 240, crops)], 1)
    box = boxes[image * 3 + crop].astype(np.float32)
    mask = ~has
    candidates = pa.array(np.arange(0, n * CANDIDATES + 1, CANDIDATES, dtype=np.int32))
    columns = {
        "garment_id": ids("g", np.arange(n), 7),
        "garment_uri": pa.array(np.array(shots)[np.arange(n) % len(shots)]),
        "garment_caption": pa.array(np.array(["a red striped dress", "a pair of blue jeans"])[np.arange(n) % 2]),
        "image_id": pc.if_else(has, image_ids, None),
        "image_uri": pc.if_else(has, pa.array(np.array(scenes)[image % len(scenes)]), None),
        "crop_id": pc.if_else(has, crop_ids, None),
        "box": pa.FixedSizeListArray.from_arrays(pa.array(box.ravel()), 4, mask=pa.array(mask)),
        "s_vlm": pa.array(s_vlm, mask=mask),
        "s_siglip": pa.array(s_siglip, mask=mask),
        "score": pa.array(score),
        "margin": pa.array(rng.exponential(0.02, n).astype(np.float32), mask=mask),
        "n_candidates": pa.array(np.where(has, CANDIDATES, 0).astype(np.int32)),
        "candidate_crop_ids": pa.ListArray.from_arrays(candidates, crop_ids.take(rng.integers(0, n, n * CANDIDATES))),
        "candidate_image_ids": pa.ListArray.from_arrays(candidates, image_ids.take(rng.integers(0, n, n * CANDIDATES))),
        "candidate_s_vlm": pa.ListArray.from_arrays(candidates, pa.array(rng.random(n * CANDIDATES, np.float32))),
        "candidate_s_siglip": pa.ListArray.from_arrays(candidates, pa.array(rng.random(n * CANDIDATES, np.float32))),
        "tier": pa.array(by_threshold(score, thresholds(score[has])).tolist(), pa.string()),
        "confidence": pa.nulls(n, pa.float32()),
    }
    return pa.table(columns, schema=schemas.PAIRS)


def crops_table(pairs: pa.Table, rng: np.random.Generator) -> pa.Table:
    """One crops row per chosen crop: id, image, uri, box, caption and attributes (no embeddings)."""
    first = pairs.group_by("crop_id").aggregate([("image_id", "min"), ("image_uri", "min")]).drop_null()
    n, vocab = len(first), load_vocab(VOCAB_PATH)
    attributes = {name: pa.array(np.array(vocab[name])[rng.integers(0, len(vocab[name]), n)]) for name in ATTRIBUTES}
    columns = {"crop_id": first["crop_id"], "image_id": first["image_id_min"], "uri": first["image_uri_min"]}
    caption = pc.binary_join_element_wise(attributes["colour"], attributes["pattern"], attributes["category"], " ")
    return pa.table({**columns, "caption": caption, **attributes})


def quarantine_table(rng: np.random.Generator, n: int = 2000) -> pa.Table:
    reasons = np.array(["decode_error", "not_found", "too_small"])[rng.integers(0, 3, n)]
    columns = {"id": ids("q", np.arange(n), 7), "uri": pa.array(["/nowhere.jpg"] * n), "stage": ["lookbook"] * n}
    return pa.table({**columns, "reason": reasons, "error": ["generated"] * n}, schema=schemas.QUARANTINE)


def summary_of(pairs: pa.Table, quarantine: pa.Table, args: argparse.Namespace) -> dict:
    """summary.json as the job writes it, for the parts the report shows."""
    reasons = quarantine["reason"].value_counts().to_pylist()
    return {
        "counts": {"lookbook_images": args.lookbook, "garments": args.pairs},
        "tiers": {t: int(pc.sum(pc.equal(pairs["tier"], t)).as_py() or 0) for t in (*TIERS, UNMATCHED)},
        "quarantine": {"lookbook": {r["values"]: r["counts"] for r in reasons}},
        "models": {},
    }


def write_run(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The run folder and truth split (module docstring), written once per settings."""
    run, split = root / "run", root / "split"
    stamp = root / f"done-{args.pairs}-{args.lookbook}-{args.scenes}-{args.garments}"
    if stamp.is_file():
        return run, split
    shutil.rmtree(root, ignore_errors=True)
    sample = make_sample(root / "images", args.garments, args.scenes, SEED, load_vocab(VOCAB_PATH), bad_files=False)
    scenes = pq.read_table(sample.lookbook_path)["uri"].to_pylist()
    shots = pq.read_table(sample.garments_path)["uri"].to_pylist()
    rng = np.random.default_rng(SEED)
    pairs = pairs_table(args.pairs, args.lookbook, scenes, shots, rng)
    for shard, start in enumerate(range(0, len(pairs), -(-len(pairs) // FILES))):
        folder = run / "pairs" / f"shard={shard:05d}"
        folder.mkdir(parents=True)
        pq.write_table(
            pairs.slice(start, -(-len(pairs) // FILES)), folder / "part-000000.parquet", row_group_size=ROW_GROUP
        )
    (run / "crops/shard=00000").mkdir(parents=True)
    pq.write_table(crops_table(pairs, rng), run / "crops/shard=00000/part-000000.parquet")
    quarantine = quarantine_table(rng)
    (run / "quarantine/lookbook/shard=00000").mkdir(parents=True)
    pq.write_table(quarantine, run / "quarantine/lookbook/shard=00000/part-000000.parquet")
    (run / "summary.json").write_text(json.dumps(summary_of(pairs, quarantine, args)))
    (run / "config.yaml").write_text(f"storage:\n  allowed_local_roots: ['{root}']\n")
    split.mkdir()
    truth = pairs.select(["image_id", "garment_id"]).filter(pa.array(rng.random(len(pairs)) < 0.5)).drop_null()
    pq.write_table(truth, split / "truth.parquet")
    pq.write_table(pairs.select(["garment_id"]), split / "garments.parquet")
    stamp.touch()
    return run, split


def timed_report(run: Path, split: Path, out: Path) -> dict:
    """One `jobs.report` in a fresh process: wall seconds, its printed line, peak PSS."""
    command = [sys.executable, "-m", "jobs.report", str(run), "--truth", str(split), "--out", str(out)]
    with TreeMonitor(0.2) as monitor:
        start = monitor.mark()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        end = monitor.mark()
    return {"wall_s": end[0] - start[0], "line": done.stdout.strip(), **monitor.summary(start, end)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--lookbook", type=int, default=200_000, help="lookbook image ids (reusing the scene files)")
    parser.add_argument("--scenes", type=int, default=300, help="scene image files drawn")
    parser.add_argument("--garments", type=int, default=100, help="product shot files drawn")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-report"))
    parser.add_argument("--lock", type=Path, default=Path("/tmp/lookbook-bench.lock"))
    args = parser.parse_args(argv)
    run, split = write_run(args.workdir.resolve(), args)
    shutil.rmtree(run / "report", ignore_errors=True)
    with exclusive(args.lock):
        runs = {name: timed_report(run, split, args.workdir / f"{name}.html") for name in ("cold", "warm")}
    for name, result in runs.items():
        cores, others, peak = result["cores_used"], result["other_cores_used"], result["peak_bytes"] / 2**30
        print(f"{name}: {result['wall_s']:.1f} s wall, {cores:.2f} cores ({others:.2f} by others), peak {peak:.2f} GiB")
        print(f"  {result['line']}")
    cold, warm = runs["cold"], runs["warm"]
    fields = {
        "pairs": args.pairs,
        "cold_s": f"{cold['wall_s']:.1f}",
        "warm_s": f"{warm['wall_s']:.1f}",
        "peak_gb": f"{max(cold['peak_bytes'], warm['peak_bytes']) / 2**30:.2f}",
        "html_mb": f"{(args.workdir / 'cold.html').stat().st_size / 1e6:.1f}",
        "thumbnails": len(list((run / "report" / "thumbs").glob("*.jpg"))),
    }
    print("report: " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    return runs


if __name__ == "__main__":
    main()
