"""Garment-region detection with ultralytics YOLO, and cropping: one output row per crop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image
from ultralytics import YOLO

from core import boxes
from core.batches import Batch, good_rows, objects
from core.config import DetectorConfig
from core.images import EMPTY, NO_GARMENT
from core.models import ModelLoadError, resolve, torch_device
from core.schemas import ERROR, REASON
from core.steps import FORWARD, POSTPROCESS, PREPROCESS, StepTimer
from core.storage import StorageConfig

IMAGE_COLUMNS = ("image", "width", "height", "scale")  # decoded-image columns that crop rows replace
WHOLE_IMAGE_CLASS = -1  # det_class of a crop that is the whole image (no detection, or a garment shot)


class YoloDetector:
    """ultralytics YOLO: RGB images in, per image (boxes (n, 4) float32 xyxy pixels, scores (n,), classes (n,)).
    An image's detections do not depend on the other images of its batch."""

    def __init__(self, cfg: DetectorConfig, storage: StorageConfig):
        path = resolve("detector", cfg.model, storage, hub=False)
        try:
            self.model = YOLO(path, task="detect")
        except (FileNotFoundError, OSError) as exc:
            raise ModelLoadError(f"detector model {cfg.model.spec!r} could not be loaded: {exc}") from exc
        self.device = torch_device(cfg.device)
        self.cfg = cfg

    def __call__(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not images:
            return []
        results = self.model.predict(
            [i[:, :, ::-1] for i in images],  # ultralytics takes numpy images as BGR
            imgsz=self.cfg.image_size,
            conf=self.cfg.min_score,
            classes=self.cfg.classes,
            rect=False,  # every image letterboxed to the square image_size: boxes never depend on the batch
            device=self.device,
            quantize=16 if self.cfg.half and self.device.startswith("cuda") else None,
            verbose=False,
        )
        return [
            (r.boxes.xyxy.cpu().numpy().astype(np.float32), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy())
            for r in results
        ]


def crop_rows(row: dict, detections: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: DetectorConfig) -> list[dict]:
    """The crop rows of one decoded image row (or one quarantine row).

    Boxes in the output are in original-image pixels; `crop` pixels come from the decoded,
    possibly downscaled image and are downscaled to fit `crop_max_side`.
    """
    image, scale = row["image"], np.tile(np.asarray(row["scale"], np.float32), 2)  # x0, y0, x1, y1 factors
    width, height = int(row["width"]), int(row["height"])
    found, scores, classes = detections
    keep = boxes.select_boxes(found / scale, scores, cfg.min_score, cfg.max_crops, cfg.min_box_side)
    picked = [
        (boxes.pad_and_clip(found[i] / scale, cfg.box_padding, width, height), scores[i], classes[i]) for i in keep
    ]
    base = {**{k: v for k, v in row.items() if k not in IMAGE_COLUMNS}, REASON: "", ERROR: ""}
    if not picked and cfg.no_detection == "skip":
        return [
            {
                **base,
                "crop_id": f"{row['image_id']}:0",
                "box": boxes.whole_image(width, height),
                "det_score": 0.0,
                "det_class": WHOLE_IMAGE_CLASS,
                "crop": EMPTY,
                REASON: NO_GARMENT,
                ERROR: f"no box with score >= {cfg.min_score}",
            }
        ]
    if not picked:
        picked = [(boxes.whole_image(width, height), 0.0, WHOLE_IMAGE_CLASS)]
    return [
        {
            **base,
            "crop_id": f"{row['image_id']}:{k}",
            "box": box,
            "det_score": float(score),
            "det_class": int(cls),
            "crop": _shrink(boxes.crop_pixels(image, box * scale), cfg.crop_max_side),
        }
        for k, (box, score, cls) in enumerate(picked)
    ]


def _shrink(pixels: np.ndarray, max_side: int) -> np.ndarray:
    if max(pixels.shape[:2]) <= max_side:
        return np.ascontiguousarray(pixels)
    image = Image.fromarray(pixels)
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def passthrough_row(row: dict) -> dict:
    """A quarantined image row in crop-row layout (so it reaches the quarantine table)."""
    return {
        **{k: v for k, v in row.items() if k not in IMAGE_COLUMNS},
        "crop_id": f"{row['image_id']}:0",
        "box": np.zeros(4, np.float32),
        "det_score": 0.0,
        "det_class": WHOLE_IMAGE_CLASS,
        "crop": EMPTY,
    }


def whole_image_crops(batch: Batch, cfg: DetectorConfig) -> Batch:
    """Decoded rows to crop rows without detection: each image is one crop (garment product shots)."""
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    no_boxes = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    whole = replace(cfg, no_detection="whole_image")
    return to_batch(
        [crop_rows(r, no_boxes, whole)[0] if ok else passthrough_row(r) for r, ok in zip(rows, good_rows(batch))]
    )


def to_batch(rows: list[dict]) -> Batch:
    columns = rows[0].keys()
    return {c: objects([r[c] for r in rows]) if c == "crop" else np.asarray([r[c] for r in rows]) for c in columns}


class CropDetector:
    """Ray Data stage: decoded image rows in, crop rows out (see `crop_rows`); quarantined image
    rows pass through as one quarantined crop row each. YOLO's own resizing counts as `forward`;
    cutting and shrinking the crops as `postprocess`."""

    def __init__(self, cfg: DetectorConfig, storage: StorageConfig, timer: StepTimer | None = None):
        self.detector = YoloDetector(cfg, storage)
        self.cfg = cfg
        self.timer = timer or StepTimer()

    def __call__(self, batch: Batch) -> Batch:
        with self.timer(PREPROCESS):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            good = good_rows(batch)
        with self.timer(FORWARD):
            detections = iter(self.detector([r["image"] for r, ok in zip(rows, good) if ok]))
        with self.timer(POSTPROCESS):
            out = []
            for row, ok in zip(rows, good):
                out.extend(crop_rows(row, next(detections), self.cfg) if ok else [passthrough_row(row)])
            return to_batch(out)
