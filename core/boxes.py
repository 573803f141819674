"""Box geometry for detections. Boxes are float [x0, y0, x1, y1] in pixels, x1 > x0, y1 > y0."""

from __future__ import annotations

import numpy as np


def select_boxes(
    boxes: np.ndarray, scores: np.ndarray, min_score: float, max_boxes: int, min_side: float
) -> np.ndarray:
    """Indices of the boxes to keep: score >= min_score, both sides >= min_side, at most
    `max_boxes`, highest score first (ties: lower index first).

    boxes: (n, 4) float; scores: (n,) float. Returns (m,) int64, m <= max_boxes.
    """
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
    keep = np.flatnonzero((scores >= min_score) & (sides >= min_side))
    order = np.lexsort((keep, -scores[keep]))
    return keep[order][:max_boxes].astype(np.int64)


def pad_and_clip(box: np.ndarray, padding: float, width: int, height: int) -> np.ndarray:
    """The box grown by `padding` x its side on every side, clipped to the image. (4,) float32."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * padding, (y1 - y0) * padding
    return np.array(
        [max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(width), x1 + dx), min(float(height), y1 + dy)],
        dtype=np.float32,
    )


def whole_image(width: int, height: int) -> np.ndarray:
    return np.array([0.0, 0.0, float(width), float(height)], dtype=np.float32)


def pixel_window(box: np.ndarray) -> tuple[int, int, int, int]:
    """The whole pixels (x0, y0, x1, y1) that cover `box`, at least 1x1."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    return x0, y0, max(int(np.ceil(box[2])), x0 + 1), max(int(np.ceil(box[3])), y0 + 1)


def crop_pixels(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The (h, w, 3) pixels inside `box` (pixel coordinates of `image`): `pixel_window`'s."""
    x0, y0, x1, y1 = pixel_window(box)
    return image[y0:y1, x0:x1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) float64 intersection over union of boxes a (n, 4) and b (m, 4); 0 where the union is empty."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_by_iou(truth: np.ndarray, found: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of truth boxes (n, 4) to found boxes (m, 4): pairs with IoU >= min_iou,
    taken greedily by IoU descending (ties: lower truth index, then lower found index), each box
    used at most once. Returns (truth indices, found indices), int64, in the order taken."""
    overlaps = iou(truth, found)
    t, f = np.nonzero(overlaps >= min_iou)
    taken_t, taken_f, used_t, used_f = [], [], set(), set()
    for i in np.lexsort((f, t, -overlaps[t, f])):
        if t[i] not in used_t and f[i] not in used_f:
            used_t.add(t[i])
            used_f.add(f[i])
            taken_t.append(t[i])
            taken_f.append(f[i])
    return np.asarray(taken_t, np.int64), np.asarray(taken_f, np.int64)
