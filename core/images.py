"""Safe image decoding: every failure becomes a quarantine reason code, never an exception."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.config import DecodeConfig

# Quarantine reason codes (the fixed vocabulary of the quarantine table's `reason` column).
NOT_FOUND = "not_found"
UNREADABLE = "unreadable"
TOO_LARGE = "too_large"
DECODE_ERROR = "decode_error"
DECOMPRESSION_BOMB = "decompression_bomb"
TOO_SMALL = "too_small"
UNSUPPORTED_FORMAT = "unsupported_format"
NO_GARMENT = "no_garment"
FORBIDDEN_URI = "forbidden_uri"  # the uri is outside storage.allowed_schemes / allowed_s3_prefixes
WORKER_CRASH = "worker_crash"  # the row killed its worker process work.max_attempts times


@dataclass(frozen=True)
class Decoded:
    """A decoded RGB image, or the reason it could not be decoded.

    `pixels` is (h, w, 3) uint8, upright (EXIF orientation applied) and downscaled so that
    max(h, w) <= max_side; `width` x `height` is the upright original size, the frame every box is
    reported in; `scale` = (w / width, h / height) maps its x and y to `pixels`. On failure
    `pixels` is (0, 0, 3) and `reason` is set.
    """

    pixels: np.ndarray
    width: int = 0
    height: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    reason: str = ""
    error: str = ""


EMPTY = np.zeros((0, 0, 3), dtype=np.uint8)


def failed(reason: str, error: str) -> Decoded:
    return Decoded(pixels=EMPTY, reason=reason, error=error)


def pillow_open():
    """Pillow's own `Image.open`: ultralytics replaces it on import with a wrapper that, on an
    unidentified file, tries to pip-install an extra decoder (pi-heif) on the worker."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)


# First bytes of formats a manifest may hold but `decode.formats` may leave out: named in the error
# of a file that no allowed format's parser accepts (those parsers are the only ones that run).
MAGIC = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"\x89PNG": "PNG",
         b"\xff\xd8\xff": "JPEG", b"RIFF": "WEBP", b"8BPS": "PSD", b"\x00\x00\x01\x00": "ICO"}  # fmt: skip
EXIF_ORIENTATION = 0x0112
SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that turn the image a quarter


@dataclass(frozen=True)
class Header:
    """What a file's header says, once it passed the checks before decoding: the opened (not yet
    decoded) Pillow image, and the upright original size (EXIF orientation applied)."""

    image: Image.Image
    width: int
    height: int


def inspect(data: bytes, limits: DecodeConfig) -> Header | Decoded:
    """Open `data` and check its header within `limits`, without decoding pixels: only the parsers
    of `limits.formats` run, and the declared pixel count (decompression bombs; `max_pixels` is
    the one limit, Pillow's own is off) and the minimum side are checked. A failed Decoded when
    the file is refused."""
    if not data:
        return failed(DECODE_ERROR, "empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = None  # Pillow's check, at the same point as the one below, would add a second limit
    try:
        image = pillow_open()(io.BytesIO(data), formats=list(limits.formats))
        width, height = image.size
        if width * height > limits.max_pixels:
            return failed(DECOMPRESSION_BOMB, f"declares {width}x{height} pixels > {limits.max_pixels}")
        if min(width, height) < limits.min_side:
            return failed(TOO_SMALL, f"{width}x{height} has a side < {limits.min_side}")
        if image.getexif().get(EXIF_ORIENTATION, 1) in SWAPS_SIDES:
            width, height = height, width
    except UnidentifiedImageError:
        found = next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)
        if found and found not in limits.formats:
            return failed(UNSUPPORTED_FORMAT, f"format {found} is not in {limits.formats}")
        return failed(DECODE_ERROR, f"not an image of the formats {limits.formats}")
    except Exception as exc:  # any parser failure (plugins raise their own types) is a bad file
        return failed(DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    return Header(image, width, height)


def decode(data: bytes, limits: DecodeConfig) -> Decoded:
    """Decode `data` within `limits` (the checks of `inspect`), with Pillow (`decode_header`)."""
    header = inspect(data, limits)
    return header if isinstance(header, Decoded) else decode_header(header, limits)


def decode_header(header: Header, limits: DecodeConfig) -> Decoded:
    """Decode the pixels of a file that passed `inspect`, with Pillow: truncated files are refused,
    EXIF orientation is applied, 16-bit grey levels are scaled to 8 bits, not clipped."""
    image, width, height = header.image, header.width, header.height
    try:
        image.draft("RGB", fitted_size(image.size, limits.max_side))
        image = _rgb(ImageOps.exif_transpose(image))
    except Exception as exc:  # any decoder failure (plugins raise their own types) is a bad file
        return failed(DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    fitted = fitted_size((width, height), limits.max_side)  # from the original: as a full decode gives it
    if image.size != fitted:
        image = image.resize(fitted, Image.Resampling.BILINEAR)
    return Decoded(np.asarray(image), width, height, (image.width / width, image.height / height))


def fitted_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The (w, h) of a `size` image downscaled to fit `max_side` (aspect kept, never upscaled).
    It is also what `Image.draft` is asked for: JPEG then decodes at the smallest of 1/2, 1/4, 1/8
    (a scaled IDCT) that still covers it on both sides, and the exact resize follows. (Asking for a
    square max_side box reduces only images whose shorter side is twice max_side.)"""
    width, height = size
    factor = min(1.0, max_side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def _rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16- and 32-bit integer grey levels (mode I;16*, I) are scaled from 16 bits."""
    if image.mode.startswith("I"):
        grey = np.asarray(image).astype(np.uint32) >> 8
        image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")
