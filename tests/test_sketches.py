"""Edge-map sketches: the light-garment equalisation, speck removal, and jobs.make_sketches on local Ray."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from actors.sketcher import sketch_images
from core.config import DecodeConfig, SketchConfig
from core.images import NOT_FOUND
from core.sketches import WHITE, edge_map, is_light
from core.storage import StorageConfig
from jobs import make_sketches

CFG = SketchConfig()
SIZE = 200


def light_garment_on_a_ramp() -> tuple[np.ndarray, np.ndarray]:
    """An ivory ellipse (grey 240, slight noise) on a studio ramp from 214 (top) to 236 (bottom):
    the contrast at its outline falls from 26 to 4 levels. Returns (image, outline mask)."""
    ramp = np.linspace(214, 236, SIZE)[:, None].repeat(SIZE, 1)
    inside = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(inside, (100, 100), (60, 80), 0, 0, 360, 1, -1)
    garment = 240 + np.random.default_rng(0).normal(0, 1.5, (SIZE, SIZE))
    grey = np.where(inside > 0, garment, ramp).clip(0, 255).astype(np.uint8)
    outline = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(outline, (100, 100), (60, 80), 0, 0, 360, 1, 1)
    return np.stack([grey] * 3, axis=-1), outline > 0


def outline_recall(lines: np.ndarray, outline: np.ndarray) -> float:
    """Outline pixels with a drawn line within 2 pixels."""
    near = cv2.dilate((lines == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return float(near[outline].mean())


def test_equalising_a_light_garment_keeps_its_outline() -> None:
    image, outline = light_garment_on_a_ramp()
    assert outline_recall(edge_map(image, equalise=False, cfg=CFG), outline) < 0.5
    assert outline_recall(edge_map(image, equalise=True, cfg=CFG), outline) > 0.9


def test_lines_are_black_on_white_and_specks_are_dropped() -> None:
    image = np.full((SIZE, SIZE, 3), 250, np.uint8)
    cv2.rectangle(image, (40, 40), (160, 160), (20, 20, 120), -1)  # a dark garment: a long outline
    image[10:13, 10:13] = 0  # a 3x3 speck: a short closed line, below min_line_px
    lines = edge_map(image, equalise=False, cfg=CFG)
    assert lines.dtype == np.uint8 and set(np.unique(lines)) == {0, WHITE}
    assert (lines[5:20, 5:20] == WHITE).all()
    assert (lines[35:45, 60:140] == 0).any() and (lines[80:120, 80:120] == WHITE).all()  # outline, flat inside


def test_a_garment_is_light_by_its_text_or_its_shot() -> None:
    dark = np.full((40, 40, 3), 60, np.uint8)
    assert is_light("a cream striped dress", dark, CFG) and is_light("Light-Grey coat", dark, CFG)
    assert not is_light("a navy coat", dark, CFG)
    assert is_light("a navy coat", np.full((40, 40, 3), 230, np.uint8), CFG)  # the shot's centre is light


@pytest.mark.ray
def test_make_sketches_writes_a_sketch_per_readable_garment_and_keeps_the_rest(sample, local_ray, tmp_path) -> None:
    garments = pq.read_table(sample.garments_path)
    missing = {"garment_id": ["g_missing"], "uri": [str(tmp_path / "nowhere.png")]}
    missing.update({c: [""] for c in garments.column_names if c not in missing})
    manifest = tmp_path / "garments.parquet"
    pq.write_table(pa.concat_tables([garments, pa.table(missing).cast(garments.schema)]), manifest)
    roots = f"storage.allowed_local_roots=[{sample.garments_path.parent},{tmp_path}]"
    summary = make_sketches.main([str(manifest), str(tmp_path / "out"), roots, "progress=false"])
    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    assert sorted(r["garment_id"] for r in rows) == sorted([*garments["garment_id"].to_pylist(), "g_missing"])
    assert summary == {**summary, "garments": len(rows), "sketched": len(rows) - 1, "quarantined": {NOT_FOUND: 1}}
    for row in rows:
        if row["garment_id"] == "g_missing":
            assert row["reason"] == NOT_FOUND and row["sketch_uri"] == ""
            continue
        sketch = np.asarray(Image.open(row["sketch_uri"]))
        shot = Image.open(row["uri"])
        assert sketch.shape == (shot.height, shot.width) and 0.0 < (sketch == 0).mean() < 0.3


def test_sketches_of_light_garments_are_equalised_unless_turned_off(tmp_path) -> None:
    image, outline = light_garment_on_a_ramp()
    Image.fromarray(image).save(tmp_path / "ivory.png")
    batch = {k: np.array([v], dtype=object) for k, v in (("image_id", "g1"), ("uri", str(tmp_path / "ivory.png")))}
    batch.update(text=np.array(["an ivory dress"], dtype=object), colour=np.array([""], dtype=object))
    storage = StorageConfig(allowed_local_roots=[str(tmp_path)])
    for equalise in (True, False):
        cfg = replace(CFG, equalise=equalise)
        out = sketch_images(dict(batch), cfg, DecodeConfig(), storage, str(tmp_path / f"sketches-{equalise}"))
        lines = np.asarray(Image.open(out["sketch_uri"][0]))
        assert out["light"].tolist() == [equalise] and out["reason"].tolist() == [""]
        assert (outline_recall(lines, outline) > 0.9) == equalise
