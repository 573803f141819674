"""Report thumbnails: an image read through core.storage (local or s3://, within the allow-list),
decoded with core.images' limits, the matched box drawn, downscaled to JPEG, and cached on disk
by what it shows, so a second report reads the file instead of the image."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageDraw

from core.config import DecodeConfig
from core.images import decode
from core.storage import StorageConfig, forbidden, read_bytes, redact

VERSION = 1  # part of the cache key: bump when the drawing changes
BOX_COLOUR = (255, 64, 32)


@dataclass(frozen=True)
class ThumbSpec:
    """What a thumbnail shows: the image at `uri` and, when set, the box [x0, y0, x1, y1] in px of
    the upright original image (the frame of the pairs' `box`)."""

    uri: str
    box: tuple[float, float, float, float] | None = None

    def key(self, side: int, quality: int) -> str:
        """The cache file stem: sha256 (24 hex) of uri, box, side, quality and `VERSION`."""
        box = None if self.box is None else [round(float(v), 1) for v in self.box]
        text = json.dumps([VERSION, self.uri, box, side, quality])
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Thumb:
    """JPEG bytes of a thumbnail (`cached`: read from the cache, not drawn), or empty with `error`
    saying why it could not be made."""

    jpeg: bytes = b""
    error: str = ""
    cached: bool = False


@dataclass
class ThumbnailCache:
    """Thumbnails of at most `side` px (longer side) under `folder/<key>.jpg`. `made` and `cached`
    count the thumbnails `get_many` drew and the ones it found on disk."""

    folder: Path
    storage: StorageConfig
    side: int = 256
    quality: int = 82
    decode_limits: DecodeConfig = field(default_factory=DecodeConfig)
    threads: int = 4
    made: int = 0
    cached: int = 0

    def get_many(self, specs: Sequence[ThumbSpec]) -> dict[ThumbSpec, Thumb]:
        """The thumbnail of every distinct spec, made on `threads` threads (I/O and decoding)."""
        distinct = list(dict.fromkeys(specs))
        with ThreadPoolExecutor(max(1, self.threads)) as pool:
            thumbs = dict(zip(distinct, pool.map(self.get, distinct)))
        self.cached += sum(t.cached for t in thumbs.values())
        self.made += sum(bool(t.jpeg) and not t.cached for t in thumbs.values())
        return thumbs

    def get(self, spec: ThumbSpec) -> Thumb:
        """The cached thumbnail of `spec`, else a new one written to the cache; a refused, missing
        or undecodable image gives a Thumb with its error (nothing cached)."""
        path = self.folder / f"{spec.key(self.side, self.quality)}.jpg"
        if path.is_file():
            return Thumb(path.read_bytes(), cached=True)
        thumb = self._make(spec)
        if thumb.jpeg:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_bytes(thumb.jpeg)
            tmp.replace(path)
        return thumb

    def _make(self, spec: ThumbSpec) -> Thumb:
        if reason := forbidden(spec.uri, self.storage):
            return Thumb(error=reason)
        try:
            data = read_bytes(spec.uri, self.storage, self.decode_limits.max_bytes)
        except (OSError, ValueError) as exc:
            return Thumb(error=f"{redact(spec.uri)}: {type(exc).__name__}: {exc}")
        # Decode at a few times the thumbnail size: JPEG draft mode makes big images cheap.
        decoded = decode(data, replace(self.decode_limits, max_side=max(self.side * 2, 64)))
        if decoded.reason:
            return Thumb(error=f"{decoded.reason}: {decoded.error}")
        image = Image.fromarray(decoded.pixels)
        if spec.box is not None:
            sx, sy = decoded.scale
            x0, y0, x1, y1 = spec.box
            width = max(2, round(max(image.size) / 100))
            ImageDraw.Draw(image).rectangle((x0 * sx, y0 * sy, x1 * sx, y1 * sy), outline=BOX_COLOUR, width=width)
        image.thumbnail((self.side, self.side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=self.quality)
        return Thumb(out.getvalue())
