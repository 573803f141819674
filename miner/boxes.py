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


def crop_pixels(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The (h, w, 3) pixels inside `box` (pixel coordinates of `image`), at least 1x1."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1 = max(int(np.ceil(box[2])), x0 + 1)
    y1 = max(int(np.ceil(box[3])), y0 + 1)
    return image[y0:y1, x0:x1]
