"""Product shots as sketch-like edge maps: Canny on the blurred grey image, small specks removed,
black lines on white. A light garment on a light background has little contrast at its outline,
so its grey levels are equalised first (CLAHE) and the outline survives."""

from __future__ import annotations

import re

import cv2
import numpy as np

from core.config import SketchConfig

WHITE = 255


def is_light(text: str, pixels: np.ndarray, cfg: SketchConfig) -> bool:
    """Whether the garment is light: its text (catalogue text or colour) names a light colour
    (`cfg.light_words`), or the mean grey level of the shot's central half is >= `cfg.light_level`
    (product shots are centred)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    if words & set(cfg.light_words):
        return True
    height, width = pixels.shape[:2]
    centre = pixels[height // 4 : height - height // 4, width // 4 : width - width // 4]
    return bool(centre.size) and float(cv2.cvtColor(centre, cv2.COLOR_RGB2GRAY).mean()) >= cfg.light_level


def edge_map(pixels: np.ndarray, equalise: bool, cfg: SketchConfig) -> np.ndarray:
    """(h, w) uint8 edge map of an (h, w, 3) RGB image: 0 on the lines, 255 elsewhere. With
    `equalise`, CLAHE (`cfg.clahe_clip`, `cfg.clahe_tiles`) first; edges are Canny's at
    `cfg.canny_low` / `cfg.canny_high` after a 5x5 Gaussian blur, connected lines shorter than
    `cfg.min_line_px` pixels are dropped, and the rest widened to `cfg.line_width` x the longer side."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    if equalise:
        tiles = (cfg.clahe_tiles, cfg.clahe_tiles)
        grey = cv2.createCLAHE(clipLimit=cfg.clahe_clip, tileGridSize=tiles).apply(grey)
    edges = cv2.Canny(cv2.GaussianBlur(grey, (5, 5), 0), cfg.canny_low, cfg.canny_high)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    kept = stats[:, cv2.CC_STAT_AREA] >= cfg.min_line_px
    kept[0] = False  # the background component
    width = max(1, round(cfg.line_width * max(grey.shape)))
    lines = cv2.dilate(kept[labels].astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    return np.where(lines > 0, 0, WHITE).astype(np.uint8)


def garment_sketch(
    pixels: np.ndarray, text: str | None, colour: str | None, cfg: SketchConfig
) -> tuple[np.ndarray, bool]:
    """A product shot's sketch as jobs.make_sketches draws it, and whether it was equalised (when
    `cfg.equalise` and the garment `is_light` by its catalogue `text` and `colour`, or its shot)."""
    light = bool(cfg.equalise and is_light(f"{text or ''} {colour or ''}", pixels, cfg))
    return edge_map(pixels, light, cfg), light
