"""Train an ultralytics YOLO garment detector (one class) on a benchmark split's scenes and truth boxes,
validate on the held-out split, copy the weights to `out` and print their sha256 and the held-out box
recall at IoU >= 0.5.

    python -m jobs.train_detector conf/train_detector.yaml train=BENCH/train test=BENCH/test out=models/yolo-garment.pt
    python -m jobs.train_detector conf/train_detector.yaml train=... test=... out=... \\
        model=yolov8s.pt ultralytics.device=0

Settings: TrainDetectorConfig below, conf/train_detector.yaml, then key=value overrides. Works offline:
plots and the AMP check (both download files) are off in the shipped settings, and YOLO_OFFLINE is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import MISSING, OmegaConf

from core.config import ModelSpec, merged_config
from core.models import resolve
from core.storage import StorageConfig
from training.data import read_rows
from training.detector import box_recall, image_size, write_dataset

PREDICT_BATCH = 16


@dataclass
class TrainDetectorConfig:
    train: str = MISSING  # benchmark split folder to train on
    test: str = MISSING  # held-out split folder: validation during training and the recall check
    out: str = MISSING  # where the trained .pt is copied
    model: str = "yolov8n.yaml"  # ultralytics name (.yaml: from scratch), or a model spec as in conf/mine.yaml
    model_sha256: str | None = None  # required when `model` is a local or pkg:// pickled checkpoint (.pt)
    work_dir: str = "data/train/detector"
    min_score: float = 0.25
    val_scenes: int | None = 200  # first test scenes ultralytics validates on (twice at the end); null: all
    test_scenes: int | None = None  # first test scenes of the recall check; null: all
    ultralytics: dict[str, Any] = field(default_factory=dict)


def load_config(args: list[str]) -> TrainDetectorConfig:
    return merged_config(TrainDetectorConfig, args)


def test_recall(model, split: str, cfg: TrainDetectorConfig) -> float:
    """Box recall at IoU >= 0.5 over the readable ones of the split's first `test_scenes` scenes, boxes
    with score >= `min_score`."""
    truth: dict[str, list[list[float]]] = {}
    for row in read_rows(split, "truth"):
        truth.setdefault(row["image_id"], []).append([row["x0"], row["y0"], row["x1"], row["y1"]])
    scenes = [r for r in read_rows(split, "lookbook")[: cfg.test_scenes] if image_size(r["uri"]) is not None]
    predicted = []
    for start in range(0, len(scenes), PREDICT_BATCH):
        batch = [r["uri"] for r in scenes[start : start + PREDICT_BATCH]]
        results = model.predict(
            batch, imgsz=cfg.ultralytics.get("imgsz", 640), conf=cfg.min_score,
            device=cfg.ultralytics.get("device", "cpu"), verbose=False,
        )  # fmt: skip
        predicted += [r.boxes.xyxy.cpu().numpy() for r in results]
    return box_recall([np.array(truth.get(r["image_id"], []), np.float64) for r in scenes], predicted)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # after YOLO_OFFLINE: ultralytics reads it when checking downloads

    cfg = load_config(sys.argv[1:] if argv is None else argv)
    work = Path(cfg.work_dir).resolve()
    data = write_dataset(cfg.train, cfg.test, work, cfg.val_scenes)
    model = YOLO(resolve("detector", ModelSpec(cfg.model, cfg.model_sha256), StorageConfig(), hub=False), task="detect")
    began = time.monotonic()
    model.train(data=str(data), project=str(work), name="run", **cfg.ultralytics)
    minutes = (time.monotonic() - began) / 60
    best = Path(model.trainer.best)
    weights = best if best.exists() else Path(model.trainer.last)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out)
    trained = YOLO(str(out), task="detect")
    record = {
        "out": str(out),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "megabytes": round(out.stat().st_size / 2**20, 2),
        "train_minutes": round(minutes, 2),
        "test_box_recall_iou50": round(test_recall(trained, cfg.test, cfg), 4),
        "test_scenes": cfg.test_scenes,
    }
    (work / "training.json").write_text(
        json.dumps({"config": OmegaConf.to_container(OmegaConf.structured(cfg)), **record}, indent=2) + "\n"
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
