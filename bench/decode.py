"""Benchmark of lookbook image decoding: JPEGs decoded reduced (core.images.decode: a scaled IDCT to
the size the job keeps) against decoded in full and then resized, at the same output size.

    python -m bench.decode [--megapixels 2 6 12] [--images 8] [--max-side 1280] [--repeat 3]

Generates `--images` photo-like 3:2 JPEGs (quality 90, seeded) per size, then decodes each
`--repeat` times both ways in this process, on one thread. Images/s per core = decodes / CPU seconds
of the process. `1/8 decode` decodes at 1/8 scale and does nothing else: the parsing and Huffman
decoding that every scaled decode still pays; `ceiling` = its rate over the full path's, the most
any reduced decode could gain. The error columns compare the two outputs: mean absolute difference
over all pixels and over the 2-pixel border ring (where a scaled IDCT could leave artefacts), in
8-bit levels.

The last line printed is `decode: max_side=... mp6_speedup=... mp6_ceiling=... mp6_mean_error=...
mp6_border_error=...` for every size.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from core.config import DecodeConfig
from core.images import decode, fitted_size

BORDER = 2  # px of the ring checked for scaled-IDCT edge artefacts


def scene_jpeg(width: int, height: int, seed: int, quality: int = 90) -> bytes:
    """A photo-like JPEG: a smooth backdrop, soft-edged shapes and film grain (JPEG cost depends on
    content; flat or random images would flatter or punish either path)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    backdrop = base + 40 * np.sin(x[..., None] / width * 3 + y[..., None] / height * 2 + rng.uniform(0, 6, 3))
    image = Image.fromarray(np.clip(backdrop, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        box = [x0, y0, x0 + rng.uniform(0.05, 0.4) * width, y0 + rng.uniform(0.05, 0.5) * height]
        draw.rounded_rectangle(box, radius=int(0.02 * width), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1, width // 800)))
    grain = rng.normal(0, 6, (height, width, 1))
    pixels = np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return out.getvalue()


def full_decode(data: bytes, max_side: int) -> np.ndarray:
    """The reference: decode every pixel, then the same upright RGB downscale as core.images.decode."""
    image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(image.resize(fitted_size(image.size, max_side), Image.Resampling.BILINEAR))


def entropy_floor(data: bytes) -> np.ndarray:
    """The JPEG decoded at 1/8 scale and nothing else: what every scaled decode still pays (parsing
    and Huffman decoding of every coefficient), so the ceiling of any reduced-decode speedup."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (1, 1))
    return np.asarray(image)


def errors(reduced: np.ndarray, full: np.ndarray) -> tuple[float, float]:
    """(mean absolute difference, the same over the BORDER ring) of two equal-shape uint8 images."""
    diff = np.abs(reduced.astype(np.int16) - full.astype(np.int16)).astype(np.float64)
    ring = np.ones(diff.shape[:2], bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    return float(diff.mean()), float(diff[ring].mean())


def rate(decodes: int, cpu_s: float) -> float:
    return decodes / cpu_s if cpu_s > 0 else float("inf")


def measure(images: list[bytes], limits: DecodeConfig, repeat: int) -> dict[str, float]:
    """Images/s per core of both paths over `images` x `repeat`, and the largest errors between them."""
    worst = (0.0, 0.0)
    for data in images:
        reduced, full = decode(data, limits).pixels, full_decode(data, limits.max_side)
        if reduced.shape != full.shape:
            raise AssertionError(f"output sizes differ: {reduced.shape} vs {full.shape}")
        worst = tuple(max(a, b) for a, b in zip(worst, errors(reduced, full)))
    timed = {}
    paths = {"full": lambda d: full_decode(d, limits.max_side), "reduced": lambda d: decode(d, limits),
             "floor": entropy_floor}  # fmt: skip
    for name, run in paths.items():
        start = time.process_time()
        for _ in range(repeat):
            for data in images:
                run(data)
        timed[name] = rate(repeat * len(images), time.process_time() - start)
    return {
        **timed,
        "speedup": timed["reduced"] / timed["full"],
        "ceiling": timed["floor"] / timed["full"],
        "mean_error": worst[0],
        "border_error": worst[1],
    }


def main(argv: list[str] | None = None) -> dict[float, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, nargs="+", default=[2, 6, 12])
    parser.add_argument("--images", type=int, default=8, help="distinct JPEGs per size")
    parser.add_argument("--max-side", type=int, default=DecodeConfig().max_side, help="decode.max_side")
    parser.add_argument("--repeat", type=int, default=3, help="decodes of each image per path")
    args = parser.parse_args(argv)
    limits = DecodeConfig(max_side=args.max_side)
    print(f"{'MP':>5} {'size':>11} {'full img/s':>10} {'reduced img/s':>13} {'speedup':>7} {'1/8 decode img/s':>16} "
          f"{'ceiling':>7} {'mean err':>8} {'border err':>10}")  # fmt: skip
    results = {}
    for mp in args.megapixels:
        width = int(round((mp * 1e6 * 1.5) ** 0.5))
        height = int(round(width / 1.5))
        images = [scene_jpeg(width, height, seed) for seed in range(args.images)]
        r = results[mp] = measure(images, limits, args.repeat)
        print(f"{mp:5g} {width:5d}x{height:<5d} {r['full']:10.1f} {r['reduced']:13.1f} {r['speedup']:7.2f} "
              f"{r['floor']:16.1f} {r['ceiling']:7.2f} {r['mean_error']:8.2f} {r['border_error']:10.2f}",
              flush=True)  # fmt: skip
    figures = [f"max_side={args.max_side}"]
    figures += [f"mp{mp:g}_{k}={r[k]:.2f}" for mp, r in results.items() for k in ("speedup", "ceiling")]
    figures += [f"mp{mp:g}_{k}={r[k]:.2f}" for mp, r in results.items() for k in ("mean_error", "border_error")]
    print("decode: " + " ".join(figures))
    return results


if __name__ == "__main__":
    main()
