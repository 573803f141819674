"""A benchmark split as an ultralytics YOLO detection data set (one class, "garment"), and box recall.

Layout written under a work folder, as ultralytics expects (labels found by replacing "images" with
"labels" in the image path):
  images/<name>/<image_id>.<ext>   symbolic link to the scene
  labels/<name>/<image_id>.txt     one line per truth box: "0 cx cy w h", normalised to 0..1
  data.yaml                        path, train, val and names
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from PIL import UnidentifiedImageError

from core.images import pillow_open
from training.data import read_rows

GARMENT_CLASS = 0
CLASS_NAMES = {GARMENT_CLASS: "garment"}
JPEG_END = b"\xff\xd9"


def yolo_label_lines(boxes: np.ndarray, width: int, height: int) -> list[str]:
    """One "class cx cy w h" line per (x0, y0, x1, y1) pixel box, clipped to the image and normalised
    by its `width` and `height`, 6 decimals; boxes with no area inside the image are left out."""
    lines = []
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x0, x1 = np.clip([x0, x1], 0, width) / width
        y0, y1 = np.clip([y0, y1], 0, height) / height
        if x1 > x0 and y1 > y0:
            lines.append(f"{GARMENT_CLASS} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}")
    return lines


def image_size(uri: str) -> tuple[int, int] | None:
    """(width, height) from the header, or None if the file is not an image or is a JPEG cut short (no
    end-of-image marker: ultralytics would re-save such a file in place, here through the link into the
    benchmark). Pillow's own `Image.open`, not ultralytics' replacement."""
    try:
        with pillow_open()(uri) as image:
            size, kind = image.size, image.format
        with open(uri, "rb") as file:
            file.seek(-2, 2)
            complete = kind != "JPEG" or file.read() == JPEG_END
    except (OSError, UnidentifiedImageError):
        return None
    return size if complete else None


def write_split(split: str | Path, work: Path, name: str, max_scenes: int | None = None) -> int:
    """Replace images/<name> and labels/<name>: link the first `max_scenes` readable scenes of `split`
    (lookbook order; None: all) into images/<name> and write their label files (empty for a scene without
    garments); distractor garments (garment_id "") are garments too. Returns the scene count."""
    boxes: dict[str, list[list[float]]] = {}
    for row in read_rows(split, "truth"):
        boxes.setdefault(row["image_id"], []).append([row["x0"], row["y0"], row["x1"], row["y1"]])
    images, labels = work / "images" / name, work / "labels" / name
    for folder in (images, labels):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    count = 0
    for row in read_rows(split, "lookbook"):
        if max_scenes is not None and count >= max_scenes:
            break
        size = image_size(row["uri"])
        if size is None:
            continue
        link = images / f"{row['image_id']}{Path(row['uri']).suffix}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path(row["uri"]).resolve())
        lines = yolo_label_lines(np.array(boxes.get(row["image_id"], []), dtype=np.float64), *size)
        (labels / f"{row['image_id']}.txt").write_text("".join(f"{line}\n" for line in lines))
        count += 1
    return count


def write_dataset(train: str | Path, val: str | Path, work: str | Path, val_scenes: int | None = None) -> Path:
    """Write the layout in the module docstring for a train split and the first `val_scenes` scenes of a
    validation split (None: all); return data.yaml."""
    work = Path(work).resolve()
    write_split(train, work, "train")
    write_split(val, work, "val", val_scenes)
    data = {"path": str(work), "train": "images/train", "val": "images/val", "names": CLASS_NAMES}
    (work / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return work / "data.yaml"


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) intersection over union of (n, 4) and (m, 4) xyxy boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def matched_truth(truth: np.ndarray, predicted: np.ndarray, min_iou: float = 0.5) -> int:
    """Truth boxes matched one-to-one by a predicted box with IoU >= `min_iou`, pairs taken greedily
    by descending IoU."""
    iou = iou_matrix(truth, predicted)
    pairs = sorted(((v, t, p) for (t, p), v in np.ndenumerate(iou) if v >= min_iou), reverse=True)
    used_t, used_p = set(), set()
    for _, t, p in pairs:
        if t not in used_t and p not in used_p:
            used_t.add(t)
            used_p.add(p)
    return len(used_t)


def box_recall(truth: Sequence[np.ndarray], predicted: Sequence[np.ndarray], min_iou: float = 0.5) -> float:
    """Fraction of all truth boxes (per image (n_i, 4)) matched by that image's predicted boxes."""
    total = sum(len(t) for t in truth)
    return sum(matched_truth(t, p, min_iou) for t, p in zip(truth, predicted)) / total if total else 0.0
