"""Garment-region detection with ultralytics YOLO, and cropping: one output row per crop.

Pixels stay on the detector's device: each image is uploaded once (or is already there, from the
device decode), letterboxed there for YOLO, and its crops are cut and downscaled there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torchvision.transforms.v2.functional import resize
from ultralytics import YOLO
from ultralytics.utils.ops import scale_boxes

from core import boxes
from core.batches import Batch, good_rows, objects
from core.config import DetectorConfig
from core.images import EMPTY, NO_GARMENT, fitted_size
from core.models import ModelLoadError, resolve, torch_device
from core.pixels import as_array, as_tensor
from core.schemas import ERROR, REASON, SCENE_CLASS
from core.steps import FORWARD, POSTPROCESS, PREPROCESS, StepTimer
from core.storage import StorageConfig

IMAGE_COLUMNS = ("image", "width", "height", "scale")  # decoded-image columns that crop rows replace
WHOLE_IMAGE_CLASS = -1  # det_class of a crop that is the whole image (no detection, or a garment shot)
LETTERBOX_GREY = 114  # ultralytics' padding value


def letterbox(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """(n, 3, size, size) float in [0, 1] on the images' device: each (3, h, w) uint8 image resized
    to fit (bilinear, not antialiased, as ultralytics' cv2 INTER_LINEAR) and centred on grey, with
    ultralytics' `LetterBox` geometry, so `scale_boxes` maps boxes back."""
    out = torch.full((len(images), 3, size, size), LETTERBOX_GREY, dtype=torch.uint8, device=images[0].device)
    for k, image in enumerate(images):
        height, width = image.shape[1:]
        ratio = min(size / height, size / width)
        new_w, new_h = max(round(width * ratio), 1), max(round(height * ratio), 1)
        left, top = round((size - new_w) / 2 - 0.1), round((size - new_h) / 2 - 0.1)
        fitted = resize(image, [new_h, new_w], antialias=False) if (new_h, new_w) != (height, width) else image
        out[k, :, top : top + new_h, left : left + new_w] = fitted
    return out.float().div_(255)


def cut_crops(image: torch.Tensor, windows: Sequence[np.ndarray], max_side: int) -> list[torch.Tensor]:
    """(3, h, w) uint8 crops of a (3, H, W) image inside each box (its pixel coordinates, covered as
    `boxes.pixel_window` does), downscaled on the image's device (bilinear, antialiased) to fit `max_side`."""
    crops = []
    for box in windows:
        x0, y0, x1, y1 = boxes.pixel_window(box)
        crop = image[:, y0:y1, x0:x1]
        width, height = fitted_size((crop.shape[2], crop.shape[1]), max_side)
        crops.append(resize(crop, [height, width], antialias=True) if (height, width) != crop.shape[1:] else crop)
    return crops


class YoloDetector:
    """ultralytics YOLO: RGB uint8 images ((h, w, 3) arrays or (3, h, w) tensors) in, per image
    (boxes (n, 4) float32 xyxy pixels, scores (n,), classes (n,)). The batch is letterboxed on the
    detector's device (`letterbox`: each image to the square `image_size`), so an image's
    detections do not depend on the rest of its batch. Torch keeps the threads it had when the
    detector was made (the pool's `threads`): ultralytics sets min(8, cores - 1) when it sets up its
    predictor on the first batch, whatever the actor's share of the node."""

    def __init__(self, cfg: DetectorConfig, storage: StorageConfig):
        path = resolve("detector", cfg.model, storage, hub=False)
        try:
            self.model = YOLO(path, task="detect")
        except (FileNotFoundError, OSError) as exc:
            raise ModelLoadError(f"detector model {cfg.model.spec!r} could not be loaded: {exc}") from exc
        self.device = torch_device(cfg.device)
        self.cfg = cfg
        self.threads = torch.get_num_threads()

    def __call__(self, images: Sequence[np.ndarray | torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not images:
            return []
        size, images = self.cfg.image_size, [as_tensor(i, self.device) for i in images]
        results = self.model.predict(
            letterbox(images, size),
            imgsz=size,
            conf=self.cfg.min_score,
            classes=self.cfg.classes,
            device=self.device,
            quantize=16 if self.cfg.half and self.device.startswith("cuda") else None,
            verbose=False,
        )
        torch.set_num_threads(self.threads)
        return [
            (
                scale_boxes((size, size), r.boxes.xyxy.clone(), tuple(image.shape[1:]))
                .cpu()
                .numpy()
                .astype(np.float32),
                r.boxes.conf.cpu().numpy(),
                r.boxes.cls.cpu().numpy(),
            )
            for r, image in zip(results, images)
        ]


def crop_rows(
    row: dict, image: torch.Tensor, detections: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: DetectorConfig
) -> list[dict]:
    """The crop rows of one decoded image row, its `image` the row's pixels as a (3, h, w) tensor.

    Boxes in the output are in original-image pixels; `crop` pixels, (3, h, w) tensors on the
    image's device, come from the decoded, possibly downscaled image, downscaled to fit `crop_max_side`.
    """
    scale = np.tile(np.asarray(row["scale"], np.float32), 2)  # x0, y0, x1, y1 factors
    width, height = int(row["width"]), int(row["height"])
    found, scores, classes = detections
    keep = boxes.select_boxes(found / scale, scores, cfg.min_score, cfg.max_crops, cfg.min_box_side)
    picked = [
        (boxes.pad_and_clip(found[i] / scale, cfg.box_padding, width, height), scores[i], classes[i]) for i in keep
    ]
    base = good_base(row)
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
    crops = cut_crops(image, [box * scale for box, _, _ in picked], cfg.crop_max_side)
    return [
        {
            **base,
            "crop_id": f"{row['image_id']}:{k}",
            "box": box,
            "det_score": float(score),
            "det_class": int(cls),
            "crop": crop,
        }
        for k, ((box, score, cls), crop) in enumerate(zip(picked, crops))
    ]


def good_base(row: dict) -> dict:
    """The columns a decoded image row passes on to its crop rows, marked good."""
    return {**{k: v for k, v in row.items() if k not in IMAGE_COLUMNS}, REASON: "", ERROR: ""}


def scene_row(row: dict, image: torch.Tensor, max_side: int) -> dict:
    """The scene row of a decoded image row: the whole image, shrunk to fit `max_side`, as a crop of
    class SCENE_CLASS with id `<image_id>:scene`, so that the models after the detector describe the
    image itself (the sink writes it to SCENES_DIR, not among the crops)."""
    whole = np.array([0, 0, image.shape[2], image.shape[1]], np.float32)
    return {
        **good_base(row),
        "crop_id": f"{row['image_id']}:scene",
        "box": boxes.whole_image(int(row["width"]), int(row["height"])),
        "det_score": 0.0,
        "det_class": SCENE_CLASS,
        "crop": cut_crops(image, [whole], max_side)[0],
    }


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
    """Decoded rows to crop rows without detection: each image is one crop (garment product shots),
    its pixels (h, w, 3) host arrays."""
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    no_boxes = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
    whole = replace(cfg, no_detection="whole_image")
    out = [
        crop_rows(r, as_tensor(r["image"], "cpu"), no_boxes, whole)[0] if ok else passthrough_row(r)
        for r, ok in zip(rows, good_rows(batch))
    ]
    return to_batch(out, on_device=False)


def to_batch(rows: list[dict], on_device: bool) -> Batch:
    """Crop rows as a batch; `crop` pixels stay tensors `on_device`, else become (h, w, 3) host arrays."""
    columns = rows[0].keys()
    crops = [r["crop"] if on_device else as_array(r["crop"]) for r in rows]
    return {c: objects(crops) if c == "crop" else np.asarray([r[c] for r in rows]) for c in columns}


class CropDetector:
    """Ray Data stage: decoded image rows in (`image`: host arrays or tensors), crop rows out (see
    `crop_rows`), then with `scene_rows` the image's `scene_row` where it has good crops;
    quarantined image rows pass through as one quarantined crop row each. `crop`
    pixels are (h, w, 3) host arrays, or with `on_device` (3, h, w) tensors left on the detector's
    device for the next model in the same process. Uploading the images counts as `preprocess`,
    letterboxing and YOLO as `forward`, cutting and shrinking the crops as `postprocess`."""

    def __init__(
        self, cfg: DetectorConfig, storage: StorageConfig, timer: StepTimer | None = None, on_device: bool = False
    ):
        self.detector = YoloDetector(cfg, storage)
        self.cfg = cfg
        self.timer = timer or StepTimer()
        self.on_device = on_device

    def __call__(self, batch: Batch) -> Batch:
        with self.timer(PREPROCESS):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            good = good_rows(batch)
            images = [as_tensor(r["image"], self.detector.device) for r, ok in zip(rows, good) if ok]
        with self.timer(FORWARD):
            detections = iter(zip(images, self.detector(images)))
        with self.timer(POSTPROCESS):
            out = []
            for row, ok in zip(rows, good):
                if not ok:
                    out.append(passthrough_row(row))
                    continue
                image, found = next(detections)
                crops = crop_rows(row, image, found, self.cfg)
                out.extend(crops)
                if self.cfg.scene_rows and crops[0][REASON] == "":
                    out.append(scene_row(row, image, self.cfg.crop_max_side))
            return to_batch(out, self.on_device)
