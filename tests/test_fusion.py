"""The sketch+text fusion: the projection's arithmetic, multi-match recall, InfoNCE training that
learns what the weighted mean cannot, and jobs.train_fusion end to end on a tiny benchmark."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from actors.embedder import SiglipModelWrapper
from core.config import CONF_DIR, ModelSpec, SketchConfig, load_config
from core.fusion import Fusion, unit
from core.vocab import ATTRIBUTES, vocabulary_words
from datagen.fashion_benchmark import make_benchmark
from jobs import train_fusion as train_fusion_job
from quality.search import QueryError, query_fusion
from training.data import load_split, read_rows
from training.fusion import GarmentViews, TrainFusionConfig, query_recalls, shot_recall, train_fusion
from training.siglip import recall_any_at_k
from training.tiny_models import build_tiny_siglip

DIM = 16


def test_the_weighted_mean_projection_is_the_normalised_weighted_mean(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vision, text = unit(rng.normal(size=(3, DIM))), unit(rng.normal(size=(3, DIM)))
    fusion = Fusion.weighted_mean(DIM, 0.7)
    assert fusion(vision, text) == pytest.approx(unit(0.7 * vision + 0.3 * text), abs=1e-6)
    assert np.linalg.norm(fusion(vision[0], text[0])) == pytest.approx(1.0)
    fusion.save(tmp_path / "f.safetensors", {"embedder": "x"})
    assert Fusion.load(tmp_path / "f.safetensors").projection == pytest.approx(fusion.projection)


def test_recall_counts_any_true_match_and_never_a_query_without_one() -> None:
    gallery = np.eye(4, dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0.4, 0], [0, 0, 0, 1], [1, 0, 0, 0]], np.float32)
    positive = np.array([[False, True, True, False], [False, False, False, True], [False] * 4])
    # query 0: matches at ranks 3 (row 1) and 2 (row 2) -> its best is 2nd; query 1: 1st; query 2: none
    assert recall_any_at_k(queries, gallery, positive, (1, 2, 4)) == {1: 1 / 3, 2: 2 / 3, 4: 2 / 3}


def rotated_views(n: int, rotation: np.ndarray, rng: np.random.Generator) -> GarmentViews:
    """Garments whose sketch embedding is the shot's rotated by `rotation` (plus a little noise) and
    whose caption embedding is the shot's plus much noise: the sketch holds the garment, but only
    a learnt projection can read it."""
    shots = unit(rng.normal(size=(n, DIM)))
    sketches = unit(shots @ rotation.T + 0.1 * rng.normal(size=(n, DIM)))
    return GarmentViews(
        garment_ids=[f"g{i}" for i in range(n)],
        shots=shots,
        sketches=sketches,
        plain_sketches=sketches,
        captions=unit(shots + 1.5 * rng.normal(size=(n, DIM))),
        light=np.zeros(n, bool),
    )


def test_infonce_training_learns_to_read_a_sketch_the_weighted_mean_cannot() -> None:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    train, test = rotated_views(600, rotation, rng), rotated_views(200, rotation, rng)
    cfg = TrainFusionConfig(train="", test="", embedder="", out="", epochs=40, batch_size=100, lr=1e-2)
    fusion, record = train_fusion(train, cfg)
    rows = np.arange(200)
    mean = Fusion.weighted_mean(DIM, 0.5)
    assert record["kept_epoch"] > 0 and record["validation_recall@1"]["kept"] > record["validation_recall@1"]["start"]
    assert shot_recall(fusion, test, rows, 1) > 0.8 > 0.3 > shot_recall(mean, test, rows, 1)
    gallery = type("Gallery", (), {"embeddings": test.shots, "garment_ids": np.array(test.garment_ids, object)})
    recalls = query_recalls(test, gallery, {"mean": mean, "trained": fusion})
    assert recalls["sketch+text trained"]["hits@1"] > recalls["text"]["hits@1"]
    assert recalls["sketch+text trained"]["hits@1"] > recalls["sketch+text mean"]["hits@1"]
    assert {r["queries"] for r in recalls.values()} == {200} and "sketch (light)" not in recalls


def test_train_fusion_job_writes_a_fusion_that_search_loads(tiny_models, vocab, tmp_path) -> None:
    make_benchmark(tmp_path / "bench", 8, 6, 3, vocab, 6, 5)
    out = tmp_path / "fusion"
    record = train_fusion_job.main(
        [str(CONF_DIR / "train_fusion.yaml"), f"train={tmp_path / 'bench/train'}", f"test={tmp_path / 'bench/test'}",
         f"embedder={tiny_models['siglip']}", f"out={out}", "epochs=2", "batch_size=4"]
    )  # fmt: skip
    recalls = json.loads((out / "training.json").read_text())["test_recall"]
    assert recalls == record["test_recall"] and record["gallery_crops"] > 0
    for kind in ("image", "sketch", "text", "sketch+text mean", "sketch+text trained"):
        assert 0 < recalls[kind]["@10"]["total"] <= 5 and recalls[kind]["@1"]["value"] <= recalls[kind]["@10"]["value"]
    args = ["lookbook=x", "garments=x", "output=x", f"search.fusion={out / train_fusion_job.FUSION_FILE}"]
    cfg = load_config([str(CONF_DIR / "demo.yaml"), f"embedder.model.spec={tiny_models['siglip']}", *args])
    siglip = SiglipModelWrapper(cfg.embedder, cfg.storage)
    assert query_fusion(cfg, siglip).projection.shape == (siglip.dim, 2 * siglip.dim)
    other = build_tiny_siglip(tmp_path / "other", vocabulary_words(vocab), seed=1)  # the same size, other weights
    with pytest.raises(QueryError, match="trained on another embedder"):
        query_fusion(cfg, SiglipModelWrapper(replace(cfg.embedder, model=ModelSpec(spec=str(other))), cfg.storage))


def test_sketches_join_a_training_split_as_views_that_know_only_the_category(vocab, tmp_path) -> None:
    make_benchmark(tmp_path / "bench", 6, 2, 5, vocab, 5, 4)
    resize = lambda images: np.stack([np.asarray(i.resize((64, 64))) for i in images])  # noqa: E731
    plain = load_split(tmp_path / "bench/train", resize, 0.05)
    data = load_split(tmp_path / "bench/train", resize, 0.05, sketches=SketchConfig())
    garments = read_rows(tmp_path / "bench/train", "garments")
    assert len(data.garment_ids) == len(plain.garment_ids) + len(garments)
    sketch_rows = range(len(plain.garment_ids), len(data.garment_ids))
    assert [data.garment_ids[i] for i in sketch_rows] == [g["garment_id"] for g in garments]
    assert all(data.attributes[i] == {**dict.fromkeys(ATTRIBUTES, ""), "category": g["category"]}
               for i, g in zip(sketch_rows, garments))  # fmt: skip
    sketches = data.pixels[list(sketch_rows)]
    assert not data.is_shot[list(sketch_rows)].any() and (sketches[..., 0] == sketches[..., 2]).all()  # grey
    assert (sketches.reshape(len(garments), -1) < 128).any(axis=1).all()  # each has dark lines
