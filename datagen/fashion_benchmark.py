"""Labelled benchmark from Fashion-MNIST: catalogue product shots, editorial lookbook scenes and true pairs.

Layout under ``out_dir``, for split in (train, test):
  <split>/garments/g000000.png  BenchmarkSpec.garment_size square RGB product shot of one catalogue garment
  <split>/lookbook/l000000.jpg  scene, size in BenchmarkSpec's ranges, 1..len(garments_per_scene) garments
  <split>/garments.parquet      BENCHMARK_GARMENT_SCHEMA, one row per catalogue garment
  <split>/lookbook.parquet      LOOKBOOK_SCHEMA, one row per scene
  <split>/truth.parquet         BENCHMARK_TRUTH_SCHEMA, one row per garment placed in a scene; distractors
                                (garments not in the catalogue) have garment_id ""
  DATASET.md                    what the data is, how it was made, the counts

A garment is one Fashion-MNIST item (28x28 grey), upscaled, its grey shading kept as texture over a fabric of
one vocabulary colour and pattern (datagen.drawing), its alpha from the grey levels. The train split draws
every garment and distractor from Fashion-MNIST's train file, the test split from its t10k file, so test
garments are never seen in training. Every byte depends only on ``seed``, the sizes, the vocabulary, the spec
and ``out_dir`` (manifests hold absolute paths), not on ``workers``: each garment, distractor and scene
draws from its own ``default_rng([seed, split stream, kind stream, index])``.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageChops, ImageDraw

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
from datagen.fmnist import FILE_PREFIX, LABELS, load_split
from datagen.synthetic import GARMENT_SCHEMA, LOOKBOOK_SCHEMA, TRUTH_SCHEMA

# Fashion-MNIST label (datagen.fmnist.LABELS order) -> vocabulary category. Items whose category is not in the
# vocabulary are left out.
FMNIST_CATEGORIES = ("t-shirt", "trousers", "sweater", "dress", "coat", "sandals", "shirt", "sneakers", "bag", "boots")
SPLITS = ("train", "test")
BENCHMARK_GARMENT_SCHEMA = GARMENT_SCHEMA.append(pa.field("source", pa.string()))
BENCHMARK_TRUTH_SCHEMA = pa.schema(
    list(TRUTH_SCHEMA) + [pa.field(name, pa.string()) for name in ("category", "colour", "pattern", "source")]
)
_GARMENT_STREAM, _DISTRACTOR_STREAM, _SCENE_STREAM, _PLAN_STREAM = 0, 1, 2, 3
_ROWS_PER_BATCH = 4096  # Parquet rows buffered before a write

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BenchmarkSpec:
    """How garments and scenes are drawn. Fractions are exact counts after rounding (see plan_split)."""

    garment_size: int = 224  # product shot side, px
    item_margin: float = 0.08  # blank border around the item in a product shot, fraction of the side
    scene_width: tuple[int, int] = (480, 640)  # px, inclusive
    scene_height: tuple[int, int] = (360, 480)  # px, inclusive
    garments_per_scene: tuple[float, ...] = (0.3, 0.35, 0.2, 0.15)  # P(1), P(2), ... garments in a scene
    empty_fraction: float = 0.1  # scenes with no catalogue garment (distractors only)
    distractor_fraction: float = 0.25  # placed garments, over the split, that are distractors
    unplaced_fraction: float = 0.1  # catalogue garments kept out of every scene
    height_fraction: tuple[float, float] = (0.3, 0.75)  # garment height / scene height, before rotation
    max_rotation: float = 20.0  # degrees, either way
    perspective: float = 0.08  # corner jitter, fraction of the garment's width and height
    border_crop_p: float = 0.15  # chance a garment is pushed 20..50 % out of the frame
    occlusion_p: float = 0.3  # chance an object covers part of a garment
    jpeg_quality: int = 90


@dataclass(frozen=True)
class SplitPlan:
    """What each garment and scene of a split shows. Slots are placed garments; scene i holds slots
    ``scene_start[i]:scene_start[i + 1]``. Items index the split's Fashion-MNIST file; colours and
    patterns index the split's colour and pattern lists."""

    garment_item: np.ndarray  # (G,) distinct items
    garment_colour: np.ndarray  # (G,)
    garment_pattern: np.ndarray  # (G,)
    scene_start: np.ndarray  # (N + 1,)
    slot_garment: np.ndarray  # (S,) catalogue garment, -1 for a distractor
    slot_item: np.ndarray  # (S,)
    slot_colour: np.ndarray  # (S,)
    slot_pattern: np.ndarray  # (S,)


@dataclass(frozen=True)
class SplitInfo:
    """Absolute manifest paths and counts of one written split."""

    garments_path: Path
    lookbook_path: Path
    truth_path: Path
    n_garments: int
    n_scenes: int
    n_placements: int  # truth rows
    n_distractors: int  # truth rows with garment_id ""
    n_empty_scenes: int  # scenes without a catalogue garment
    n_unplaced: int  # catalogue garments in no scene


def caption(category: str, colour: str, pattern: str) -> str:
    """Garment text, e.g. "a red striped dress"."""
    return f"a {colour} {pattern} {category}"


def plan_split(
    rng: np.random.Generator,
    labels: np.ndarray,
    allowed_labels: np.ndarray,
    n_colours: int,
    n_patterns: int,
    n_garments: int,
    n_scenes: int,
    spec: BenchmarkSpec,
) -> SplitPlan:
    """Garments, scene sizes and slot contents of one split.

    Garments are ``n_garments`` distinct items whose label is allowed (``allowed_labels`` is a bool per
    label); distractors are drawn, with replacement, from the other allowed items. Exactly
    round(empty_fraction * n_scenes) scenes hold only distractors and exactly round(distractor_fraction *
    slots) slots are distractors (ValueError if the empty scenes alone exceed that, or the remaining slots
    cannot make it up); every other scene's first slot is a catalogue garment. Catalogue slots pick
    distinct garments per scene by a lognormal popularity, with round(unplaced_fraction * n_garments)
    garments at popularity 0.
    """
    eligible = np.flatnonzero(allowed_labels[labels])
    max_per_scene = len(spec.garments_per_scene)
    n_blocked = round(spec.unplaced_fraction * n_garments)
    if not max_per_scene + n_blocked <= n_garments < len(eligible):
        raise ValueError(
            f"need {max_per_scene + n_blocked} <= garments < {len(eligible)} (allowed items); got {n_garments}"
        )
    garment_item = rng.choice(eligible, n_garments, replace=False)
    garment_colour = rng.integers(n_colours, size=n_garments)
    garment_pattern = rng.integers(n_patterns, size=n_garments)

    counts = rng.choice(np.arange(1, max_per_scene + 1), size=n_scenes, p=spec.garments_per_scene)
    scene_start = np.concatenate([[0], np.cumsum(counts)])
    empty = np.zeros(n_scenes, bool)
    empty[rng.choice(n_scenes, round(spec.empty_fraction * n_scenes), replace=False)] = True
    scene_of_slot = np.repeat(np.arange(n_scenes), counts)
    distractor = empty[scene_of_slot]
    free = np.flatnonzero(~distractor & (np.arange(len(scene_of_slot)) != scene_start[scene_of_slot]))
    extra = round(spec.distractor_fraction * len(scene_of_slot)) - int(distractor.sum())
    if not 0 <= extra <= len(free):
        raise ValueError(f"distractor_fraction {spec.distractor_fraction} unreachable with these empty scenes")
    distractor[rng.choice(free, extra, replace=False)] = True

    popularity = rng.lognormal(0.0, 1.0, n_garments)
    popularity[rng.choice(n_garments, n_blocked, replace=False)] = 0.0
    cumulative = np.cumsum(popularity)
    slot_garment = np.full(len(scene_of_slot), -1)
    catalogue_slots = np.flatnonzero(~distractor)
    slot_garment[catalogue_slots] = _draw_by_popularity(rng, cumulative, len(catalogue_slots))
    scene_of_catalogue_slot = scene_of_slot[catalogue_slots]
    while True:  # redraw garments repeated within a scene until each scene's are distinct
        order = np.lexsort((slot_garment[catalogue_slots], scene_of_catalogue_slot))
        scenes, garments = scene_of_catalogue_slot[order], slot_garment[catalogue_slots][order]
        repeats = catalogue_slots[order[1:][(scenes[1:] == scenes[:-1]) & (garments[1:] == garments[:-1])]]
        if not len(repeats):
            break
        slot_garment[repeats] = _draw_by_popularity(rng, cumulative, len(repeats))

    pool = np.setdiff1d(eligible, garment_item)
    distractor_slots = np.flatnonzero(distractor)
    slot_item, slot_colour, slot_pattern = (np.empty(len(scene_of_slot), np.int64) for _ in range(3))
    slot_item[catalogue_slots] = garment_item[slot_garment[catalogue_slots]]
    slot_colour[catalogue_slots] = garment_colour[slot_garment[catalogue_slots]]
    slot_pattern[catalogue_slots] = garment_pattern[slot_garment[catalogue_slots]]
    slot_item[distractor_slots] = rng.choice(pool, len(distractor_slots))
    slot_colour[distractor_slots] = rng.integers(n_colours, size=len(distractor_slots))
    slot_pattern[distractor_slots] = rng.integers(n_patterns, size=len(distractor_slots))
    return SplitPlan(garment_item, garment_colour, garment_pattern, scene_start, slot_garment, slot_item,
                     slot_colour, slot_pattern)  # fmt: skip


def _draw_by_popularity(rng: np.random.Generator, cumulative: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn with replacement, P(i) proportional to the weights whose cumulative sum is given."""
    return np.searchsorted(cumulative, rng.random(n) * cumulative[-1], side="right")


def render_item(
    pixels: np.ndarray, colour: str, pattern: str, rng: np.random.Generator, size: int, margin: float
) -> Image.Image:
    """``size`` x ``size`` RGBA garment from a (28, 28) uint8 Fashion-MNIST item (0 = background).

    The item is upscaled bicubically to fill all but ``margin`` of each side; alpha rises linearly from
    grey 8 to 255 at grey 36 (of 255); the colour is a fabric swatch (datagen.drawing.fabric, ``graphic``
    with its emblem) multiplied by the item's shading, 1 + 0.9 * (grey - median grey), clipped to 0.5..1.25.
    """
    inner = round(size * (1 - 2 * margin))
    grey = np.asarray(Image.fromarray(pixels).resize((inner, inner), Image.Resampling.BICUBIC), np.float32) / 255
    alpha = np.clip((grey - 8 / 255) * (255 / 28), 0.0, 1.0)
    base = jittered_rgb(colour, rng)
    swatch = np.asarray(fabric(pattern, base, rng, inner), np.float32)
    shade = np.clip(1 + 0.9 * (grey - np.median(grey[alpha == 1.0])), 0.5, 1.25)
    cloth = Image.fromarray(np.clip(swatch * shade[..., None], 0, 255).astype(np.uint8))
    mask = Image.fromarray((alpha * 255).astype(np.uint8))
    if pattern == "graphic":
        draw_emblem(ImageDraw.Draw(cloth), mask.getbbox(), base, seam_colour(base), rng)
    cloth.putalpha(mask)
    item = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    item.paste(cloth, ((size - inner) // 2, (size - inner) // 2))
    return item


def compose_scene(
    rng: np.random.Generator, items: Sequence[Image.Image], spec: BenchmarkSpec
) -> tuple[Image.Image, list[Box], np.ndarray]:
    """RGB scene holding ``items`` (RGBA, transparent around), their boxes and a (height, width) int8 map of
    which item each pixel shows (index into ``items``, -1 for none: background or an occluding object).

    Items are pasted in random order into jittered columns, each posed (_pose), fully inside the frame or,
    with border_crop_p, 20..50 % outside one edge; with occlusion_p an object then covers part of it. A box is
    the item's whole posed alpha extent clipped to the scene (hidden parts included), in px:
    0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height. The scene is then relit (exposure, colour cast) and given grain.
    """
    width = int(rng.integers(spec.scene_width[0], spec.scene_width[1] + 1))
    height = int(rng.integers(spec.scene_height[0], spec.scene_height[1] + 1))
    scene = _backdrop(rng, width, height)
    owner = np.full((height, width), -1, np.int8)
    boxes: list[Box] = [(0.0, 0.0, 0.0, 0.0)] * len(items)
    column = width / max(1, len(items))
    for slot, index in enumerate(rng.permutation(len(items))):
        tight = items[index].crop(items[index].getchannel("A").getbbox())
        target = min(height * rng.uniform(*spec.height_fraction), 1.1 * column * tight.height / tight.width)
        posed = _pose(tight, max(24.0, target), spec, rng)
        alpha = np.asarray(posed.getchannel("A"))
        left = round((slot + 0.5 + rng.uniform(-0.2, 0.2)) * column - posed.width / 2)
        top = round(height * rng.uniform(0.35, 0.65) - posed.height / 2)
        left, top = min(max(left, 0), width - posed.width), min(max(top, 0), height - posed.height)
        if rng.random() < spec.border_crop_p:
            outside, edge = rng.uniform(0.2, 0.5), int(rng.integers(4))
            if edge < 2:
                left = round(-outside * posed.width if edge == 0 else width - (1 - outside) * posed.width)
            else:
                top = round(-outside * posed.height if edge == 2 else height - (1 - outside) * posed.height)
        scene.paste(posed, (left, top), posed)
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + posed.width, width), min(top + posed.height, height)
        visible = alpha[y0 - top : y1 - top, x0 - left : x1 - left] > 0
        owner[y0:y1, x0:x1][visible] = index
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        boxes[index] = (float(x0 + cols[0]), float(y0 + rows[0]), float(x0 + cols[-1] + 1), float(y0 + rows[-1] + 1))
        if rng.random() < spec.occlusion_p:
            _occlude(scene, owner, boxes[index], rng)
    return _relight(scene, rng), boxes, owner


def _pose(tight: Image.Image, height: float, spec: BenchmarkSpec, rng: np.random.Generator) -> Image.Image:
    """``tight`` (RGBA cropped to its alpha) maybe mirrored, scaled to ``height`` px tall, rotated by up to
    max_rotation degrees and perspective-warped by up to ``perspective`` of its size per corner, in one
    bilinear resampling; then relit (gain 0.75..1.15, per channel 0.95..1.05). RGBA, transparent around."""
    if rng.random() < 0.5:
        tight = tight.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = tight.size
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    scale, angle = height / h, math.radians(rng.uniform(-spec.max_rotation, spec.max_rotation))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    placed = (corners - (w / 2, h / 2)) * scale @ rotation.T
    placed += rng.uniform(-spec.perspective, spec.perspective, (4, 2)) * (w * scale, h * scale)
    placed -= placed.min(0)
    size = tuple(int(math.ceil(v)) + 1 for v in placed.max(0))
    posed = tight.transform(size, Image.Transform.PERSPECTIVE, _homography(placed, corners), Image.Resampling.BILINEAR)
    gain = rng.uniform(0.75, 1.15) * rng.uniform(0.95, 1.05, 3)
    return posed.point(_lut(gain, (1.0,)))


def _homography(source: np.ndarray, target: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients (a..h) mapping each of the 4 ``source`` points (x, y) to its ``target``:
    x' = (a x + b y + c) / (g x + h y + 1), y' = (d x + e y + f) / (g x + h y + 1)."""
    rows = []
    for (x, y), (u, v) in zip(source, target):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    return np.linalg.solve(np.array(rows), target.reshape(-1)).tolist()


def _lut(gains: Sequence[float], keep: Sequence[float] = ()) -> list[int]:
    """Image.point table scaling band k by gains[k], then bands scaled by ``keep`` (1.0: unchanged)."""
    ramp = np.arange(256, dtype=np.float64)
    return np.concatenate([np.clip(ramp * g, 0, 255) for g in (*gains, *keep)]).astype(np.uint8).tolist()


def _occlude(scene: Image.Image, owner: np.ndarray, box: Box, rng: np.random.Generator) -> None:
    """Paint an opaque object (rectangle, ellipse or polygon) 15..35 % of ``box``'s size at a random point in
    it, and mark its pixels -1 in ``owner``."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    ow, oh = max(2, round(rng.uniform(0.15, 0.35) * bw)), max(2, round(rng.uniform(0.15, 0.35) * bh))
    cx, cy = rng.uniform(box[0], box[2]), rng.uniform(box[1], box[3])
    x0, y0 = max(0, round(cx - ow / 2)), max(0, round(cy - oh / 2))
    x1, y1 = min(scene.width, x0 + ow), min(scene.height, y0 + oh)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    _random_shape(ImageDraw.Draw(mask), (0, 0, x1 - x0 - 1, y1 - y0 - 1), 255, rng)
    scene.paste(random_colour(rng), (x0, y0), mask)
    owner[y0:y1, x0:x1][np.asarray(mask) > 0] = -1


def _random_shape(draw: ImageDraw.ImageDraw, box: Box, fill: int | tuple[int, ...], rng: np.random.Generator) -> None:
    """A filled rectangle, ellipse or 3..6-point polygon within ``box`` (x0, y0, x1, y1)."""
    kind = int(rng.integers(3))
    if kind == 0:
        draw.rectangle(box, fill=fill)
    elif kind == 1:
        draw.ellipse(box, fill=fill)
    else:
        xs = rng.uniform(box[0], box[2], int(rng.integers(3, 7)))
        ys = rng.uniform(box[1], box[3], len(xs))
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=fill)


def _backdrop(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Cluttered RGB background: at quarter resolution a two-colour gradient with soft colour blotches,
    one of (plain, wall and floor, blurred fabric texture, bokeh discs), light falling off by 0..30 % along
    the gradient, and 3..14 objects, upscaled
    bicubically (so they read as out of focus); then 0..5 sharp objects at full resolution."""
    lw, lh = math.ceil(width / 4), math.ceil(height / 4)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = ((t - t.min()) / (t.max() - t.min()))[..., None]
    low = np.array(random_colour(rng), np.float32) * (1 - t) + np.array(random_colour(rng), np.float32) * t
    light = 1 - rng.uniform(0, 0.3) * (t if rng.random() < 0.5 else 1 - t)  # falloff along the gradient
    grid = (int(rng.integers(2, 6)), int(rng.integers(2, 6)))
    blotches = rng.normal(128, rng.uniform(5, 30), (*grid, 3)).clip(0, 255).astype(np.uint8)
    low += np.asarray(Image.fromarray(blotches).resize((lw, lh), Image.Resampling.BICUBIC), np.float32) - 128
    style = int(rng.integers(4))
    if style == 1:  # wall and floor
        horizon = int(lh * rng.uniform(0.5, 0.8))
        floor = np.array(random_colour(rng), np.float32)
        low[horizon:] = floor * np.linspace(0.8, 1.1, lh - horizon, dtype=np.float32)[:, None, None]
    elif style == 2:  # wallpaper or fabric texture
        pattern = PATTERNS[int(rng.integers(len(PATTERNS) - 1))]  # every pattern but graphic
        swatch = np.asarray(fabric(pattern, random_colour(rng), rng, max(lw, lh)), np.float32)[:lh, :lw]
        mix = rng.uniform(0.3, 0.8)
        low = low * (1 - mix) + swatch * mix
    canvas = Image.fromarray((low * light).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(10, 40)) if style == 3 else 0):  # bokeh discs
        x, y, r = rng.uniform(0, lw), rng.uniform(0, lh), rng.uniform(2, 0.08 * lw)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(150, 256, 3)))
    for _ in range(int(rng.integers(3, 15))):
        _random_shape(draw, _random_box(rng, lw, lh, 0.4), random_colour(rng), rng)
    scene = canvas.resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(0, 6))):
        _random_shape(draw, _random_box(rng, width, height, 0.3), random_colour(rng), rng)
    return scene


def _random_box(rng: np.random.Generator, width: int, height: int, largest: float) -> Box:
    """Box at a random point of a width x height canvas, sides 4 % .. ``largest`` of the canvas's."""
    x, y = rng.uniform(-0.1 * width, width), rng.uniform(-0.1 * height, height)
    return (x, y, x + rng.uniform(0.04, largest) * width, y + rng.uniform(0.04, largest) * height)


def _relight(scene: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Exposure 0.8..1.15 with a 0.93..1.07 colour cast per channel, and uniform grain of +-1..6 grey levels."""
    scene = scene.point(_lut(rng.uniform(0.8, 1.15) * rng.uniform(0.93, 1.07, 3)))
    amplitude = int(rng.integers(1, 7))
    grain = Image.fromarray(rng.integers(0, 2 * amplitude + 1, (scene.height, scene.width), dtype=np.uint8))
    return ImageChops.add(scene, Image.merge("RGB", (grain,) * 3), offset=-amplitude)


class _SplitWriter:
    """Renders and writes the garments and scenes of one planned split (shared with workers by fork)."""

    def __init__(
        self,
        out: Path,
        split: str,
        seed: int,
        images: np.ndarray,
        labels: np.ndarray,
        colours: Sequence[str],
        patterns: Sequence[str],
        plan: SplitPlan,
        spec: BenchmarkSpec,
    ) -> None:
        self.out, self.split, self.seed, self.plan, self.spec = out, split, seed, plan, spec
        self.images, self.labels, self.colours, self.patterns = images, labels, colours, patterns
        self.stream = SPLITS.index(split)

    def _render(self, rng: np.random.Generator, item: int, colour: int, pattern: int) -> Image.Image:
        colour_name, pattern_name = self.colours[colour], self.patterns[pattern]
        return render_item(self.images[item], colour_name, pattern_name, rng, self.spec.garment_size,
                           self.spec.item_margin)  # fmt: skip

    def _attributes(self, item: int, colour: int, pattern: int) -> dict[str, str]:
        return {"category": FMNIST_CATEGORIES[self.labels[item]], "colour": self.colours[colour],
                "pattern": self.patterns[pattern], "source": f"{FILE_PREFIX[self.split]}:{item}"}  # fmt: skip

    def garment(self, index: int) -> dict[str, str]:
        """Write product shot ``index``; its garments.parquet row."""
        plan = self.plan
        item, colour, pattern = (int(a[index]) for a in (plan.garment_item, plan.garment_colour, plan.garment_pattern))
        rng = np.random.default_rng([self.seed, self.stream, _GARMENT_STREAM, index])
        path = self.out / "garments" / f"g{index:06d}.png"
        product_shot(self._render(rng, item, colour, pattern), rng).save(path, format="PNG")
        attributes = self._attributes(item, colour, pattern)
        text = caption(attributes["category"], attributes["colour"], attributes["pattern"])
        return {"garment_id": path.stem, "uri": str(path), "text": text, "sleeve": "", "length": "",
                "occasion": "", **attributes}  # fmt: skip

    def scene(self, index: int) -> tuple[dict[str, str], list[dict[str, str | float]]]:
        """Write scene ``index``; its lookbook.parquet row and truth.parquet rows (in slot order).
        A catalogue garment's cutout is re-rendered from its garment stream, so it is the product shot's."""
        plan, items, rows = self.plan, [], []
        for slot in range(plan.scene_start[index], plan.scene_start[index + 1]):
            garment, item = int(plan.slot_garment[slot]), int(plan.slot_item[slot])
            colour, pattern = int(plan.slot_colour[slot]), int(plan.slot_pattern[slot])
            stream, key = (_GARMENT_STREAM, garment) if garment >= 0 else (_DISTRACTOR_STREAM, slot)
            items.append(
                self._render(np.random.default_rng([self.seed, self.stream, stream, key]), item, colour, pattern)
            )
            rows.append(
                {"garment_id": f"g{garment:06d}" if garment >= 0 else "", **self._attributes(item, colour, pattern)}
            )
        scene, boxes, _ = compose_scene(np.random.default_rng([self.seed, self.stream, _SCENE_STREAM, index]), items,
                                        self.spec)  # fmt: skip
        path = self.out / "lookbook" / f"l{index:06d}.jpg"
        scene.save(path, format="JPEG", quality=self.spec.jpeg_quality)
        for row, box in zip(rows, boxes):
            row.update({"image_id": path.stem, **dict(zip(("x0", "y0", "x1", "y1"), box))})
        return {"image_id": path.stem, "uri": str(path)}, rows


_WRITER: _SplitWriter | None = None  # the split a worker process renders


def _set_writer(writer: _SplitWriter) -> None:
    global _WRITER
    _WRITER = writer


def _garment_task(index: int) -> dict[str, str]:
    return _WRITER.garment(index)


def _scene_task(index: int) -> tuple[dict[str, str], list[dict[str, str | float]]]:
    return _WRITER.scene(index)


def _run(writer: _SplitWriter, task: Callable, n: int, workers: int) -> Iterator:
    """task(i) for i in range(n), in order, in ``workers`` forked processes (here when workers <= 1)."""
    if workers <= 1:
        _set_writer(writer)
        yield from map(task, range(n))
        return
    with multiprocessing.get_context("fork").Pool(workers, _set_writer, (writer,)) as pool:
        yield from pool.imap(task, range(n), chunksize=8)


class _ParquetRows:
    """Rows added one at a time, written to ``path`` in row groups of _ROWS_PER_BATCH (the last one shorter)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.schema, self.writer, self.batch, self.count = schema, pq.ParquetWriter(path, schema), [], 0

    def add(self, row: dict) -> None:
        self.batch.append(row)
        self.count += 1
        if len(self.batch) == _ROWS_PER_BATCH:
            self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
            self.batch = []

    def close(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.batch, schema=self.schema))
        self.writer.close()


def write_split(
    out_dir: str | Path,
    split: str,
    n_garments: int | None,
    n_scenes: int,
    seed: int,
    vocab: Mapping[str, Sequence[str]],
    spec: BenchmarkSpec = BenchmarkSpec(),
    workers: int = 1,
) -> SplitInfo:
    """Write ``<out_dir>/<split>/`` as laid out in the module docstring, overwriting files of the same name.

    Categories, colours and patterns are vocab's values that FMNIST_CATEGORIES, COLOUR_RGB and PATTERNS
    cover (ValueError if one is left empty); items of other categories are never used. ``n_garments`` None:
    min(n_scenes, allowed items) // 2. Holds the plan (about 100 bytes per scene) and one Parquet row group
    per manifest in memory, and one scene's images per process.
    """
    if n_scenes < 1 or seed < 0:
        raise ValueError(f"need n_scenes >= 1 and seed >= 0; got {n_scenes}, {seed}")
    supported = {"category": FMNIST_CATEGORIES, "colour": COLOUR_RGB, "pattern": PATTERNS}
    values = {name: [value for value in vocab[name] if value in known] for name, known in supported.items()}
    for name, kept in values.items():
        if not kept:
            raise ValueError(f"vocab[{name!r}] = {list(vocab[name])} has no value the benchmark can draw")
    images, labels = load_split(split)
    allowed = np.array([category in values["category"] for category in FMNIST_CATEGORIES])
    if n_garments is None:
        n_garments = min(n_scenes, int(allowed[labels].sum())) // 2
    plan_rng = np.random.default_rng([seed, SPLITS.index(split), _PLAN_STREAM])
    plan = plan_split(plan_rng, labels, allowed, len(values["colour"]), len(values["pattern"]), n_garments,
                      n_scenes, spec)  # fmt: skip
    out = Path(out_dir).resolve() / split
    (out / "garments").mkdir(parents=True, exist_ok=True)
    (out / "lookbook").mkdir(parents=True, exist_ok=True)
    writer = _SplitWriter(out, split, seed, images, labels, values["colour"], values["pattern"], plan, spec)
    garments = _ParquetRows(out / "garments.parquet", BENCHMARK_GARMENT_SCHEMA)
    for row in _run(writer, _garment_task, n_garments, workers):
        garments.add(row)
    garments.close()
    lookbook = _ParquetRows(out / "lookbook.parquet", LOOKBOOK_SCHEMA)
    truth = _ParquetRows(out / "truth.parquet", BENCHMARK_TRUTH_SCHEMA)
    for lookbook_row, truth_rows in _run(writer, _scene_task, n_scenes, workers):
        lookbook.add(lookbook_row)
        for row in truth_rows:
            truth.add(row)
    lookbook.close()
    truth.close()
    catalogue = plan.slot_garment >= 0
    scene_of_slot = np.repeat(np.arange(n_scenes), np.diff(plan.scene_start))
    return SplitInfo(out / "garments.parquet", out / "lookbook.parquet", out / "truth.parquet", n_garments,
                     n_scenes, truth.count, int((~catalogue).sum()),
                     n_scenes - len(np.unique(scene_of_slot[catalogue])),
                     n_garments - len(np.unique(plan.slot_garment[catalogue])))  # fmt: skip


def make_benchmark(
    out_dir: str | Path,
    n_scenes: int,
    n_test_scenes: int,
    seed: int,
    vocab: Mapping[str, Sequence[str]],
    n_garments: int | None = None,
    n_test_garments: int | None = None,
    spec: BenchmarkSpec = BenchmarkSpec(),
    workers: int = 1,
) -> dict[str, SplitInfo]:
    """Write both splits (write_split) and ``<out_dir>/DATASET.md``; split name -> SplitInfo."""
    sizes = {"train": (n_garments, n_scenes), "test": (n_test_garments, n_test_scenes)}
    infos = {split: write_split(out_dir, split, g, n, seed, vocab, spec, workers) for split, (g, n) in sizes.items()}
    (Path(out_dir) / "DATASET.md").write_text(dataset_card(infos, seed, spec))
    return infos


def dataset_card(infos: Mapping[str, SplitInfo], seed: int, spec: BenchmarkSpec) -> str:
    """Markdown saying what the benchmark is, how it was made and its counts per split."""
    rows = "\n".join(
        f"| {split} | {FILE_PREFIX[split]} | {i.n_scenes} | {i.n_garments} | {i.n_unplaced} | {i.n_placements} | "
        f"{i.n_distractors} | {i.n_empty_scenes} |"
        for split, i in infos.items()
    )
    mapping = ", ".join(f"{label} -> {category}" for label, category in zip(LABELS, FMNIST_CATEGORIES))
    settings = "\n".join(f"- {name}: {value}" for name, value in vars(spec).items())
    header = (
        "| split | Fashion-MNIST file | scenes | catalogue garments | garments in no scene | placed garments "
        "| distractors | scenes without a catalogue garment |\n|---|---|---|---|---|---|---|---|"
    )
    return f"""# Fashion-MNIST lookbook benchmark (synthetic)

Synthetic, labelled data for measuring garment <-> lookbook matching, made by `python -m jobs.make_benchmark`
(lookbook-miner, `datagen/fashion_benchmark.py`) with seed {seed}. No image is a photograph: every garment is a
Fashion-MNIST item (Zalando Research, MIT licence; 28x28 grey product images, from Debian's
`dataset-fashion-mnist`), upscaled and coloured here. Every byte depends only on the seed, the sizes, the
vocabulary and the settings below.

## How it was made
- Garment: one Fashion-MNIST item, upscaled bicubically to {spec.garment_size} px, alpha from its grey levels,
  coloured with a fabric of one vocabulary colour and pattern (solid, striped, checked, polka-dot, floral,
  graphic) multiplied by the item's own grey shading. Category from the Fashion-MNIST label: {mapping}
  (labels whose category is not in the vocabulary are left out).
- Product shot (`<split>/garments/`): the garment on a light grey studio ramp with a soft shadow, PNG.
- Scene (`<split>/lookbook/`): a cluttered background (gradient, colour blotches, wall and floor, blurred
  fabric texture or bokeh discs, light falloff, out-of-focus and sharp objects), then 1..{len(spec.garments_per_scene)}
  garments, each mirrored or not, scaled, rotated, perspective-warped and relit, some pushed partly out of the
  frame, some partly covered by an object or by another garment; then exposure, colour cast and grain; JPEG.
  Some garments in a scene are distractors (not in the catalogue); some scenes hold no catalogue garment.
- Split: the train split uses only Fashion-MNIST's train file, the test split only its t10k file, so no test
  garment (or distractor) is seen in training. Catalogue garments are distinct items.

## Ground truth
`<split>/truth.parquet`: one row per garment placed in a scene: image_id, garment_id ("" for a distractor),
box x0, y0, x1, y1 (px, the garment's whole extent in the scene, hidden parts included, clipped to the
image), category, colour, pattern, and source (`<file>:<item index>` in Fashion-MNIST). A true pair is
(garment_id, image_id) of a row with a non-empty garment_id. `garments.parquet` holds text ("a red striped
dress"), category, colour, pattern, source; sleeve, length and occasion are unknown ("").

## Counts
{header}
{rows}

## Settings
{settings}
"""
