"""Colours, fabric patterns and studio product shots shared by the synthetic renderers (datagen.synthetic,
datagen.fashion_benchmark). Every function draws only from the ``rng`` it is given."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

COLOUR_RGB: dict[str, RGB] = {
    "black": (30, 30, 32), "white": (244, 244, 238), "grey": (128, 128, 130), "red": (196, 30, 38),
    "orange": (238, 128, 30), "yellow": (242, 206, 44), "green": (40, 136, 62), "blue": (42, 92, 206),
    "navy": (26, 36, 84), "purple": (118, 52, 148), "pink": (238, 150, 180), "brown": (118, 74, 40),
    "beige": (218, 198, 162),
}  # fmt: skip
PATTERNS = ("solid", "striped", "checked", "polka-dot", "floral", "graphic")


def jittered_rgb(colour: str, rng: np.random.Generator) -> RGB:
    """COLOUR_RGB[colour] with each channel moved by -8..8, clipped to 0..255."""
    return tuple(int(c) for c in np.clip(np.add(COLOUR_RGB[colour], rng.integers(-8, 9, 3)), 0, 255))


def contrast(rgb: RGB) -> RGB:
    """Near-black on light colours (luma > 140), near-white on dark ones."""
    return (32, 34, 48) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else (240, 238, 230)


def seam_colour(rgb: RGB) -> RGB:
    """A darker shade of ``rgb`` for outlines and seams; mid grey on near-black."""
    return tuple(int(c * 0.55) for c in rgb) if sum(rgb) > 90 else (90, 90, 96)


def random_colour(rng: np.random.Generator) -> RGB:
    """A random colour mixed with mid grey (20..90 % saturated)."""
    mix = rng.uniform(0.2, 0.9)  # share of a saturated colour against mid grey
    return tuple(int(c) for c in rng.integers(0, 256, 3) * mix + 128 * (1 - mix))


def fabric(pattern: str, rgb: RGB, rng: np.random.Generator, size: int) -> Image.Image:
    """``size`` x ``size`` RGB swatch of ``pattern`` (one of PATTERNS) in ``rgb`` and its contrast colour;
    period 12..25 px. ``graphic`` is plain here: draw_emblem adds its print per garment."""
    period = int(rng.integers(12, 26))
    yy, xx = np.arange(size)[:, None], np.arange(size)[None, :]
    if pattern == "striped":
        stripes = (yy if rng.random() < 0.7 else xx) % period < period * rng.uniform(0.3, 0.5)
        weight = np.broadcast_to(stripes.astype(np.float32), (size, size))
    elif pattern == "checked":
        weight = 0.4 * ((xx % period) < period // 2) + 0.4 * ((yy % period) < period // 2)
    if pattern in ("striped", "checked"):
        base, other = np.array(rgb, np.float32), np.array(contrast(rgb), np.float32)
        swatch = Image.fromarray((base * (1 - weight[..., None]) + other * weight[..., None]).astype(np.uint8))
    else:
        swatch = Image.new("RGB", (size, size), rgb)
    draw, step = ImageDraw.Draw(swatch), period + 10
    for row, y in enumerate(range(0, size + step, step) if pattern in ("polka-dot", "floral") else ()):
        for x in range(-(row % 2) * step // 2, size + step, step):
            if pattern == "polka-dot":
                draw.circle((x, y), step * 0.22, fill=contrast(rgb))
                continue
            for angle in np.linspace(0, 2 * np.pi, 5, endpoint=False) + rng.uniform(0, 1):
                draw.circle((x + 5 * np.cos(angle), y + 5 * np.sin(angle)), 4, fill=contrast(rgb))
            draw.circle((x, y), 3, fill=(236, 190, 40))
    return swatch


def draw_emblem(
    draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rgb: RGB, outline: RGB, rng: np.random.Generator
) -> None:
    """The ``graphic`` print: a regular 3..6-gon in contrast(rgb), centred across ``box`` (x0, y0, x1, y1 of
    the garment) at 32 % of its height, radius 14 % of its width."""
    x0, y0, x1, y1 = box
    emblem = ((x0 + x1) / 2, y0 + 0.32 * (y1 - y0), 0.14 * (x1 - x0))
    sides, rotation = int(rng.integers(3, 7)), float(rng.uniform(0, 90))
    draw.regular_polygon(emblem, sides, rotation, fill=contrast(rgb), outline=outline)


def product_shot(cutout: Image.Image, rng: np.random.Generator) -> Image.Image:
    """RGB studio shot of an RGBA ``cutout``, same size: light grey vertical ramp (level 228..250, 12 darker
    at the bottom), a soft drop shadow offset by (4, 6) px, then the cutout."""
    width, height = cutout.size
    level = int(rng.integers(228, 251))
    ramp = np.linspace(level, level - 12, height, dtype=np.float32)[:, None, None]
    shot = Image.fromarray(np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8))
    shadow = cutout.getchannel("A").point(lambda a: a // 4).filter(ImageFilter.GaussianBlur(6))
    shot.paste((90, 90, 90), (4, 6), shadow)
    shot.paste(cutout, (0, 0), cutout)
    return shot
