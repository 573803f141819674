"""Safe image decoding: every failure becomes a quarantine reason code, never an exception."""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

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

    `pixels` is (h, w, 3) uint8, downscaled so that max(h, w) <= max_side; `scale` = h / height
    maps original-pixel boxes to `pixels`. On failure `pixels` is (0, 0, 3) and `reason` is set.
    """

    pixels: np.ndarray
    width: int = 0
    height: int = 0
    scale: float = 1.0
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


def decode(data: bytes, limits: DecodeConfig) -> Decoded:
    """Decode `data` within `limits`: format allow-list, declared pixel count checked before
    decoding (decompression bombs), truncated files refused, minimum side enforced."""
    if not data:
        return failed(DECODE_ERROR, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = pillow_open()(io.BytesIO(data))
            if image.format not in limits.formats:
                return failed(UNSUPPORTED_FORMAT, f"format {image.format} is not in {limits.formats}")
            width, height = image.size
            if width * height > limits.max_pixels:
                return failed(DECOMPRESSION_BOMB, f"declares {width}x{height} pixels > {limits.max_pixels}")
            if min(width, height) < limits.min_side:
                return failed(TOO_SMALL, f"{width}x{height} has a side < {limits.min_side}")
            image.draft("RGB", (limits.max_side, limits.max_side))
            image = image.convert("RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return failed(DECOMPRESSION_BOMB, str(exc))
    except Exception as exc:  # any decoder failure (plugins raise their own types) is a bad file
        return failed(DECODE_ERROR, f"{type(exc).__name__}: {exc}")
    image.thumbnail((limits.max_side, limits.max_side), Image.Resampling.BILINEAR)
    return Decoded(pixels=np.asarray(image), width=width, height=height, scale=image.height / height)
