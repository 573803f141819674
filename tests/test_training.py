"""Training helpers: texts and positives, the sigmoid loss, hold-out metrics, the YOLO data set, and
short SigLIP training runs that lower the loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from core.config import CONF_DIR
from core.vocab import ATTRIBUTES, vocabulary_words
from jobs import train_siglip
from training import siglip_loop
from training.data import SplitImages, load_split
from training.detector import box_recall, write_split, yolo_label_lines
from training.siglip import (
    attribute_accuracy,
    decided,
    learning_rate_factor,
    positives,
    recall_at_k,
    same_id_positives,
    sigmoid_loss,
    text_options,
    vocabulary_prompts,
)
from training.tiny_models import build_tiny_siglip, deepened, with_input_size

CAPTIONER = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "mine.yaml").captioner)
RED_DRESS = {"category": "dress", "colour": "red", "pattern": "striped", "sleeve": "", "length": "", "occasion": ""}


def test_text_options_cover_caption_template_catalogue_text_and_prompts() -> None:
    vocab = {"sleeve": ["long-sleeved"], "length": ["midi"], "occasion": ["party"]}  # one value: no randomness
    options = text_options(
        RED_DRESS, CAPTIONER["prompts"], CAPTIONER["caption_template"], vocab, np.random.default_rng(0), "red frock"
    )
    everything = frozenset({("category", "dress"), ("colour", "red"), ("pattern", "striped")})
    assert options == [
        ("a red striped dress", everything),
        ("a red striped dress, long-sleeved sleeves, midi, for party", everything),
        ("red frock", everything),
        ("a photo of a dress", frozenset({("category", "dress")})),
        ("a photo of a red garment", frozenset({("colour", "red")})),
        ("a photo of a striped garment", frozenset({("pattern", "striped")})),
    ]


def test_a_text_is_true_of_every_image_that_has_all_it_claims() -> None:
    claims = [
        frozenset({("colour", "red")}),
        frozenset({("colour", "red"), ("category", "dress")}),
        frozenset({("category", "skirt")}),
    ]
    images = [
        {"colour": "red", "category": "dress"},
        {"colour": "red", "category": "skirt"},
        {"colour": "blue", "category": "dress", "pattern": ""},
    ]
    assert positives(claims, images).tolist() == [[True, True, False], [True, False, True], [False, False, False]]


def test_same_garment_pairs_leave_out_self_and_distractors() -> None:
    same = same_id_positives(["a", "b", "a", "", ""])
    expected = np.zeros((5, 5), bool)
    expected[0, 2] = expected[2, 0] = True
    assert same.tolist() == expected.tolist()


def test_sigmoid_loss_of_zero_logits_is_log2_per_pair() -> None:
    loss = sigmoid_loss(torch.zeros(2, 3), torch.tensor([[True, False, False], [False, True, True]]))
    assert loss.item() == pytest.approx(6 * math.log(2) / 2)
    loss = sigmoid_loss(torch.tensor([[2.0, -1.0]]), torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0)))


def test_sigmoid_loss_with_one_positive_per_row_is_siglips(tmp_path: Path, vocab) -> None:
    folder = build_tiny_siglip(tmp_path, vocabulary_words(vocab), image_size=32, dim=32)
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    tokens = tokenizer(["a red dress", "a blue skirt", "a photo of a coat"], padding="max_length", return_tensors="pt")
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(input_ids=tokens["input_ids"], pixel_values=pixels, return_loss=True)
    assert sigmoid_loss(output.logits_per_image, torch.eye(3, dtype=torch.bool)).item() == pytest.approx(
        output.loss.item(), rel=1e-6
    )


def test_recall_at_k_ranks_ties_by_gallery_row() -> None:
    gallery = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0.8, 0.6, 0], [1, 0, 0]], np.float32)
    recall = recall_at_k(queries, gallery, np.array([0, 1, 2]), (1, 2, 3))
    assert recall == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_attribute_accuracy_counts_rows_with_a_known_value() -> None:
    predicted = [{"category": "dress", "colour": "red"}, {"category": "skirt", "colour": "red"},
                 {"category": "dress", "colour": "blue"}]  # fmt: skip
    truth = [{"category": "dress", "colour": "red"}, {"category": "dress", "colour": ""},
             {"category": "dress", "colour": "red"}]  # fmt: skip
    assert attribute_accuracy(predicted, truth, ("category", "colour")) == {
        "category": (pytest.approx(2 / 3), 3),
        "colour": (0.5, 2),
    }


def test_yolo_labels_are_normalised_centre_and_size_clipped_to_the_image() -> None:
    boxes = np.array([[10, 20, 110, 70], [-10, 50, 50, 150], [250, 0, 300, 10]], np.float32)
    assert yolo_label_lines(boxes, width=200, height=100) == [
        "0 0.300000 0.450000 0.500000 0.500000",
        "0 0.125000 0.750000 0.250000 0.500000",
    ]


def test_box_recall_matches_one_to_one_at_iou_half() -> None:
    truth = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 10, 10]])]
    predicted = [np.array([[0, 0, 10, 9], [0, 0, 10, 10]]), np.array([[5, 0, 15, 10]])]  # IoU 0.9, 1; 1/3
    assert box_recall(truth, predicted) == pytest.approx(1 / 3)
    predicted[0] = np.array([[0, 0, 10, 9], [21, 20, 31, 30]])  # second box: IoU 90/110
    assert box_recall(truth, predicted) == pytest.approx(2 / 3)


def test_write_split_links_readable_scenes_and_writes_their_boxes(sample, tmp_path: Path) -> None:
    split = sample.truth_path.parent
    assert write_split(split, tmp_path, "train") == sample.n_images - len(sample.bad_ids)
    links = sorted(p.stem for p in (tmp_path / "images" / "train").iterdir())
    assert not set(sample.bad_ids) & set(links)
    truth = pq.read_table(sample.truth_path).to_pylist()
    first = truth[0]
    with Image.open(tmp_path / "images" / "train" / f"{first['image_id']}.jpg") as image:
        width, height = image.size
    lines = (tmp_path / "labels" / "train" / f"{first['image_id']}.txt").read_text().splitlines()
    x0, y0, x1, y1 = first["x0"], first["y0"], first["x1"], first["y1"]
    assert lines[0] == (
        f"0 {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
    )
    counts = {row["image_id"]: 0 for row in truth}
    for row in truth:
        counts[row["image_id"]] += 1
    for image_id in links:
        assert len((tmp_path / "labels" / "train" / f"{image_id}.txt").read_text().splitlines()) == counts.get(
            image_id, 0
        )


def test_load_split_has_every_shot_then_one_crop_per_truth_row(sample) -> None:
    def resize(images):
        return np.stack([np.asarray(i.resize((16, 16))) for i in images])

    data = load_split(sample.truth_path.parent, resize, box_padding=0.05, chunk=5)
    truth = pq.read_table(sample.truth_path).to_pylist()
    assert data.pixels.shape == (sample.n_garments + len(truth), 16, 16, 3)
    assert data.is_shot.tolist() == [True] * sample.n_garments + [False] * len(truth)
    assert data.garment_ids[sample.n_garments :] == [row["garment_id"] for row in truth]
    assert all(t for t in data.texts)


def _colour_squares() -> SplitImages:
    """4 garments, each a product shot (a flat colour) and a darker 'crop' of it."""
    colours = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30), "yellow": (230, 220, 40)}
    pixels = [np.full((32, 32, 3), rgb, np.uint8) for rgb in colours.values()]
    pixels += [(p * 0.7).astype(np.uint8) for p in pixels]
    attributes = [{"category": "dress", "colour": c, "pattern": "solid"} for c in colours] * 2
    return SplitImages(
        pixels=np.stack(pixels),
        garment_ids=[f"g{i}" for i in range(4)] * 2,
        attributes=[{**{a: "" for a in RED_DRESS}, **a} for a in attributes],
        texts=[""] * 8,
        is_shot=np.array([True] * 4 + [False] * 4),
    )


def test_hard_negative_batches_hold_garments_that_look_alike() -> None:
    """Crops of 12 garments in 3 (category, colour) looks: grouped by a look's attributes, each batch
    of 4 anchors shares their values (only red ones share a batch of coats and dresses, grouped by
    colour); every anchor still comes once, followed by its own garment's shot."""
    looks = [("dress", "red"), ("coat", "red"), ("dress", "blue")] * 4
    shots = [{**{a: "" for a in RED_DRESS}, "category": c, "colour": colour} for c, colour in looks]
    data = SplitImages(
        pixels=np.zeros((24, 4, 4, 3), np.uint8),
        garment_ids=[f"g{i}" for i in range(12)] * 2,
        attributes=shots * 2,
        texts=[""] * 24,
        is_shot=np.array([True] * 12 + [False] * 12),
    )
    for look in ((), ("category", "colour"), ("colour",)):
        batches = list(siglip_loop.anchor_batches(data, 4, np.random.default_rng(1), look))
        anchors = np.concatenate([b[0::2] for b in batches])
        assert sorted(anchors.tolist()) == list(range(12, 24))
        assert all((b[1::2] == b[0::2] - 12).all() for b in batches)  # each crop's partner: its garment's shot
        shared = [len({tuple(data.attributes[i][a] for a in look or ("category", "colour")) for i in b[0::2]}) == 1
                  for b in batches]  # fmt: skip
        assert all(shared) if look else not all(shared)


def test_hard_negative_runs_keep_look_alikes_together_only_within_a_run() -> None:
    """24 garments in 2 looks: grouped whole, each look's anchors are consecutive; in runs of 2,
    every run shares its look but the looks interleave, and every anchor still comes once."""
    looks = [("dress", "red"), ("coat", "blue")] * 12
    shots = [{**{a: "" for a in RED_DRESS}, "category": c, "colour": colour} for c, colour in looks]
    data = SplitImages(
        pixels=np.zeros((24, 4, 4, 3), np.uint8),
        garment_ids=[f"g{i}" for i in range(24)],
        attributes=shots,
        texts=[""] * 24,
        is_shot=np.ones(24, bool),
    )

    def changes(order: np.ndarray) -> int:  # how often the look changes along the order
        return sum(looks[a] != looks[b] for a, b in zip(order[:-1], order[1:]))

    look = ("category", "colour")
    for seed in range(5):
        whole = siglip_loop.grouped_by_look(np.arange(24), data, np.random.default_rng(seed), look)
        runs = siglip_loop.grouped_by_look(np.arange(24), data, np.random.default_rng(seed), look, run=2)
        assert sorted(runs.tolist()) == list(range(24)) and changes(whole) == 1
        assert all(looks[runs[i]] == looks[runs[i + 1]] for i in range(0, 24, 2))
        assert changes(runs) >= 2


def test_short_training_lowers_the_loss(tmp_path: Path, vocab) -> None:
    folder = build_tiny_siglip(tmp_path / "init", vocabulary_words(vocab), image_size=32, dim=32, layers=1)
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    data = _colour_squares()
    texts = [f"a {a['colour']} solid dress" for a in data.attributes]
    claims = [
        frozenset({("colour", a["colour"]), ("pattern", "solid"), ("category", "dress")}) for a in data.attributes
    ]
    cfg = siglip_loop.TrainSiglipConfig(
        train="-", out=str(tmp_path / "out"), batch_size=8, epochs=40, lr=3e-3, warmup_steps=1, log_every=10
    )
    image_logit = siglip_loop.ImageLogit(cfg.image_loss_weight)

    def fixed_batch_loss() -> float:
        tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        pixels = siglip_loop.normaliser(processor, "cpu")(data.pixels)
        truth = positives(claims, data.attributes)
        same = same_id_positives(data.garment_ids)
        with torch.no_grad():
            return siglip_loop.batch_loss(model, tokens["input_ids"], pixels, truth, same, image_logit).item()

    before = fixed_batch_loss()
    model.eval()
    run = siglip_loop.train(cfg, model, tokenizer, processor, data, lambda i: (texts[i], claims[i]), Path(cfg.out))
    model.eval()
    after = fixed_batch_loss()
    assert run["steps"] == 40  # 4 anchors (the crops) in batches of 4 anchors + 4 partners: 1 step per epoch
    assert after < 0.75 * before, (before, after)
    assert (Path(cfg.out) / "model.safetensors").is_file()


def test_warm_steps_read_shrunk_images_then_the_model_s_own_size(tmp_path: Path, vocab, monkeypatch) -> None:
    words = vocabulary_words(vocab)
    folder = build_tiny_siglip(tmp_path / "init", words, image_size=32, dim=32, layers=1, patch_size=8)
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    data = _colour_squares()
    cfg = siglip_loop.TrainSiglipConfig(train="-", out=str(tmp_path / "out"), batch_size=8, epochs=10,
                                        warmup_steps=1, warm_image_size=16, warm_fraction=0.4)  # fmt: skip
    sizes, batch_loss = [], siglip_loop.batch_loss

    def recorded(model, input_ids, pixels, *args):
        sizes.append(tuple(pixels.shape[-2:]))
        return batch_loss(model, input_ids, pixels, *args)

    monkeypatch.setattr(siglip_loop, "batch_loss", recorded)
    colour = [a["colour"] for a in data.attributes]
    texts = lambda i: (f"a {colour[i]} dress", frozenset({("colour", colour[i])}))  # noqa: E731
    siglip_loop.train(cfg, model, tokenizer, AutoImageProcessor.from_pretrained(folder), data, texts, Path(cfg.out))
    assert sizes == [(16, 16)] * 4 + [(32, 32)] * 6  # 1 step an epoch; warm while under 0.4 of the 10
    assert AutoModel.from_pretrained(cfg.out).config.vision_config.image_size == 32


def test_job_trains_saves_and_reports_hold_out_metrics(sample, tmp_path: Path) -> None:
    split = str(sample.truth_path.parent)
    out = tmp_path / "model"
    overrides = [f"train={split}", f"test={split}", f"out={out}", f"work_dir={tmp_path / 'work'}", "epochs=1",
                 "batch_size=16", "tiny.image_size=32", "tiny.dim=32", "tiny.layers=1"]  # fmt: skip
    train_siglip.main([str(CONF_DIR / "train_siglip.yaml"), *overrides])
    record = json.loads((out / "training.json").read_text())
    truth = pq.read_table(sample.truth_path).to_pylist()
    n_truth = len(truth)
    uncropped = sample.n_garments - len({row["garment_id"] for row in truth})  # anchors too, with the crops
    for key in ("test_start", "test_trained"):
        assert record[key]["counts"] == {"garments": sample.n_garments, "crops": n_truth, "queries": n_truth}
        assert set(record[key]["accuracy_shots"]) == {"colour", "pattern", "category"}
    assert record["training"]["steps"] == math.ceil((n_truth + uncropped) / 8)
    assert yaml.safe_load((out / "config.json").read_text())["vision_config"]["image_size"] == 32


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero() -> None:
    assert learning_rate_factor(0, 0.0, warmup_steps=4) == 0.25
    assert learning_rate_factor(10, 0.5, warmup_steps=4) == pytest.approx(0.5)
    assert learning_rate_factor(10, 1.0, warmup_steps=4) == 0.0
    assert learning_rate_factor(10, 1.7, warmup_steps=4) == 0.0


def test_vocabulary_prompts_claim_each_value_and_only_known_attributes_decide() -> None:
    vocab = {**{attr: ["other"] for attr in ATTRIBUTES}, "colour": ["red", "blue"], "pattern": ["solid"]}
    templates = {**{attr: "{}" for attr in ATTRIBUTES}, "colour": "a {} garment", "pattern": "a {} print"}
    assert vocabulary_prompts(templates, vocab, ["colour"]) == [
        ("a red garment", frozenset({("colour", "red")})),
        ("a blue garment", frozenset({("colour", "blue")})),
    ]
    claims = [c for _, c in vocabulary_prompts(templates, vocab, ["colour", "pattern"])]
    images = [{"colour": "blue", "pattern": ""}, {"colour": "red", "pattern": "solid"}]
    assert decided(claims, images).tolist() == [[True, True, False], [True, True, True]]
    assert positives(claims, images).tolist() == [[False, True, False], [True, False, True]]


def test_sigmoid_loss_sums_only_counted_pairs() -> None:
    logits, positive = torch.tensor([[2.0, -1.0, 5.0]]), torch.tensor([[True, False, False]])
    counted = torch.tensor([[True, True, False]])
    assert sigmoid_loss(logits, positive, counted).item() == pytest.approx(
        sigmoid_loss(logits[:, :2], positive[:, :2]).item()
    )
    assert sigmoid_loss(logits, positive, counted).item() < sigmoid_loss(logits, positive).item()


def test_prompt_weights_scale_the_pairs_of_claims_about_their_attribute_alone() -> None:
    claims = [frozenset({("category", "dress")}), frozenset({("colour", "red")}), frozenset(RED_DRESS.items())]
    weights = siglip_loop.claim_weights(claims, {"category": 4.0})
    assert weights.tolist() == [4.0, 1.0, 1.0]
    logits, positive = torch.tensor([[2.0, -1.0, 5.0]]), torch.tensor([[True, False, False]])
    weighted = sigmoid_loss(logits, positive, torch.from_numpy(weights)[None])
    terms = -torch.nn.functional.logsigmoid(torch.tensor([2.0, 1.0, -5.0]))
    assert weighted.item() == pytest.approx((4 * terms[0] + terms[1] + terms[2]).item())


def test_a_deepened_siglip_embeds_as_before_until_trained(tmp_path: Path, vocab) -> None:
    folder = build_tiny_siglip(tmp_path, vocabulary_words(vocab), image_size=32, dim=32)
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    grown = deepened(model, 4).eval()
    assert len(grown.vision_model.encoder.layers) == len(grown.text_model.encoder.layers) == 4
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tokenizer(["a red dress", "a photo of a coat"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        for embed, inputs in (("get_image_features", {"pixel_values": pixels}), ("get_text_features", tokens)):
            torch.testing.assert_close(getattr(grown, embed)(**inputs), getattr(model, embed)(**inputs))
    with pytest.raises(ValueError, match="cannot grow"):
        deepened(grown, 3)


def test_a_siglip_given_a_larger_input_embeds_as_its_interpolated_position_embeddings_do(tmp_path: Path, vocab) -> None:
    folder = build_tiny_siglip(tmp_path, vocabulary_words(vocab), image_size=32, dim=32)
    model = AutoModel.from_pretrained(folder).eval()
    larger = with_input_size(model, 64).eval()
    assert larger.config.vision_config.image_size == 64
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.get_image_features(pixel_values=pixels, interpolate_pos_encoding=True)
        torch.testing.assert_close(larger.get_image_features(pixel_values=pixels), expected)
    with pytest.raises(ValueError, match="not a multiple"):
        with_input_size(model, 40)
