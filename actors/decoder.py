"""Read and decode images (a stateless CPU stage): adds `image`, `width`, `height`, `scale`,
and the quarantine columns `reason` / `error`. Uris outside the storage allow-list are never
opened, nor are rows that arrive already quarantined (they keep their reason)."""

from __future__ import annotations

import numpy as np

from core.batches import Batch, objects, quarantine_columns
from core.config import DecodeConfig
from core.images import FORBIDDEN_URI, NOT_FOUND, TOO_LARGE, UNREADABLE, Decoded, decode, failed
from core.schemas import ERROR, REASON
from core.storage import StorageConfig, TooLargeError, forbidden, read_bytes


def read_and_decode(row_id: str, uri: str, cfg: DecodeConfig, storage: StorageConfig) -> Decoded:
    if why := forbidden(uri, storage):
        return failed(FORBIDDEN_URI, f"row {row_id!r}: {why}")
    try:
        data = read_bytes(uri, storage, cfg.max_bytes)
    except FileNotFoundError:
        return failed(NOT_FOUND, f"no file at {uri}")
    except TooLargeError as exc:
        return failed(TOO_LARGE, str(exc))
    except (OSError, ValueError) as exc:
        return failed(UNREADABLE, f"{type(exc).__name__}: {exc}")
    return decode(data, cfg)


def decode_images(batch: Batch, cfg: DecodeConfig, storage: StorageConfig) -> Batch:
    reasons, errors = quarantine_columns(batch, len(batch["uri"]))
    decoded = [
        read_and_decode(i, uri, cfg, storage) if not reason else failed(reason, error)
        for i, uri, reason, error in zip(batch["image_id"], batch["uri"], reasons, errors)
    ]
    batch["image"] = objects([d.pixels for d in decoded])
    batch["width"] = np.array([d.width for d in decoded], np.int32)
    batch["height"] = np.array([d.height for d in decoded], np.int32)
    batch["scale"] = np.array([d.scale for d in decoded], np.float32).reshape(-1, 2)
    batch[REASON] = np.array([d.reason for d in decoded], dtype=object)
    batch[ERROR] = np.array([d.error for d in decoded], dtype=object)
    return batch
