"""Images as the review page shows them: read through `core.storage` within the run's allow-list,
decoded by `core.images` within its limits, the matched box drawn server side, sent as JPEG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace

from PIL import Image, ImageDraw

from core.config import DecodeConfig
from core.images import NOT_FOUND, decode
from core.storage import StorageConfig, TooLargeError, forbidden, read_bytes

BOX_COLOUR = (255, 48, 96)
JPEG_QUALITY = 88


class ImageRefused(Exception):
    """An image that is not shown: `status` is the HTTP status to answer (403 refused uri, 404
    missing file, 422 unreadable or undecodable), `reason` says why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def render(
    uri: str, storage: StorageConfig, limits: DecodeConfig, max_side: int, box: Sequence[float] | None = None
) -> bytes:
    """JPEG bytes of the image at `uri`, upright, at most `max_side` px a side, with `box`
    ([x0, y0, x1, y1] px of the original upright image, as in PAIRS) outlined when given.

    Raises ImageRefused: 403 when `core.storage.forbidden` refuses the uri (nothing is opened),
    404 when there is no such file, 422 when it cannot be read or decoded within `limits`.
    """
    if reason := forbidden(uri, storage):
        raise ImageRefused(403, reason)
    try:
        data = read_bytes(uri, storage, limits.max_bytes)
    except FileNotFoundError as exc:
        raise ImageRefused(404, f"{NOT_FOUND}: {exc}") from exc
    except (TooLargeError, OSError) as exc:
        raise ImageRefused(422, f"{type(exc).__name__}: {exc}") from exc
    decoded = decode(data, replace(limits, max_side=min(max_side, limits.max_side)))
    if decoded.reason:
        raise ImageRefused(422, f"{decoded.reason}: {decoded.error}")
    image = Image.fromarray(decoded.pixels)
    if box is not None and len(box) == 4 and all(v is not None for v in box):
        sx, sy = decoded.scale
        x0, y0, x1, y1 = box
        width = max(2, round(max(image.size) / 160))
        ImageDraw.Draw(image).rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=BOX_COLOUR, width=width)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
