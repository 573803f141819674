"""The device decode path (`decode.device`, actors/decoder.py) against Pillow's: the same
quarantine reasons, sizes and scales, pixels within a stated error. On CPU the same code runs as
on a GPU (torchvision's decode_jpeg with libjpeg-turbo instead of nvJPEG); the `gpu` test runs it
on cuda."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from actors.decoder import decode_on_device
from bench.decode import errors, scene_jpeg
from core import images
from core.config import DecodeConfig
from core.pixels import as_array

from .bad_files import png_declaring

LIMITS = DecodeConfig(max_side=500, min_side=32)


def jpeg(width: int, height: int, seed: int, orientation: int = 1, mode: str = "RGB") -> bytes:
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    with Image.open(io.BytesIO(scene_jpeg(width, height, seed=seed))) as source:
        buffer = io.BytesIO()
        source.convert(mode).save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def files() -> dict[str, bytes]:
    """Good JPEGs (reduced, exact size, rotated, grey, CMYK), a PNG, and hostile files."""
    good = jpeg(1200, 800, seed=1)
    png = io.BytesIO()
    Image.open(io.BytesIO(jpeg(300, 200, seed=2))).save(png, "PNG")
    return {
        "reduced": good,
        "small": jpeg(400, 300, seed=3),
        "rotated": jpeg(900, 600, seed=4, orientation=6),
        "grey": jpeg(640, 480, seed=5, mode="L"),
        "cmyk": jpeg(640, 480, seed=6, mode="CMYK"),
        "png": png.getvalue(),
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "garbage": b"\xff\xd8\xff" + bytes(range(256)) * 4,
        "bomb": png_declaring(30_000, 30_000),
        "tiny": jpeg(40, 20, seed=7),
    }


def assert_same_as_pillow(device: str) -> None:
    named = files()
    on_device = decode_on_device(list(named.values()), LIMITS, device)
    for (name, data), got in zip(named.items(), on_device):
        expected, pixels = images.decode(data, LIMITS), as_array(got.pixels)
        assert (got.reason, got.width, got.height) == (expected.reason, expected.width, expected.height), name
        assert pixels.shape == expected.pixels.shape and got.scale == pytest.approx(expected.scale), name
        if not expected.reason:
            mean, border = errors(pixels, expected.pixels)
            assert mean < 3.0 and border < 6.0, (name, mean, border)  # 8-bit levels


def test_device_decode_on_cpu_equals_pillow():
    assert_same_as_pillow("cpu")


def test_a_file_the_device_decoder_refuses_falls_back_alone():
    """A corrupt JPEG whose header parses fails the batched call: every file is then decoded by
    Pillow, the good ones included, with Pillow's reason for the bad one."""
    good = jpeg(640, 480, seed=8)
    corrupt = good[:400] + bytes(len(good) - 402) + good[-2:]  # the end marker kept
    out = decode_on_device([good, corrupt], replace(LIMITS, max_side=320), "cpu")
    expected = [images.decode(d, replace(LIMITS, max_side=320)) for d in (good, corrupt)]
    assert [d.reason for d in out] == [e.reason for e in expected]
    np.testing.assert_array_equal(as_array(out[0].pixels), expected[0].pixels)


@pytest.mark.gpu
def test_device_decode_on_cuda_equals_pillow():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    assert_same_as_pillow("cuda")
