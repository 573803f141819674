"""Read and decode images: adds `image`, `width`, `height`, `scale`, and the quarantine columns
`reason` / `error`. Uris outside the storage allow-list are never opened, nor are rows that arrive
already quarantined (they keep their reason).

Decoding is Pillow's on the host (`core.images.decode`), or with `decode.device` set, batched
JPEG decoding with torchvision on that device (nvJPEG on a GPU): every header is still checked on
the host first (`core.images.inspect`), and any other format, and any file the device decoder
refuses, is decoded by Pillow, so the quarantine reasons are the same on both paths."""

from __future__ import annotations

import numpy as np

from core.batches import Batch, objects, quarantine_columns
from core.config import DecodeConfig
from core.images import (
    FORBIDDEN_URI,
    NOT_FOUND,
    TOO_LARGE,
    UNREADABLE,
    Decoded,
    Header,
    decode,
    decode_header,
    failed,
    fitted_size,
    inspect,
)
from core.pixels import as_array
from core.schemas import ERROR, REASON
from core.storage import StorageConfig, TooLargeError, forbidden, read_bytes

JPEG_END = b"\xff\xd9"  # a JPEG without its end marker is truncated: Pillow refuses it, so it goes there
DEVICE_MODES = ("RGB", "L")  # JPEG colour modes the device decoder turns into RGB as Pillow does


def read(row_id: str, uri: str, cfg: DecodeConfig, storage: StorageConfig) -> bytes | Decoded:
    """The file's bytes, or why it could not be read."""
    if why := forbidden(uri, storage):
        return failed(FORBIDDEN_URI, f"row {row_id!r}: {why}")
    try:
        return read_bytes(uri, storage, cfg.max_bytes)
    except FileNotFoundError:
        return failed(NOT_FOUND, f"no file at {uri}")
    except TooLargeError as exc:
        return failed(TOO_LARGE, str(exc))
    except (OSError, ValueError) as exc:
        return failed(UNREADABLE, f"{type(exc).__name__}: {exc}")


def read_decoded(row_id: str, uri: str, cfg: DecodeConfig, storage: StorageConfig) -> Decoded:
    """The file read (`read`) and decoded on the host (`core.images.decode`); `reason` says why not."""
    data = read(row_id, uri, cfg, storage)
    return data if isinstance(data, Decoded) else decode(data, cfg)


def decode_on_device(files: list[bytes | Decoded], cfg: DecodeConfig, device: str) -> list[Decoded]:
    """Decode each file (bytes; a Decoded passes through) as `core.images.decode` does, the JPEGs
    that pass `inspect` in one batched `torchvision.io.decode_jpeg` call on `device`, then resized
    there (bilinear, antialiased) to the same fitted size; their `pixels` are (3, h, w) uint8
    tensors left on `device`. When the batch call fails, each of its files is decoded by Pillow instead."""
    import torch  # here, not at the top: Pillow's decode tasks never pay torch's import
    from torchvision.io import ImageReadMode, decode_jpeg

    checked = [f if isinstance(f, Decoded) else inspect(f, cfg) for f in files]
    out: list[Decoded | None] = [c if isinstance(c, Decoded) else None for c in checked]
    jpegs = [
        k
        for k, h in enumerate(checked)
        if isinstance(h, Header) and h.image.format == "JPEG" and h.image.mode in DEVICE_MODES
        and files[k].rstrip(b"\x00").endswith(JPEG_END)
    ]  # fmt: skip
    if jpegs:
        data = [torch.frombuffer(bytearray(files[k]), dtype=torch.uint8) for k in jpegs]
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        except RuntimeError:  # one bad file fails the batch
            images = []
        for k, image in zip(jpegs, images):
            out[k] = _fitted(image, checked[k], cfg.max_side)
    return [d if d is not None else decode_header(checked[k], cfg) for k, d in enumerate(out)]


def _fitted(image, header: Header, max_side: int) -> Decoded | None:
    """A decoded (3, h, w) uint8 tensor resized to the fitted size of its upright original, as a
    Decoded of that tensor; None when its size is not the header's (left to Pillow)."""
    from torchvision.transforms.v2.functional import resize

    if tuple(image.shape[1:]) != (header.height, header.width):
        return None
    width, height = fitted_size((header.width, header.height), max_side)
    if (width, height) != (header.width, header.height):
        image = resize(image, [height, width], antialias=True)
    return Decoded(image, header.width, header.height, (width / header.width, height / header.height))


def decode_images(batch: Batch, cfg: DecodeConfig, storage: StorageConfig, on_device: bool = False) -> Batch:
    """`image` holds (h, w, 3) host arrays, or with `on_device` the device decode's tensors where
    it made them (for a model in the same process: `actors.fused`)."""
    reasons, errors = quarantine_columns(batch, len(batch["uri"]))
    files = [
        read(i, uri, cfg, storage) if not reason else failed(reason, error)
        for i, uri, reason, error in zip(batch["image_id"], batch["uri"], reasons, errors)
    ]
    if cfg.device:
        decoded = decode_on_device(files, cfg, cfg.device)
    else:
        decoded = [f if isinstance(f, Decoded) else decode(f, cfg) for f in files]
    batch["image"] = objects([d.pixels if on_device else as_array(d.pixels) for d in decoded])
    batch["width"] = np.array([d.width for d in decoded], np.int32)
    batch["height"] = np.array([d.height for d in decoded], np.int32)
    batch["scale"] = np.array([d.scale for d in decoded], np.float32).reshape(-1, 2)
    batch[REASON] = np.array([d.reason for d in decoded], dtype=object)
    batch[ERROR] = np.array([d.error for d in decoded], dtype=object)
    return batch
