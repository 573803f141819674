"""Pure tests for core/boxes.py: box selection, padding and clipping, crops."""

import numpy as np
import pytest

from core.boxes import crop_pixels, pad_and_clip, select_boxes, whole_image


def test_select_boxes_by_hand() -> None:
    boxes = np.array(
        [
            [0, 0, 50, 50],  # 0: score 0.9
            [0, 0, 10, 50],  # 1: score 0.95 but width 10 < min_side
            [0, 0, 20, 30],  # 2: score 0.5, min side exactly 20 (kept: inclusive)
            [0, 0, 60, 60],  # 3: score 0.3, exactly min_score (kept: inclusive)
            [0, 0, 60, 60],  # 4: score 0.29 < min_score
            [5, 5, 45, 45],  # 5: score 0.9, ties with 0 -> after 0
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.95, 0.5, 0.3, 0.29, 0.9], np.float32)
    keep = select_boxes(boxes, scores, min_score=0.3, max_boxes=10, min_side=20)
    assert keep.tolist() == [0, 5, 2, 3]
    assert keep.dtype == np.int64
    assert select_boxes(boxes, scores, min_score=0.3, max_boxes=2, min_side=20).tolist() == [0, 5]
    assert select_boxes(boxes, scores, min_score=0.3, max_boxes=0, min_side=20).tolist() == []
    assert select_boxes(boxes, scores, min_score=0.96, max_boxes=4, min_side=0).tolist() == []


def test_select_boxes_empty_input() -> None:
    keep = select_boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.25, 4, 24)
    assert keep.shape == (0,) and keep.dtype == np.int64


@pytest.mark.parametrize("seed", range(5))
def test_select_boxes_random_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    x0, y0 = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(1, 60, n), y0 + rng.uniform(1, 60, n)], axis=1)
    scores = rng.choice([0.1, 0.3, 0.5, 0.7], size=n)  # many ties
    keep = select_boxes(boxes, scores, min_score=0.3, max_boxes=7, min_side=15)
    ok = [i for i in range(n) if scores[i] >= 0.3 and min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= 15]
    want = sorted(ok, key=lambda i: (-scores[i], i))[:7]
    assert keep.tolist() == want


def test_pad_and_clip_inside() -> None:
    got = pad_and_clip(np.array([10.0, 20.0, 30.0, 60.0]), 0.1, 100, 100)
    # width 20 -> dx = 2; height 40 -> dy = 4
    np.testing.assert_allclose(got, [8, 16, 32, 64], rtol=0, atol=1e-5)
    assert got.dtype == np.float32 and got.shape == (4,)


def test_pad_and_clip_clips_to_image() -> None:
    got = pad_and_clip(np.array([1.0, 2.0, 99.0, 48.0]), 0.25, 100, 50)
    # dx = 24.5, dy = 11.5: every side crosses the image border
    np.testing.assert_array_equal(got, [0, 0, 100, 50])
    np.testing.assert_array_equal(pad_and_clip(np.array([0.0, 0.0, 8.0, 6.0]), 0.0, 8, 6), [0, 0, 8, 6])


def test_whole_image() -> None:
    got = whole_image(640, 480)
    np.testing.assert_array_equal(got, [0, 0, 640, 480])
    assert got.dtype == np.float32


def test_crop_pixels_rounds_outwards() -> None:
    image = np.arange(10 * 12 * 3, dtype=np.int64).reshape(10, 12, 3)
    crop = crop_pixels(image, np.array([1.5, 2.2, 3.1, 4.0]))
    # x: floor(1.5)=1 .. ceil(3.1)=4; y: floor(2.2)=2 .. ceil(4.0)=4
    np.testing.assert_array_equal(crop, image[2:4, 1:4])
    np.testing.assert_array_equal(crop_pixels(image, whole_image(12, 10)), image)


def test_crop_pixels_at_least_one_pixel() -> None:
    image = np.arange(10 * 12 * 3, dtype=np.int64).reshape(10, 12, 3)
    crop = crop_pixels(image, np.array([5.0, 7.0, 5.0, 7.0]))
    assert crop.shape == (1, 1, 3)
    np.testing.assert_array_equal(crop[0, 0], image[7, 5])
    assert crop_pixels(image, np.array([2.9, 3.5, 3.0, 3.6])).shape == (1, 1, 3)
