"""Labelled images of one benchmark split for training and hold-out checks: garment product shots and
scene crops at the truth boxes, resized for a model.

A split folder holds garments.parquet (GARMENT_SCHEMA), lookbook.parquet (LOOKBOOK_SCHEMA) and
truth.parquet (TRUTH_SCHEMA; rows with garment_id "" are distractor garments, described by optional
category / colour / pattern columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from core import boxes
from core.config import SketchConfig
from core.images import pillow_open
from core.sketches import garment_sketch
from core.vocab import ATTRIBUTES

Resize = Callable[[list[Image.Image]], np.ndarray]  # PIL images -> (n, s, s, 3) uint8


@dataclass
class SplitImages:
    """n images of one split. Row i shows garment `garment_ids[i]` ("" for a distractor garment)."""

    pixels: np.ndarray  # (n, s, s, 3) uint8, model input size
    garment_ids: list[str]
    attributes: list[dict[str, str]]  # every name of ATTRIBUTES; "" where unknown
    texts: list[str]  # the garment's catalogue text; "" for distractors
    is_shot: np.ndarray  # (n,) bool: product shot (True) or scene crop (False)


def read_rows(folder: str | Path, name: str) -> list[dict]:
    return pq.read_table(Path(folder) / f"{name}.parquet").to_pylist()


def rgb(uri: str) -> Image.Image:
    with pillow_open()(uri) as image:
        return image.convert("RGB")


def load_split(
    folder: str | Path,
    resize: Resize,
    box_padding: float,
    max_scenes: int | None = None,
    chunk: int = 256,
    sketches: SketchConfig | None = None,
) -> SplitImages:
    """Every garment's product shot, then one crop per truth row of the first `max_scenes` scenes
    (lookbook order; None: all), the truth box grown by `box_padding` of its side as the job's
    detector crops do; with `sketches`, then every garment's sketch (`core.sketches.garment_sketch`)
    as a further view of it that knows only its category. Images are resized `chunk` at a time."""
    garments = read_rows(folder, "garments")
    by_id = {g["garment_id"]: g for g in garments}
    uris = {row["image_id"]: row["uri"] for row in read_rows(folder, "lookbook")}
    truth = read_rows(folder, "truth")
    scenes = list(dict.fromkeys(row["image_id"] for row in truth))[:max_scenes]
    rows_by_scene: dict[str, list[dict]] = {}
    for row in truth:
        rows_by_scene.setdefault(row["image_id"], []).append(row)

    total = len(garments) * (2 if sketches else 1) + sum(len(rows_by_scene[i]) for i in scenes)
    ids, attributes, texts, pending = [], [], [], []
    pixels: np.ndarray | None = None  # (total, s, s, 3), filled in place: no second copy while loading

    def flush() -> None:
        nonlocal pixels
        if pending:
            resized = resize(pending)
            if pixels is None:
                pixels = np.empty((total, *resized.shape[1:]), resized.dtype)
            pixels[len(ids) - len(resized) : len(ids)] = resized
            pending.clear()

    def add(image: Image.Image, garment_id: str, attrs: dict[str, str], text: str) -> None:
        ids.append(garment_id)
        attributes.append({a: attrs.get(a) or "" for a in ATTRIBUTES})
        texts.append(text)
        pending.append(image)
        if len(pending) >= chunk:
            flush()

    for garment in garments:
        add(rgb(garment["uri"]), garment["garment_id"], garment, garment.get("text") or "")
    for image_id in scenes:
        scene = rgb(uris[image_id])
        for row in rows_by_scene[image_id]:
            box = np.array([row["x0"], row["y0"], row["x1"], row["y1"]], np.float32)
            box = boxes.pad_and_clip(box, box_padding, scene.width, scene.height)
            crop = Image.fromarray(boxes.crop_pixels(np.asarray(scene), box))
            garment = by_id.get(row["garment_id"])
            add(crop, row["garment_id"] if garment else "", garment or row, (garment or {}).get("text") or "")
    for garment in garments if sketches else ():
        lines, _ = garment_sketch(np.asarray(rgb(garment["uri"])), garment.get("text"), garment.get("colour"), sketches)
        add(Image.fromarray(lines).convert("RGB"), garment["garment_id"], {"category": garment["category"]}, "")
    flush()
    if pixels is None:
        raise ValueError(f"{folder} has no garments and no truth rows to load")
    return SplitImages(
        pixels=pixels,
        garment_ids=ids,
        attributes=attributes,
        texts=texts,
        is_shot=np.arange(len(ids)) < len(garments),
    )
