"""Pure tests for core/images.py `decode`: every failure is a reason code, never an exception."""

import io
import resource
import struct

import numpy as np
import pytest
from PIL import Image

from core import images
from core.config import DecodeConfig
from core.images import decode

from .bad_files import png_declaring

LIMITS = DecodeConfig(max_side=200, min_side=32)


def _encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _halves(width: int, height: int) -> np.ndarray:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return pixels


def _assert_failed(result: images.Decoded, reason: str) -> None:
    assert result.reason == reason
    assert result.error
    assert result.pixels.shape == (0, 0, 3) and result.pixels.dtype == np.uint8


def test_good_png_is_exact_when_small_enough() -> None:
    pixels = _halves(120, 80)
    result = decode(_encode(pixels, "PNG"), LIMITS)
    assert result.reason == "" and result.error == ""
    assert (result.width, result.height, result.scale) == (120, 80, (1.0, 1.0))
    np.testing.assert_array_equal(result.pixels, pixels)


def test_png_downscaled_to_max_side() -> None:
    result = decode(_encode(_halves(400, 300), "PNG"), LIMITS)
    assert result.reason == ""
    assert result.pixels.shape == (150, 200, 3) and result.pixels.dtype == np.uint8
    assert (result.width, result.height) == (400, 300)
    assert result.scale == (200 / 400, 150 / 300)
    # colours survive away from the seam
    np.testing.assert_array_equal(result.pixels[:, :95], np.broadcast_to([255, 0, 0], (150, 95, 3)))
    np.testing.assert_array_equal(result.pixels[:, 105:], np.broadcast_to([0, 0, 255], (150, 95, 3)))


def test_portrait_png_and_non_rgb_modes() -> None:
    grey = np.full((400, 300), 77, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    result = decode(buffer.getvalue(), LIMITS)
    assert result.pixels.shape == (200, 150, 3)
    assert result.scale == (150 / 300, 200 / 400)
    assert (result.pixels == 77).all()

    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 255
    result = decode(_encode(rgba, "PNG"), LIMITS)
    assert result.pixels.shape == (40, 50, 3)
    assert (result.pixels == [0, 200, 0]).all()


@pytest.mark.parametrize(("width", "height"), [(400, 300), (1600, 1200)])
def test_good_jpeg_downscaled(width: int, height: int) -> None:
    # 1600x1200 goes through JPEG draft mode (a DCT-scaled decode) before the final resize
    result = decode(_encode(_halves(width, height), "JPEG", quality=95), LIMITS)
    assert result.reason == ""
    assert result.pixels.shape == (150, 200, 3)
    assert (result.width, result.height) == (width, height)
    assert result.scale == pytest.approx((200 / width, 150 / height))
    left, right = result.pixels[:, :90].reshape(-1, 3).mean(0), result.pixels[:, 110:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(left, [255, 0, 0], atol=6)
    np.testing.assert_allclose(right, [0, 0, 255], atol=6)


def test_zero_bytes() -> None:
    _assert_failed(decode(b"", LIMITS), images.DECODE_ERROR)


def test_truncated_jpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    data = _encode(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8), "JPEG")
    result = decode(data[: len(data) // 2], LIMITS)
    _assert_failed(result, images.DECODE_ERROR)
    assert "truncated" in result.error


def test_random_bytes() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _assert_failed(decode(data, LIMITS), images.DECODE_ERROR)


def test_gif_not_in_formats() -> None:
    data = _encode(_halves(64, 64), "GIF")
    _assert_failed(decode(data, LIMITS), images.UNSUPPORTED_FORMAT)
    # the same bytes decode once GIF is allowed
    allowed = DecodeConfig(max_side=200, min_side=32, formats=["GIF"])
    assert decode(data, allowed).pixels.shape == (64, 64, 3)


def test_too_small() -> None:
    _assert_failed(decode(_encode(_halves(40, 31), "PNG"), LIMITS), images.TOO_SMALL)
    # min_side is inclusive
    assert decode(_encode(_halves(40, 32), "PNG"), LIMITS).pixels.shape == (32, 40, 3)


def test_declared_30000x30000_png_is_a_bomb_without_allocating() -> None:
    data = png_declaring(30000, 30000)
    assert len(data) < 200
    assert struct.unpack(">II", data[16:24]) == (30000, 30000)  # IHDR width, height
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = decode(data, DecodeConfig())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    _assert_failed(result, images.DECOMPRESSION_BOMB)
    assert grown_kib < 100 * 1024  # the 2.7 GB of pixels were never allocated


def test_declared_10000x9000_png_with_lowered_max_pixels() -> None:
    result = decode(png_declaring(10000, 9000), DecodeConfig(max_pixels=10_000_000))
    _assert_failed(result, images.DECOMPRESSION_BOMB)


def test_max_pixels_is_enforced_below_pillows_own_limit() -> None:
    # 3000x2000 = 6 Mpx is far below Pillow's default bomb threshold: only limits.max_pixels refuses it
    data = png_declaring(3000, 2000)
    result = decode(data, DecodeConfig(max_pixels=5_999_999))
    _assert_failed(result, images.DECOMPRESSION_BOMB)
    assert "3000x2000" in result.error
    # allowed by the limit, the file then fails as what it is: pixel data missing
    _assert_failed(decode(data, DecodeConfig(max_pixels=6_000_000)), images.DECODE_ERROR)


def test_reason_codes_are_the_quarantine_vocabulary() -> None:
    assert (
        images.DECODE_ERROR,
        images.DECOMPRESSION_BOMB,
        images.TOO_SMALL,
        images.UNSUPPORTED_FORMAT,
    ) == ("decode_error", "decompression_bomb", "too_small", "unsupported_format")


def test_exif_orientation_is_applied_and_sizes_are_upright() -> None:
    """#13, item 10: a phone photo tagged orientation 6 (turn 90 degrees clockwise) was embedded sideways."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(_halves(120, 60), "JPEG", quality=95, exif=exif.tobytes())  # stored landscape
    result = decode(data, LIMITS)
    assert (result.width, result.height) == (60, 120) and result.pixels.shape == (120, 60, 3)
    top, bottom = result.pixels[:50].reshape(-1, 3).mean(0), result.pixels[70:].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(top, [255, 0, 0], atol=8)  # the stored left half is on top once upright
    np.testing.assert_allclose(bottom, [0, 0, 255], atol=8)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    """#13, item 10: a 16-bit PNG saturated (mean 254 of 255)."""
    grey = np.full((64, 64), 30000, np.uint16)
    result = decode(_encode(grey, "PNG"), LIMITS)
    assert result.reason == "" and abs(float(result.pixels.mean()) - 30000 / 256) < 1


def test_a_long_thin_image_gets_a_scale_per_axis() -> None:
    """#13, item 10: one scale from the height put x-boxes of a 32 x 2,000,000 image off by 49x."""
    result = decode(_encode(np.zeros((20_000, 40, 3), np.uint8), "PNG"), LIMITS)
    assert result.pixels.shape == (200, 1, 3)
    assert result.scale == (1 / 40, 200 / 20_000)


def test_max_pixels_is_the_only_pixel_limit() -> None:
    """#13, item 10: Pillow's own limit (89,478,485 pixels) refused what decode.max_pixels allowed."""
    allowing = DecodeConfig(max_pixels=400_000_000)
    result = decode(png_declaring(12_000, 12_000), allowing)  # 144 M pixels declared, then truncated
    assert result.reason == images.DECODE_ERROR
    assert decode(png_declaring(12_000, 12_000), DecodeConfig(max_pixels=100_000_000)).reason == (
        images.DECOMPRESSION_BOMB
    )


def test_only_the_allowed_formats_parsers_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """#13, item 10: Image.open ran every format's parser before the format was refused."""
    from PIL import GifImagePlugin

    def refuse(self):
        raise AssertionError("the GIF parser ran")

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_open", refuse)
    gif = _encode(np.zeros((40, 40, 3), np.uint8), "PNG").replace(b"\x89PNG", b"GIF8", 1)
    result = decode(gif, LIMITS)
    _assert_failed(result, images.UNSUPPORTED_FORMAT)
    assert "GIF" in result.error
    _assert_failed(decode(b"not an image at all", LIMITS), images.DECODE_ERROR)


# --- JPEGs decoded at the size the job keeps (a scaled IDCT), against a full decode -----------------


def test_fitted_size_keeps_the_aspect_and_never_upscales() -> None:
    assert images.fitted_size((3000, 2000), 1280) == (1280, 853)
    assert images.fitted_size((2000, 3000), 1280) == (853, 1280)
    assert images.fitted_size((800, 600), 1280) == (800, 600)


@pytest.mark.parametrize("orientation", [1, 6])
def test_large_jpeg_decodes_reduced_and_matches_a_full_decode(orientation: int) -> None:
    """1200x800 at max_side 500: JPEG decodes at 1/2 (600x400), then the exact resize. The old
    square 500x500 draft decoded it in full (800 // 500 = 1). Output within a stated error of the
    full decode's, the border ring included (scaled IDCT edge artefacts)."""
    from bench.decode import errors, full_decode, scene_jpeg

    limits = DecodeConfig(max_side=500, min_side=32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(io.BytesIO(scene_jpeg(1200, 800, seed=orientation))) as source:
        buffer = io.BytesIO()
        source.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as probe:
        probe.draft("RGB", images.fitted_size(probe.size, limits.max_side))
        assert probe.size == (600, 400)  # what decode() decodes
    result = decode(data, limits)
    upright = (1200, 800) if orientation == 1 else (800, 1200)
    assert (result.width, result.height) == upright
    assert result.pixels.shape[:2][::-1] == images.fitted_size(upright, 500)
    assert result.scale == (result.pixels.shape[1] / upright[0], result.pixels.shape[0] / upright[1])
    reference = full_decode(data, limits.max_side)
    assert result.pixels.shape == reference.shape
    mean, border = errors(result.pixels, reference)
    assert mean < 2.0 and border < 4.0, (mean, border)  # 8-bit levels


def test_decode_benchmark_runs_and_reports_both_paths(capsys) -> None:
    """bench.decode at a tiny size, so the script cannot rot between recorded runs."""
    from bench import decode as bench_decode

    results = bench_decode.main(["--megapixels", "0.3", "--images", "1", "--repeat", "1", "--max-side", "200"])
    figures = results[0.3]
    assert figures["full"] > 0 and figures["reduced"] > 0 and figures["floor"] > 0
    assert figures["mean_error"] < 2.0
    assert capsys.readouterr().out.splitlines()[-1].startswith("decode: max_side=200 mp0.3_speedup=")
