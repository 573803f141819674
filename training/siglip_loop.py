"""Training a SigLIP on a benchmark split: settings, batches of crops and their garment shots, the
loss of one step, the loop with checkpoints, and the hold-out evaluation with the job's own code."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from actors.captioner import ZeroShotTagger
from actors.embedder import SiglipModelWrapper
from core.config import EmbedderConfig, ModelSpec, merged_config
from core.storage import StorageConfig
from core.vocab import vocabulary_words
from training.data import SplitImages, read_rows
from training.siglip import (
    SHORT_CAPTION_ORDER,
    Claim,
    attribute_accuracy,
    decided,
    learning_rate_factor,
    positives,
    recall_at_k,
    same_id_positives,
    sigmoid_loss,
)
from training.tiny_models import SIGLIP_TEXT_LENGTH, build_tiny_siglip

RECALL_KS = (1, 10)


@dataclass
class TinySiglipConfig:
    """A new randomly initialised model (training.tiny_models.build_tiny_siglip), used when `init` is null."""

    image_size: int = 64
    dim: int = 128
    layers: int = 2
    patch_size: int = 16
    text_length: int = SIGLIP_TEXT_LENGTH  # tokens per text (position embeddings, tokenizer padding)
    seed: int = 0


@dataclass
class TrainSiglipConfig:
    train: str = MISSING  # benchmark split folder to train on
    test: str | None = None  # held-out split folder: metrics of the start and the result; null: none
    out: str = MISSING  # output model folder
    init: str | None = None  # Hugging Face id or local folder to start from; null: a new model from `tiny`
    deepen_to: int | None = None  # both towers of the starting model grown to this many layers, the new ones
    # on top starting as the identity (training.tiny_models.deepened); null: as it is
    image_size: int | None = None  # the starting model's input size changed to this (px; its position
    # embeddings resized, training.tiny_models.with_input_size); null: as it is
    tiny: TinySiglipConfig = field(default_factory=TinySiglipConfig)
    warm_image_size: int | None = None  # progressive resizing: until `warm_fraction` of the training
    # (steps or time, as the learning rate), images are shrunk to this (px, antialiased) and the model
    # reads them through its position embeddings resized on the fly (SigLIP's interpolate_pos_encoding),
    # a quarter of the patches at half the side; null: every step at the model's own size
    warm_fraction: float = 0.5
    work_dir: str = "data/train"  # where the new model's random initialisation is written (`siglip-init`)
    vocab: str = "conf/vocab.yaml"
    captioner_conf: str = "conf/mine.yaml"  # captioner.prompts and caption_template: the texts trained on
    device: str = "cpu"
    bf16_autocast: bool = True  # on cuda
    threads: int | None = None  # torch CPU threads; null: torch's default
    batch_size: int = 128  # images (and texts) per step; half are crops, half their garments' shots
    epochs: int = 5  # an epoch visits every crop and every garment without crops once as an anchor
    max_minutes: float | None = None  # time budget: the learning rate decays to 0 by this or the last epoch, if sooner
    checkpoint_minutes: float = 5.0  # save to `out` at the end of the first epoch this long after the last save
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    image_loss_weight: float = 1.0  # weight of the crop <-> own-garment-shot sigmoid loss; 0: image-text only
    hard_negatives: bool = False  # every other epoch, batches of garments that share the attributes of
    # one of `hard_negative_looks` (`grouped_by_look`): hard negatives for the crop <-> garment-shot loss
    hard_negative_looks: list[list[str]] = field(default_factory=lambda: [["category", "colour"]])  # the
    # attributes a hard epoch's batches share, taken in turn: ["colour", "pattern"] makes shape tell them apart
    hard_negative_run: int = 0  # > 0: a hard epoch's look-alikes come in runs of this many anchors, the runs
    # shuffled, so a batch of batch_size / 2 anchors mixes that many / run looks; 0: each look's anchors all together
    vocabulary_prompts: bool = True  # each step also pairs every image with every zero-shot prompt of the
    # attributes the train split knows (all vocabulary values: absent ones become negatives)
    prompt_weights: dict[str, float] = field(default_factory=dict)  # attribute -> weight in the loss of the
    # image pairs with texts that claim only that attribute (its zero-shot prompts); others: 1
    box_padding: float = 0.05  # as detector.box_padding in conf/mine.yaml
    sketches: bool = False  # every garment's edge-map sketch (core.sketches) is also a view of it, knowing only its
    # category: the vision tower learns sketch queries (quality.search) alongside photos
    max_train_scenes: int | None = None
    max_eval_scenes: int | None = 1000
    log_every: int = 25
    seed: int = 0


def load_config(args: list[str]) -> TrainSiglipConfig:
    return merged_config(TrainSiglipConfig, args)


def starting_folder(cfg: TrainSiglipConfig, vocab: dict[str, list[str]]) -> str:
    """`cfg.init`, or a new random model whose tokenizer knows the vocabulary and the train texts' words."""
    if cfg.init:
        return cfg.init
    texts = [row["text"] or "" for row in read_rows(cfg.train, "garments")]
    words = [*vocabulary_words(vocab), *(w for t in texts for w in t.split())]
    t = cfg.tiny
    folder = Path(cfg.work_dir) / "siglip-init"
    return str(build_tiny_siglip(folder, words, t.seed, t.image_size, t.dim, t.layers, t.patch_size, t.text_length))


def resizer(processor):
    """PIL images -> (n, s, s, 3) uint8 resized as the processor resizes, not yet rescaled or normalised."""

    def resize(images):
        pixels = processor(images=images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        return pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return resize


def normaliser(processor, device: str):
    """(n, s, s, 3) uint8 -> (n, 3, s, s) float32 pixel values as the processor makes them."""
    mean = torch.tensor(processor.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, device=device).view(1, 3, 1, 1)

    def normalise(pixels: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float() * processor.rescale_factor
        return (x - mean) / std

    return normalise


def grouped_by_look(
    order: np.ndarray, data: SplitImages, rng: np.random.Generator, look: Sequence[str], run: int = 0
) -> np.ndarray:
    """`order` regrouped by the values of the attributes `look`, the groups in random order, each
    keeping its order within: consecutive anchors then look alike, so a batch's other garments are
    hard negatives for the crop <-> garment-shot loss (a batch straddling two groups mixes them).
    `run` > 0: each group is cut into runs of `run` anchors (its last one shorter) and the runs of
    every group are shuffled together, so look-alikes stay consecutive only within a run."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i in order:
        groups.setdefault(tuple(data.attributes[i][a] for a in look), []).append(int(i))
    runs = (
        [g[s : s + run] for g in groups.values() for s in range(0, len(g), run)] if run > 0 else list(groups.values())
    )
    return np.array([i for k in rng.permutation(len(runs)) for i in runs[k]], dtype=np.int64)


def anchor_batches(data: SplitImages, half: int, rng: np.random.Generator, look: Sequence[str] = (), run: int = 0):
    """Batches of image rows: up to `half` anchors (every crop, every shot of a garment without
    crops, shuffled; with a `look`, `grouped_by_look` by its attributes in runs of `run`), each followed by its
    partner: a crop's own garment shot, else a random shot."""
    shot_of = {g: i for i, g in enumerate(data.garment_ids) if data.is_shot[i]}
    cropped = {g for g, shot in zip(data.garment_ids, data.is_shot) if not shot}
    anchors = [i for i, g in enumerate(data.garment_ids) if not data.is_shot[i] or g not in cropped]
    shots = np.flatnonzero(data.is_shot)
    order = rng.permutation(anchors)
    if look:
        order = grouped_by_look(order, data, rng, look, run)
    for start in range(0, len(order), half):
        rows = []
        for i in order[start : start + half]:
            partner = shot_of.get(data.garment_ids[i]) if not data.is_shot[i] else None
            rows += [int(i), int(partner) if partner is not None else int(rng.choice(shots))]
        yield np.array(rows)


def claim_weights(claims: Sequence[Claim], weights: Mapping[str, float]) -> np.ndarray:
    """(m,) float: `weights[a]` for a claim about attribute `a` alone, 1 for any other claim."""
    return np.array([weights.get(next(iter(c))[0], 1.0) if len(c) == 1 else 1.0 for c in claims])


class ImageLogit(torch.nn.Module):
    """Scale and bias of image-image cosine logits (SigLIP's initial values), trained, not saved;
    `weight` is the image-image loss's share of the total (0: image-text loss only)."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight
        self.scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = torch.nn.Parameter(torch.tensor(-10.0))


def batch_loss(
    model,
    input_ids: torch.Tensor,
    pixels: torch.Tensor,
    truth: np.ndarray,
    same: np.ndarray,
    image: ImageLogit,
    counted: np.ndarray | None = None,
) -> torch.Tensor:
    """Sigmoid loss of n images against m texts (`truth` (n, m) bool: text j is true of image i; each
    pair weighted by `counted` (n, m), 0 leaving it out; None: all pairs, weight 1) plus
    `image.weight` x the sigmoid loss of the images among themselves (`same` (n, n) bool: same
    garment), leaving out each image paired with itself. `pixels` of another size than the model's
    are read through its position embeddings resized to their patch grid."""
    resized = pixels.shape[-1] != model.config.vision_config.image_size
    output = model(input_ids=input_ids, pixel_values=pixels, interpolate_pos_encoding=resized)
    device = output.logits_per_image.device
    mask = None if counted is None else torch.from_numpy(counted).to(device)
    loss = sigmoid_loss(output.logits_per_image.float(), torch.from_numpy(truth).to(device), mask)
    if image.weight:
        embeds = output.image_embeds.float()
        n = len(embeds)
        others = ~torch.eye(n, dtype=torch.bool, device=device)
        logits = (embeds @ embeds.T * image.scale.exp() + image.bias)[others].view(n, n - 1)
        loss = loss + image.weight * sigmoid_loss(logits, torch.from_numpy(same).to(device)[others].view(n, n - 1))
    return loss


def train(
    cfg: TrainSiglipConfig,
    model,
    tokenizer,
    processor,
    data: SplitImages,
    texts_for,
    out: Path,
    prompts: Sequence[tuple[str, Claim]] = (),
) -> dict:
    """Train `model` in place (cosine learning rate over the epochs or `max_minutes`, whichever ends
    first; with `warm_image_size`, the first `warm_fraction` of that on images shrunk to it); save it
    to `out` at the end and, every `checkpoint_minutes`, at the end of an epoch. Each step pairs its
    images with one text each (`texts_for(row) -> (text, claim)`) and with every one of `prompts`,
    counting only the pairs the images' known attributes decide. Returns step count, time and losses."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = cfg.device
    model.to(device).train()
    image_logit = ImageLogit(cfg.image_loss_weight).to(device)
    params = [*model.parameters(), *image_logit.parameters()]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    half = cfg.batch_size // 2
    steps_per_epoch = sum(1 for _ in anchor_batches(data, half, np.random.default_rng(0)))
    total = steps_per_epoch * cfg.epochs
    normalise = normaliser(processor, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16_autocast and device.startswith("cuda"))
    start, step, losses, progress = time.monotonic(), 0, [], 0.0
    saved = start
    for epoch in range(cfg.epochs):
        hard = cfg.hard_negatives and epoch % 2 == 1  # every other epoch: text positives stay varied
        looks = cfg.hard_negative_looks
        look = looks[(epoch // 2) % len(looks)] if hard else ()
        for rows in anchor_batches(data, half, rng, look, cfg.hard_negative_run):
            pixels = data.pixels[rows]
            flip = rng.random(len(rows)) < 0.5
            pixels[flip] = pixels[flip, :, ::-1]
            picked = [*(texts_for(int(i)) for i in rows), *prompts]
            tokens = tokenizer([t for t, _ in picked], padding="max_length", truncation=True, return_tensors="pt")
            claims, attributes = [c for _, c in picked], [data.attributes[i] for i in rows]
            truth = positives(claims, attributes)
            counted = decided(claims, attributes) * claim_weights(claims, cfg.prompt_weights)
            same = same_id_positives([data.garment_ids[i] for i in rows])
            x = normalise(pixels)
            if cfg.warm_image_size and progress < cfg.warm_fraction:
                x = torch.nn.functional.interpolate(x, size=cfg.warm_image_size, mode="bilinear", antialias=True)
            with autocast:
                ids = tokens["input_ids"].to(device)
                loss = batch_loss(model, ids, x, truth, same, image_logit, counted)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimiser.param_groups:
                group["lr"] = cfg.lr * learning_rate_factor(step, progress, cfg.warmup_steps)
            optimiser.step()
            step += 1
            losses.append(loss.item())
            minutes = (time.monotonic() - start) / 60
            progress = max(step / total, minutes / cfg.max_minutes if cfg.max_minutes else 0.0)
            if step % cfg.log_every == 0 or step == 1:
                print(
                    f"epoch {epoch} step {step}/{total} loss {np.mean(losses[-cfg.log_every :]):.4f} {minutes:.1f} min"
                )
            if progress >= 1:
                break
        if progress >= 1:
            break
        if time.monotonic() - saved >= cfg.checkpoint_minutes * 60:
            save(model, tokenizer, processor, out)
            saved = time.monotonic()
    save(model, tokenizer, processor, out)
    return {"steps": step, "planned_steps": total, "minutes": round((time.monotonic() - start) / 60, 2),
            "first_loss": losses[0], "last_loss": float(np.mean(losses[-cfg.log_every :]))}  # fmt: skip


def save(model, tokenizer, processor, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def evaluate(spec: str, data: SplitImages, vocab: dict, templates: dict, device: str) -> dict:
    """Zero-shot accuracy (category, colour, pattern) of shots and crops, and crop -> garment-shot
    recall@k over the split's garments, with the job's own embedding and tagging code."""
    siglip = SiglipModelWrapper(EmbedderConfig(model=ModelSpec(spec=spec), device=device), StorageConfig())
    embeddings = np.concatenate(
        [siglip.embed_images(list(data.pixels[i : i + 256])) for i in range(0, len(data.pixels), 256)]
    )
    predicted = ZeroShotTagger(siglip, vocab, templates)(embeddings)
    metrics = {}
    for name, rows in (("shots", np.flatnonzero(data.is_shot)), ("crops", np.flatnonzero(~data.is_shot))):
        accuracy = attribute_accuracy(
            [predicted[i] for i in rows], [data.attributes[i] for i in rows], SHORT_CAPTION_ORDER
        )
        metrics[f"accuracy_{name}"] = {attr: round(acc, 4) for attr, (acc, _) in accuracy.items()}
    shots = np.flatnonzero(data.is_shot)
    gallery = {data.garment_ids[i]: k for k, i in enumerate(shots)}
    queries = [i for i in np.flatnonzero(~data.is_shot) if data.garment_ids[i] in gallery]
    targets = np.array([gallery[data.garment_ids[i]] for i in queries], dtype=np.int64)
    recall = recall_at_k(embeddings[queries], embeddings[shots], targets, RECALL_KS)
    metrics["crop_to_garment_recall"] = {f"@{k}": round(v, 4) for k, v in recall.items()}
    metrics["counts"] = {"garments": len(shots), "crops": int((~data.is_shot).sum()), "queries": len(queries)}
    return metrics
