"""Garment product shots to edge-map sketches (`core.sketches`), written as PNG files: a CPU task."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from actors.decoder import read_decoded
from core.batches import Batch, objects
from core.config import DecodeConfig, SketchConfig
from core.sketches import garment_sketch
from core.storage import StorageConfig, join, write_bytes


def sketch_name(garment_id: str) -> str:
    """The sketch's file name: a digest of the id, so any id makes a safe name."""
    return f"sketch-{hashlib.blake2b(garment_id.encode(), digest_size=10).hexdigest()}.png"


def sketch_images(
    batch: Batch, cfg: SketchConfig, decode_cfg: DecodeConfig, storage: StorageConfig, folder: str
) -> Batch:
    """Garment manifest rows (`image_id`: the garment id, `uri`, `text`, `colour`) in; out the same
    rows with `sketch_uri` (the PNG written under `folder`), `light` (equalised), and `reason` /
    `error` where the shot could not be read or decoded (then no sketch, `sketch_uri` "")."""
    out = {k: [] for k in ("sketch_uri", "light", "reason", "error")}
    for garment_id, uri, text, colour in zip(batch["image_id"], batch["uri"], batch["text"], batch["colour"]):
        shot = read_decoded(garment_id, uri, decode_cfg, storage)
        sketch_uri, light = "", False
        if not shot.reason:
            lines, light = garment_sketch(shot.pixels, text, colour, cfg)
            _, png = cv2.imencode(".png", lines)
            sketch_uri = join(folder, sketch_name(garment_id))
            write_bytes(sketch_uri, png.tobytes(), storage)
        for key, value in zip(out, (sketch_uri, light, shot.reason, shot.error)):
            out[key].append(value)
    return {
        **batch,
        "sketch_uri": objects(out["sketch_uri"]),
        "light": np.array(out["light"], bool),
        "reason": objects(out["reason"]),
        "error": objects(out["error"]),
    }
