"""The Fashion-MNIST benchmark generator: IDX reading, determinism, the split, truth boxes and counts.

Needs Debian's dataset-fashion-mnist (`make env`); without it these tests fail with that hint.
"""

import gzip
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.config import VOCAB_PATH
from core.vocab import load_vocab
from datagen.fashion_benchmark import (
    BENCHMARK_GARMENT_SCHEMA,
    BENCHMARK_TRUTH_SCHEMA,
    FMNIST_CATEGORIES,
    BenchmarkSpec,
    SplitInfo,
    compose_scene,
    make_benchmark,
    plan_split,
    render_item,
)
from datagen.fmnist import load_split, read_idx
from datagen.synthetic import LOOKBOOK_SCHEMA
from jobs.make_benchmark import main

# A non-default mix, so the counts below can only come from the spec.
SPEC = replace(BenchmarkSpec(), empty_fraction=0.25, distractor_fraction=0.4)
N_SCENES, N_TEST_SCENES, N_GARMENTS, N_TEST_GARMENTS = 24, 16, 12, 10


@pytest.fixture(scope="module")
def vocab() -> dict[str, list[str]]:
    return load_vocab(VOCAB_PATH)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, vocab: dict[str, list[str]]) -> dict[str, SplitInfo]:
    out = tmp_path_factory.mktemp("bench")
    return make_benchmark(out, N_SCENES, N_TEST_SCENES, 0, vocab, N_GARMENTS, N_TEST_GARMENTS, SPEC)


def _content(root: Path) -> dict[str, object]:
    """Every file under ``root`` by relative path: bytes, or for a manifest its rows with uris made relative."""
    content: dict[str, object] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            for row in rows:
                if "uri" in row:
                    row["uri"] = str(Path(row["uri"]).relative_to(root))
            content[str(path.relative_to(root))] = rows
        else:
            content[str(path.relative_to(root))] = path.read_bytes()
    return content


def test_same_seed_same_bytes_any_workers_different_seed_differs(tmp_path: Path, vocab: dict[str, list[str]]) -> None:
    sizes = ["--scenes", "8", "--test-scenes", "6", "--garments", "6", "--test-garments", "5"]
    main(["--out", str(tmp_path / "a"), *sizes, "--seed", "3", "--workers", "1"])
    make_benchmark(tmp_path / "b", 8, 6, 3, vocab, 6, 5, workers=2)
    make_benchmark(tmp_path / "c", 8, 6, 4, vocab, 6, 5)
    a, b, c = (_content(tmp_path / name) for name in "abc")
    assert len(a) == 1 + (3 + 6 + 8) + (3 + 5 + 6)  # DATASET.md; per split 3 manifests, garments, scenes
    assert a == b
    assert a.keys() == c.keys()
    images = [name for name in a if name.endswith((".png", ".jpg"))]
    assert all(a[name] != c[name] for name in images)


def test_manifest_schemas_and_ids(bench: dict[str, SplitInfo]) -> None:
    for split, info in bench.items():
        garments, lookbook = pq.read_table(info.garments_path), pq.read_table(info.lookbook_path)
        assert garments.schema == BENCHMARK_GARMENT_SCHEMA
        assert lookbook.schema == LOOKBOOK_SCHEMA
        assert pq.read_table(info.truth_path).schema == BENCHMARK_TRUTH_SCHEMA
        assert garments["garment_id"].to_pylist() == [f"g{i:06d}" for i in range(info.n_garments)]
        assert lookbook["image_id"].to_pylist() == [f"l{i:06d}" for i in range(info.n_scenes)]
        for row in garments.to_pylist():
            assert row["text"] == f"a {row['colour']} {row['pattern']} {row['category']}"
            assert (row["sleeve"], row["length"], row["occasion"]) == ("", "", "")
            assert Path(row["uri"]).is_file() and Path(row["uri"]).parent == info.garments_path.parent / "garments"
            assert Image.open(row["uri"]).size == (SPEC.garment_size, SPEC.garment_size)
        assert (info.n_garments, info.n_scenes) == {
            "train": (N_GARMENTS, N_SCENES),
            "test": (N_TEST_GARMENTS, N_TEST_SCENES),
        }[split]


def test_each_split_draws_only_from_its_own_fmnist_file(bench: dict[str, SplitInfo]) -> None:
    for split, prefix in (("train", "train"), ("test", "t10k")):
        info = bench[split]
        _, labels = load_split(split)
        garments = pq.read_table(info.garments_path).to_pylist()
        truth = pq.read_table(info.truth_path).to_pylist()
        for row in garments + truth:
            file, item = row["source"].split(":")
            assert file == prefix
            assert row["category"] == FMNIST_CATEGORIES[labels[int(item)]]
        catalogue = {row["garment_id"]: row for row in garments}
        assert len({row["source"] for row in garments}) == len(garments)  # distinct items
        for row in truth:
            if row["garment_id"]:
                keys = ("category", "colour", "pattern", "source")
                assert {k: row[k] for k in keys} == {k: catalogue[row["garment_id"]][k] for k in keys}
            else:
                assert row["source"] not in {g["source"] for g in garments}


def test_truth_boxes_lie_inside_their_scene(bench: dict[str, SplitInfo]) -> None:
    for info in bench.values():
        uris = dict(zip(*pq.read_table(info.lookbook_path).to_pydict().values()))
        for row in pq.read_table(info.truth_path).to_pylist():
            width, height = Image.open(uris[row["image_id"]]).size
            assert SPEC.scene_width[0] <= width <= SPEC.scene_width[1]
            assert SPEC.scene_height[0] <= height <= SPEC.scene_height[1]
            assert 0 <= row["x0"] < row["x1"] <= width and 0 <= row["y0"] < row["y1"] <= height


def test_counts_are_as_configured(bench: dict[str, SplitInfo]) -> None:
    for info in bench.values():
        truth = pq.read_table(info.truth_path).to_pylist()
        per_scene: dict[str, list[str]] = {}
        for row in truth:
            per_scene.setdefault(row["image_id"], []).append(row["garment_id"])
        assert len(per_scene) == info.n_scenes  # every scene holds at least one garment
        assert all(1 <= len(ids) <= len(SPEC.garments_per_scene) for ids in per_scene.values())
        catalogue_ids = [[g for g in ids if g] for ids in per_scene.values()]
        assert all(len(ids) == len(set(ids)) for ids in catalogue_ids)  # distinct garments per scene
        assert sum(not ids for ids in catalogue_ids) == info.n_empty_scenes == round(0.25 * info.n_scenes)
        distractors = sum(not row["garment_id"] for row in truth)
        assert distractors == info.n_distractors == round(0.4 * len(truth))
        placed = {g for ids in catalogue_ids for g in ids}
        assert info.n_unplaced == info.n_garments - len(placed) >= round(SPEC.unplaced_fraction * info.n_garments)


def _square_item() -> Image.Image:
    """224 px RGBA with an opaque 100 x 200 px red rectangle."""
    item = Image.new("RGBA", (224, 224), (0, 0, 0, 0))
    item.paste((200, 10, 10, 255), (62, 12, 162, 212))
    return item


def test_box_is_the_posed_garment_extent() -> None:
    # No rotation or warp: the rectangle scaled to half the 300 px scene height is 75 x 150 px, its centre
    # in the middle of the only column +-20 % of 400 px, 35..65 % down.
    flat = BenchmarkSpec(scene_width=(400, 400), scene_height=(300, 300), height_fraction=(0.5, 0.5),
                         max_rotation=0, perspective=0, border_crop_p=0, occlusion_p=0)  # fmt: skip
    for seed in range(4):
        scene, boxes, owner = compose_scene(np.random.default_rng(seed), [_square_item()], flat)
        (x0, y0, x1, y1), (ys, xs) = boxes[0], np.nonzero(owner == 0)
        assert scene.size == (400, 300) and owner.shape == (300, 400)
        assert (x1 - x0, y1 - y0) == (75, 150)
        assert 120 <= (x0 + x1) / 2 <= 280 and 105 <= (y0 + y1) / 2 <= 195
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == boxes[0]


def test_border_crop_keeps_half_to_four_fifths_in_frame() -> None:
    cropped = BenchmarkSpec(scene_width=(400, 400), scene_height=(300, 300), height_fraction=(0.5, 0.5),
                            max_rotation=0, perspective=0, border_crop_p=1, occlusion_p=0)  # fmt: skip
    for seed in range(8):
        _, boxes, _ = compose_scene(np.random.default_rng(seed), [_square_item()], cropped)
        x0, y0, x1, y1 = boxes[0]
        kept = (x1 - x0) / 75 if (x1 - x0) < 75 else (y1 - y0) / 150
        assert 0.5 - 1 / 75 <= kept <= 0.8 + 1 / 75
        assert x0 == 0 or y0 == 0 or x1 == 400 or y1 == 300


def test_visible_pixels_of_each_garment_lie_in_its_box() -> None:
    images, _ = load_split("test")
    items = [
        render_item(images[i], "red", pattern, np.random.default_rng(i), 224, 0.08)
        for i, pattern in zip(range(4), ("solid", "striped", "floral", "graphic"))
    ]
    occluded = 0
    for seed in range(6):
        _, boxes, owner = compose_scene(np.random.default_rng(seed), items, replace(BenchmarkSpec(), occlusion_p=1))
        for index, (x0, y0, x1, y1) in enumerate(boxes):
            ys, xs = np.nonzero(owner == index)
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
            occluded += (xs.max() + 1 - xs.min()) * (ys.max() + 1 - ys.min()) > len(xs)
    assert occluded > 0


def test_read_idx_plain_and_gzip(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x0B, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    values = b"".join(v.to_bytes(2, "big", signed=True) for v in (1, -2, 3, 256, 0, -32768))
    (tmp_path / "a.idx").write_bytes(header + values)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(header + values))
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.int16 and got.tolist() == [[1, -2, 3], [256, 0, -32768]]
    (tmp_path / "short.idx").write_bytes(header + values[:-2])
    with pytest.raises(ValueError, match="holds 5 values"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x00\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")


def test_missing_fmnist_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make env"):
        load_split("test", tmp_path)


def test_plan_rejects_impossible_sizes() -> None:
    labels = np.repeat(np.arange(10), 3)  # 30 items, 3 per label
    allowed = np.array([True] * 2 + [False] * 8)  # 6 allowed items
    with pytest.raises(ValueError, match="garments"):
        plan_split(np.random.default_rng(0), labels, allowed, 2, 2, 6, 10, BenchmarkSpec())  # no distractor left
    plan = plan_split(np.random.default_rng(0), labels, allowed, 2, 2, 5, 10, BenchmarkSpec())
    assert set(plan.garment_item.tolist()) <= set(range(6)) and len(set(plan.garment_item.tolist())) == 5
    assert set(plan.slot_item[plan.slot_garment < 0].tolist()) <= set(range(6)) - set(plan.garment_item.tolist())
