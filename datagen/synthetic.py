"""Deterministic synthetic garment catalogue and lookbook scenes for the offline demo and tests.

Layout under ``out_dir``:
  garments/<garment_id>.png   256x256 RGB product shot on a light studio background
  lookbook/<image_id>.jpg     editorial scene, width 576..704, height 432..528 px, 0..3 garments
  garments.parquet            GARMENT_SCHEMA, one row per garment
  lookbook.parquet            LOOKBOOK_SCHEMA, one row per scene plus the bad inputs, sorted by image_id
  truth.parquet               TRUTH_SCHEMA, one row per (scene, pasted garment)

Every byte depends only on ``seed``, the sizes, ``vocab`` and ``out_dir`` (manifests hold absolute paths).
Each garment and each scene draws from its own ``default_rng([seed, stream, index])``.
"""

from __future__ import annotations

import io
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

from core.vocab import ATTRIBUTES
from datagen.drawing import (
    COLOUR_RGB,
    PATTERNS,
    draw_emblem,
    fabric,
    jittered_rgb,
    product_shot,
    random_colour,
    seam_colour,
)

GARMENT_SCHEMA = pa.schema(
    [("garment_id", pa.string()), ("uri", pa.string()), ("text", pa.string())]
    + [(name, pa.string()) for name in ATTRIBUTES]
)
LOOKBOOK_SCHEMA = pa.schema([("image_id", pa.string()), ("uri", pa.string())])
TRUTH_SCHEMA = pa.schema(
    [("image_id", pa.string()), ("garment_id", pa.string())]
    + [(name, pa.float32()) for name in ("x0", "y0", "x1", "y1")]
)

_TOP_SLEEVES = ("short-sleeved", "long-sleeved")
_ANY_SLEEVES = ("sleeveless", "short-sleeved", "long-sleeved")
_LEGS = {"cropped": 2.4, "full-length": 2.9}
_SKIRT = {"knee-length": 1.9, "midi": 2.3, "maxi": 2.8}
# category -> (silhouette family, sleeve values it may take, length value -> hem y in body units).
# Body units: shoulder line at y=0, shoulder width 1, waist at y=0.85, y grows downwards.
CATEGORY_STYLES: dict[str, tuple[str, tuple[str, ...], dict[str, float]]] = {
    "t-shirt": ("top", _TOP_SLEEVES, {"cropped": 0.7, "hip-length": 1.15}),
    "shirt": ("top", _TOP_SLEEVES, {"hip-length": 1.2}),
    "sweater": ("top", ("long-sleeved",), {"cropped": 0.75, "hip-length": 1.15}),
    "hoodie": ("top", ("long-sleeved",), {"cropped": 0.8, "hip-length": 1.2}),
    "jacket": ("top", ("long-sleeved",), {"cropped": 0.8, "hip-length": 1.2}),
    "coat": ("top", ("long-sleeved",), {"hip-length": 1.3, **_SKIRT}),
    "dress": ("dress", _ANY_SLEEVES, _SKIRT),
    "jumpsuit": ("jumpsuit", _ANY_SLEEVES, _LEGS),
    "skirt": ("skirt", ("none",), _SKIRT),
    "trousers": ("trousers", ("none",), _LEGS),
    "jeans": ("trousers", ("none",), _LEGS),
    "shorts": ("shorts", ("none",), {"cropped": 1.45, "knee-length": 1.85}),
}
_PLURAL_CATEGORIES = ("trousers", "jeans", "shorts")
_LOWER_BODY_FAMILIES = ("skirt", "trousers", "shorts")
_SLEEVE_POLYS = {  # right sleeve, body units
    "short-sleeved": [(0.46, 0.02), (0.76, 0.36), (0.60, 0.48), (0.42, 0.38)],
    "long-sleeved": [(0.46, 0.02), (0.82, 1.02), (0.64, 1.07), (0.42, 0.40)],
}
_SKIN = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 56, 32))
_CANVAS = 256  # product shot side, px
_GARMENT_STREAM, _SCENE_STREAM, _PLAN_STREAM = 0, 1, 2
_UNPLACED_FRACTION = 0.1  # garments held out of every scene: catalogue distractors
_GARMENTS_PER_SCENE_P = (0.15, 0.45, 0.25, 0.15)  # P(0), P(1), P(2), P(3) garments in a scene
_JPEG_QUALITY = 90
_TRUNCATED_FRACTION = 0.4

Poly = list[tuple[float, float]]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SampleInfo:
    """Absolute manifest paths and row counts of one generated sample."""

    garments_path: Path
    lookbook_path: Path
    truth_path: Path
    n_garments: int
    n_images: int  # rows of lookbook.parquet, bad_ids included
    n_placements: int  # rows of truth.parquet
    bad_ids: tuple[str, ...]  # unreadable lookbook rows: a zero-byte file, then a truncated JPEG


def caption(attributes: Mapping[str, str]) -> str:
    """Caption holding every attribute value verbatim, except sleeve ``none`` which is left out."""
    sleeve = "" if attributes["sleeve"] == "none" else f" {attributes['sleeve']}"
    article = "a pair of" if attributes["category"] in _PLURAL_CATEGORIES else "a"
    return (
        f"{article} {attributes['length']} {attributes['colour']} {attributes['pattern']}{sleeve}"
        f" {attributes['category']} for {attributes['occasion']} wear"
    )


def make_sample(
    out_dir: str | Path,
    n_garments: int,
    n_scenes: int,
    seed: int,
    vocab: Mapping[str, Sequence[str]],
    bad_files: bool = True,
) -> SampleInfo:
    """Write the sample laid out in the module docstring, overwriting files of the same name.

    Attribute values come from ``vocab`` verbatim, restricted to those the renderer draws (CATEGORY_STYLES,
    COLOUR_RGB, PATTERNS); ValueError if that leaves an attribute without values. ``_UNPLACED_FRACTION``
    of the garments appear in no scene, the others in 0..many. A truth box is the pasted garment's alpha
    extent clipped to its scene, in px: 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height. With ``bad_files``
    two extra ids (placed at random among the scene ids) point at unreadable files.
    Holds every garment cutout in memory (256 KiB each).
    """
    if n_garments < 1 or n_scenes < 0 or seed < 0:
        raise ValueError(f"need n_garments >= 1, n_scenes >= 0, seed >= 0; got {n_garments}, {n_scenes}, {seed}")
    out = Path(out_dir).resolve()
    (out / "garments").mkdir(parents=True, exist_ok=True)
    (out / "lookbook").mkdir(parents=True, exist_ok=True)
    garment_rows, cutouts = [], []
    for index in range(n_garments):
        rng = np.random.default_rng([seed, _GARMENT_STREAM, index])
        attributes = _sample_attributes(rng, vocab)
        cutouts.append(_render_garment(attributes, rng))
        path = out / "garments" / f"g{index:05d}.png"
        product_shot(cutouts[-1], rng).save(path, format="PNG")
        garment_rows.append({"garment_id": path.stem, "uri": str(path), "text": caption(attributes), **attributes})
    families = [CATEGORY_STYLES[row["category"]][0] for row in garment_rows]

    plan_rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_images = n_scenes + (2 if bad_files else 0)
    bad_positions = [int(p) for p in plan_rng.choice(n_images, 2, replace=False)] if bad_files else []
    scene_positions = [p for p in range(n_images) if p not in bad_positions]
    lookbook_rows, truth_rows = [], []
    for position, chosen in zip(scene_positions, _plan_scenes(plan_rng, n_garments, n_scenes), strict=True):
        rng = np.random.default_rng([seed, _SCENE_STREAM, position])
        scene, boxes = _compose_scene(rng, [cutouts[g] for g in chosen], [families[g] for g in chosen])
        path = out / "lookbook" / f"l{position:06d}.jpg"
        scene.save(path, format="JPEG", quality=_JPEG_QUALITY)
        lookbook_rows.append({"image_id": path.stem, "uri": str(path)})
        for garment, box in zip(chosen, boxes, strict=True):
            corners = dict(zip(("x0", "y0", "x1", "y1"), box, strict=True))
            truth_rows.append({"image_id": path.stem, "garment_id": f"g{garment:05d}", **corners})
    bad_contents = (b"", _truncated_jpeg(plan_rng)) if bad_files else ()
    for position, content in zip(bad_positions, bad_contents, strict=True):
        path = out / "lookbook" / f"l{position:06d}.jpg"
        path.write_bytes(content)
        lookbook_rows.append({"image_id": path.stem, "uri": str(path)})
    lookbook_rows.sort(key=lambda row: row["image_id"])

    tables = {"garments": (garment_rows, GARMENT_SCHEMA), "lookbook": (lookbook_rows, LOOKBOOK_SCHEMA),
              "truth": (truth_rows, TRUTH_SCHEMA)}  # fmt: skip
    for name, (rows, schema) in tables.items():
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / f"{name}.parquet")
    return SampleInfo(out / "garments.parquet", out / "lookbook.parquet", out / "truth.parquet",
                      n_garments, n_images, len(truth_rows), tuple(f"l{p:06d}" for p in bad_positions))  # fmt: skip


def _pick(rng: np.random.Generator, values: Sequence[str], supported: Container[str] | None, name: str) -> str:
    options = [value for value in values if supported is None or value in supported]
    if not options:
        raise ValueError(f"vocab[{name!r}] = {list(values)} has no value the renderer can draw")
    return str(options[int(rng.integers(len(options)))])


def _sample_attributes(rng: np.random.Generator, vocab: Mapping[str, Sequence[str]]) -> dict[str, str]:
    category = _pick(rng, vocab["category"], CATEGORY_STYLES, "category")
    _, sleeves, hems = CATEGORY_STYLES[category]
    supported = {"colour": COLOUR_RGB, "pattern": PATTERNS, "sleeve": sleeves, "length": hems, "occasion": None}
    return {"category": category, **{name: _pick(rng, vocab[name], ok, name) for name, ok in supported.items()}}


def _mirror(poly: Poly) -> Poly:
    return [(-x, y) for x, y in poly]


def _silhouette(category: str, sleeve: str, hem: float) -> tuple[list[Poly], list[tuple[str, Poly]]]:
    """Filled polygons in drawing order and (kind, points) details, all in body units.

    Detail kinds: hole (neckline ellipse cut out, 2 corner points), fill (polygon in the base colour),
    dot (button), line (seam in the seam colour), stitch (contrast thread).
    """
    family = CATEGORY_STYLES[category][0]
    shoulder, flare = (0.38 if sleeve == "sleeveless" else 0.5), 0.40 + 0.22 * (hem - 0.85)
    neck, legs = [(0.17, -0.05), (shoulder, 0.04)], [(0.44, 1.25), (0.40, hem), (0.05, hem), (0.0, 1.4)]
    right = {
        "top": [*neck, (0.44, 0.42), (0.46 + 0.06 * max(0.0, hem - 1.2), hem)],
        "dress": [*neck, (0.40, 0.42), (0.34, 0.85), (flare, hem)],
        "jumpsuit": [*neck, (0.42, 0.42), (0.38, 0.85), *legs],
        "skirt": [(0.0, 0.85), (0.36, 0.85), (flare, hem)],
        "trousers": [(0.0, 0.85), (0.38, 0.85), *legs],
        "shorts": [(0.0, 0.85), (0.38, 0.85), (0.46, 1.2), (0.5, hem), (0.06, hem), (0.0, 1.3)],
    }[family]
    polys = [_SLEEVE_POLYS[sleeve], _mirror(_SLEEVE_POLYS[sleeve])] if sleeve in _SLEEVE_POLYS else []
    if category == "hoodie":
        polys.append([(-0.26, 0.02), (-0.28, -0.2), (0.0, -0.34), (0.28, -0.2), (0.26, 0.02)])
    polys.append(right + _mirror(right[::-1]))

    paired: list[tuple[str, Poly]] = []  # drawn as given and mirrored
    details: list[tuple[str, Poly]] = []
    if family not in _LOWER_BODY_FAMILIES:
        details.append(("hole", [(-0.17, -0.17), (0.17, 0.07)]))  # neckline
    if category == "shirt":
        paired.append(("fill", [(0.0, 0.07), (0.2, -0.08), (0.14, 0.17)]))
        details += [("line", [(0.0, 0.07), (0.0, hem)])]  # placket
        details += [("dot", [(0.0, y)]) for y in np.arange(0.25, hem - 0.1, 0.2)]
    elif category in ("jacket", "coat"):
        paired += [("fill", [(0.17, -0.05), (0.0, 0.36), (0.24, 0.16)])]  # lapel
        paired += [("line", [(0.14, hem - 0.3), (0.34, hem - 0.3)])]  # pocket
        details += [("line", [(0.0, 0.36), (0.0, hem)])]  # front opening
        details += [("dot", [(0.05, y)]) for y in np.arange(0.45, hem - 0.1, 0.25)]
    elif category == "hoodie":
        paired += [("line", [(0.0, hem - 0.4), (0.25, hem - 0.4), (0.32, hem - 0.08), (0.0, hem - 0.08)])]  # pocket
        paired += [("line", [(0.07, 0.05), (0.08, 0.3)])]  # drawstring
    elif category == "sweater":
        details.append(("line", [(-0.46, hem - 0.08), (0.46, hem - 0.08)]))
    elif category == "jeans":
        paired.append(("stitch", [(0.36, 0.95), (0.22, 1.1), (0.1, 0.93)]))
        details.append(("stitch", [(0.04, 0.93), (0.04, 1.22), (0.0, 1.3)]))
    elif category == "trousers":
        paired.append(("line", [(0.22, 1.0), (0.22, hem)]))
    if family in ("dress", "jumpsuit"):
        details.append(("line", [(-0.36, 0.85), (0.36, 0.85)]))
    elif family in _LOWER_BODY_FAMILIES:
        details.append(("line", [(-0.38, 0.93), (0.38, 0.93)]))
    return polys, details + paired + [(kind, _mirror(points)) for kind, points in paired]


def _render_garment(attributes: Mapping[str, str], rng: np.random.Generator) -> Image.Image:
    """_CANVAS x _CANVAS RGBA cutout: alpha 255 on the garment, 0 elsewhere."""
    hem = CATEGORY_STYLES[attributes["category"]][2][attributes["length"]]
    polys, details = _silhouette(attributes["category"], attributes["sleeve"], hem)
    points = np.concatenate([np.array(p) for p in polys])
    lo, span = points.min(0), points.max(0) - points.min(0)
    scale = (_CANVAS - 40) / span.max()  # body units -> px, 20 px margin
    offset = (_CANVAS - span * scale) / 2 - lo * scale

    def px(poly: Poly) -> list[tuple[float, float]]:
        return [(x, y) for x, y in (np.array(poly) * scale + offset).tolist()]

    base = jittered_rgb(attributes["colour"], rng)
    seam = seam_colour(base)
    shade = 1 - 0.22 * np.linspace(-1, 1, _CANVAS, dtype=np.float32) ** 2  # cylinder shading across x
    swatch = np.asarray(fabric(attributes["pattern"], base, rng, _CANVAS))
    cloth = Image.fromarray((swatch * shade[:, None]).astype(np.uint8))
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw, mask_draw = ImageDraw.Draw(cloth), ImageDraw.Draw(mask)
    for poly in polys:
        mask_draw.polygon(px(poly), fill=255)
        draw.polygon(px(poly), outline=seam, width=2)
    if attributes["pattern"] == "graphic":
        draw_emblem(draw, mask.getbbox(), base, seam, rng)
    for kind, xy in ((kind, px(points)) for kind, points in details):
        if kind == "hole":
            mask_draw.ellipse(xy, fill=0)
            draw.ellipse(xy, outline=seam, width=2)
        elif kind == "fill":
            mask_draw.polygon(xy, fill=255)
            draw.polygon(xy, fill=base, outline=seam, width=2)
        elif kind == "dot":
            draw.circle(xy[0], 0.012 * scale, fill=seam)
        else:
            draw.line(xy, fill=(214, 170, 60) if kind == "stitch" else seam, width=2)
    cutout = cloth.convert("RGBA")
    cutout.putalpha(mask)
    return cutout


def _plan_scenes(rng: np.random.Generator, n_garments: int, n_scenes: int) -> list[list[int]]:
    """Distinct garment indices per scene; long-tailed popularity, held-out garments have weight 0."""
    popularity = rng.lognormal(0.0, 1.0, n_garments)
    popularity[rng.choice(n_garments, int(round(_UNPLACED_FRACTION * n_garments)), replace=False)] = 0.0
    placeable, plan = int((popularity > 0).sum()), []
    for _ in range(n_scenes):
        count = min(int(rng.choice(len(_GARMENTS_PER_SCENE_P), p=_GARMENTS_PER_SCENE_P)), placeable)
        plan.append([int(g) for g in rng.choice(n_garments, count, replace=False, p=popularity / popularity.sum())])
    return plan


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Gradient wall, optional floor or striped wallpaper, 0..8 props, sometimes out of focus."""
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = np.array(random_colour(rng), np.float32), np.array(random_colour(rng), np.float32)
    rows, columns = top * (1 - t) + bottom * t, np.ones((1, width, 1), np.float32)  # (h, 1, 3), (1, w, 1)
    style, horizon = int(rng.integers(3)), int(height * rng.uniform(0.55, 0.8))
    if style == 1:  # wall and floor
        floor = np.array(random_colour(rng), np.float32)
        rows[horizon:] = floor * np.linspace(0.8, 1.1, height - horizon, dtype=np.float32)[:, None, None]
    elif style == 2:  # striped wallpaper
        period = int(rng.integers(16, 90))
        columns[:, np.arange(width) % period < period // 2] = rng.uniform(0.72, 0.92)
    scene = Image.fromarray((rows * columns).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(scene)
    for x in np.linspace(-width, 2 * width, int(rng.integers(6, 20))) if style == 1 else ():  # floor boards
        draw.line([(width / 2 + (x - width / 2) * 0.3, horizon), (x, height)], fill=random_colour(rng), width=2)
    for _ in range(int(rng.integers(0, 9))):
        x, y = rng.uniform(-50, width), rng.uniform(-50, height)
        box = (x, y, x + rng.uniform(20, 0.4 * width), y + rng.uniform(20, 0.5 * height))
        shape = draw.rectangle if rng.random() < 0.6 else draw.ellipse
        shape(box, fill=random_colour(rng), outline=random_colour(rng) if rng.random() < 0.5 else None, width=3)
    return scene.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3)))) if rng.random() < 0.35 else scene


def _pose(cutout: Image.Image, height: int, rng: np.random.Generator) -> Image.Image:
    """Cutout cropped to the garment, maybe mirrored, perspective-warped, scaled to ``height`` px,
    rotated by -12..12 deg and relit; RGBA with transparent surround."""
    garment = cutout.crop(cutout.getbbox())
    if rng.random() < 0.5:
        garment = garment.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = garment.size
    quad = np.array([0, 0, 0, h, w, h, w, 0]) + rng.uniform(-0.07, 0.07, 8) * np.array([w, h] * 4)  # NW SW SE NE
    garment = garment.transform((w, h), Image.Transform.QUAD, quad.tolist(), Image.Resampling.BILINEAR)
    garment = garment.resize((max(1, round(w * height / h)), height), Image.Resampling.BILINEAR)
    garment = garment.rotate(float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR, expand=True)
    pixels = np.asarray(garment).astype(np.float32)
    pixels[..., :3] *= rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGBA")


def _draw_person(draw: ImageDraw.ImageDraw, box: Box, family: str, rng: np.random.Generator) -> None:
    """Head plus torso or legs around where a garment of ``family`` will be pasted over ``box``."""
    x0, y0, x1, y1 = box
    cx, bw, bh = (x0 + x1) / 2, x1 - x0, y1 - y0
    skin, clothes = _SKIN[int(rng.integers(len(_SKIN)))], random_colour(rng)
    if family in _LOWER_BODY_FAMILIES:
        neck_y, r, leg_end = y0 - 0.7 * bh, 0.22 * bw, y1 + (0.05 if family == "trousers" else 0.8) * bh
        draw.rectangle((cx - 0.55 * bw, neck_y, cx + 0.55 * bw, y0 + 5), fill=clothes)
    else:
        neck_y, r, leg_end = y0 + 0.05 * bh, 0.12 * bw, y1 + (1.2 if family == "top" else 0.1) * bh
    draw.rectangle((cx - 0.4 * r, neck_y - 1.4 * r, cx + 0.4 * r, neck_y + 5), fill=skin)
    draw.ellipse((cx - r, neck_y - 3.1 * r, cx + r, neck_y - 0.9 * r), fill=skin)
    for side in (-1, 1):
        leg = [(cx + side * 0.12 * bw, y1 - 10), (cx + side * 0.14 * bw, leg_end)]
        draw.line(leg, fill=clothes if family == "top" else skin, width=max(3, int(0.12 * bw)))


def _compose_scene(
    rng: np.random.Generator, cutouts: Sequence[Image.Image], families: Sequence[str]
) -> tuple[Image.Image, list[Box]]:
    """RGB scene and, per cutout in order, its pasted (x0, y0, x1, y1) px box clipped to the scene."""
    width, height = int(rng.integers(576, 705)), int(rng.integers(432, 529))
    scene = _background(rng, width, height)
    draw, column, boxes = ImageDraw.Draw(scene), width / max(1, len(cutouts)), []
    for slot, (cutout, family) in enumerate(zip(cutouts, families, strict=True)):
        c0, d0, c1, d1 = cutout.getbbox()
        posed = _pose(cutout, int(min(height * rng.uniform(0.35, 0.8), 0.95 * column * (d1 - d0) / (c1 - c0))), rng)
        cx = (slot + 0.5 + rng.uniform(-0.15, 0.15)) * column
        cy = height - posed.height * rng.uniform(0.15, 0.4) if rng.random() < 0.12 else height * rng.uniform(0.4, 0.62)
        left, top = int(cx - posed.width / 2), int(cy - posed.height / 2)
        if rng.random() < 0.5:
            _draw_person(draw, (left, top, left + posed.width, top + posed.height), family, rng)
        scene.paste(posed, (left, top), posed)
        a0, b0, a1, b1 = posed.getchannel("A").getbbox()
        box = (max(0.0, left + a0), max(0.0, top + b0), min(float(width), left + a1), min(float(height), top + b1))
        boxes.append(box)
        if rng.random() < 0.2:  # a prop in front of part of the garment
            ox, oy = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
            ow, oh = rng.uniform(0.08, 0.18) * (box[2] - box[0]), rng.uniform(0.08, 0.18) * (box[3] - box[1])
            prop = draw.rectangle if rng.random() < 0.5 else draw.ellipse
            prop((ox - ow, oy - oh, ox + ow, oy + oh), fill=random_colour(rng))
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.9, 1.1, 3)  # exposure and colour cast, per channel
    scene = scene.point(np.clip(np.arange(256)[None, :] * gain[:, None], 0, 255).astype(np.uint8).ravel().tolist())
    grain = (rng.standard_normal((height, width, 1), dtype=np.float32) * rng.uniform(1, 8)).astype(np.int16)
    return Image.fromarray((np.asarray(scene).astype(np.int16) + grain).clip(0, 255).astype(np.uint8)), boxes


def _truncated_jpeg(rng: np.random.Generator) -> bytes:
    """A garment-free scene encoded as JPEG and cut to _TRUNCATED_FRACTION of its bytes."""
    buffer = io.BytesIO()
    _compose_scene(rng, [], [])[0].save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()[: int(len(buffer.getvalue()) * _TRUNCATED_FRACTION)]
