"""Detection recall by operating point: where `detector.min_score` and `detector.max_crops` should sit.

python -m bench.detector SPLIT_DIR [overlay.yaml ...] [key=value ...] [--scenes 600]
    [--scores 0.02 0.05 0.1 0.25] [--crops 4 5 6 7 8 10]

(overlays and overrides before the options: `--scores` and `--crops` take every value after them)

Runs the configured detector (`actors.detector.CropDetector`, no Ray) once over the first `--scenes`
lookbook images of a benchmark split (`jobs.make_benchmark`: lookbook.parquet and truth.parquet),
at the lowest score and the most crops asked for, then prints, for every (min_score, max_crops),
the recall of the split's truth boxes at IoU `--min-iou` (one-to-one, `quality.evaluation`) and the
crops an image keeps on average: the recall bought by each extra crop. A box kept at `max_crops` k
is one of the k highest-scoring boxes the detector selects (`core.boxes.select_boxes`), so the
rows of one pass give every smaller setting. An image without a box counts its garments missed
(the job would give it one whole-image crop). Choose on a *train* split: the test split measures.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actors.decoder import decode_images
from actors.detector import CropDetector
from bench.pipeline import slices
from core.batches import good_rows
from core.config import CONF_DIR, load_config
from core.schemas import BOX, SCENE_CLASS
from core.storage import StorageConfig
from quality.evaluation import match_truth_to_crops

BATCH = 16


def detected(split: Path, manifest: pa.Table, overrides: list[str], min_score: float, max_crops: int) -> pa.Table:
    """The crop rows (image_id, box, det_score, rank) of the `manifest` rows (images of `split`)."""
    cfg = load_config([str(CONF_DIR / "demo.yaml"), *overrides, "lookbook=x", "garments=x", "output=x"])
    storage = replace(StorageConfig(), allowed_local_roots=[str(split.resolve())])
    detector = CropDetector(replace(cfg.detector, min_score=min_score, max_crops=max_crops, scene_rows=False), storage)
    images = {c: np.asarray(manifest[c].to_pylist(), dtype=object) for c in ("image_id", "uri")}
    rows: dict[str, list] = {"image_id": [], "box": [], "det_score": [], "rank": []}
    for batch in slices(images, BATCH):
        out = detector(decode_images(batch, cfg.decode, storage))
        keep = good_rows(out) & (out["det_class"] != SCENE_CLASS)
        rows["image_id"] += out["image_id"][keep].tolist()
        rows["box"] += [list(map(float, b)) for b in out["box"][keep]]
        rows["det_score"] += out["det_score"][keep].tolist()
        rows["rank"] += [int(c.rsplit(":", 1)[1]) for c in out["crop_id"][keep]]
    return pa.table({**rows, "box": pa.array(rows["box"], BOX)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("split", type=Path)
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--scores", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.25])
    parser.add_argument("--crops", type=int, nargs="+", default=[4, 5, 6, 7, 8, 10])
    parser.add_argument("--min-iou", type=float, default=0.5)
    args, overrides = parser.parse_known_args(argv)
    manifest = pq.read_table(args.split / "lookbook.parquet").slice(0, args.scenes)
    crops = detected(args.split, manifest, overrides, min(args.scores), max(args.crops))
    images = set(manifest["image_id"].to_pylist())
    truth = pq.read_table(args.split / "truth.parquet")
    truth = truth.filter(pc.is_in(truth["image_id"], pa.array(sorted(images))))
    print(f"{len(images)} scenes, {truth.num_rows} truth boxes; recall at IoU {args.min_iou} / crops an image")
    print(f"{'min_score':>9s} " + " ".join(f"{f'{k} crops':>14s}" for k in sorted(args.crops)))
    for score in sorted(args.scores):
        cells = []
        for k in sorted(args.crops):
            kept = crops.filter(pc.and_(pc.greater_equal(crops["det_score"], score), pc.less(crops["rank"], k)))
            found = len(match_truth_to_crops(truth, kept, args.min_iou)[0])
            cells.append(f"{found / truth.num_rows:.3f} / {kept.num_rows / len(images):.1f}")
        print(f"{score:9.2f} " + " ".join(f"{c:>14s}" for c in cells))


if __name__ == "__main__":
    main()
