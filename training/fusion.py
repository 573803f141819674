"""Training the sketch+text fusion (`core.fusion`) of a frozen SigLIP: the embeddings of each
garment's edge-map sketch, caption and product shot are computed once, then one linear projection
of [sketch; caption] is fitted with InfoNCE against the shot, starting from the weighted mean.
Held-out recall of each query kind (image, sketch, text, sketch+text) against a split's scene crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import MISSING

from actors.embedder import SiglipModelWrapper
from core.config import SketchConfig, merged_config
from core.fusion import Fusion, unit
from core.sketches import edge_map, garment_sketch
from training.data import SplitImages, read_rows, rgb
from training.siglip import SHORT_CAPTION_ORDER, recall_any_at_k, short_caption

RECALL_KS = (1, 10)


@dataclass
class TrainFusionConfig:
    train: str = MISSING  # benchmark split folder whose garments are trained on
    test: str = MISSING  # held-out split folder: its garments query its scene crops
    embedder: str = MISSING  # the SigLIP (spec: folder, Hugging Face id, s3://) the fusion is for
    out: str = MISSING  # output folder: fusion.safetensors and training.json
    sketches: SketchConfig = field(default_factory=SketchConfig)  # as jobs.make_sketches draws them
    vision_weight: float = 0.5  # the weighted mean the projection starts from (and is compared with)
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    temperature: float = 0.05  # InfoNCE logits are cosines / temperature
    validation_share: float = 0.1  # train garments held back to choose the epoch by their recall@1
    box_padding: float = 0.05  # as detector.box_padding in conf/mine.yaml
    max_eval_scenes: int | None = None  # test scenes whose crops form the gallery; null: all
    device: str = "cpu"
    seed: int = 0


def load_config(args: list[str]) -> TrainFusionConfig:
    return merged_config(TrainFusionConfig, args)


@dataclass
class GarmentViews:
    """n garments of one split, embedded (unit (n, d) float32 rows). `plain_sketches`: the sketches
    drawn without equalisation (the same as `sketches` where a garment is not light)."""

    garment_ids: list[str]
    shots: np.ndarray
    sketches: np.ndarray
    plain_sketches: np.ndarray
    captions: np.ndarray
    light: np.ndarray  # (n,) bool: its sketch was equalised (core.sketches.is_light)


def embed_garments(folder: str, siglip: SiglipModelWrapper, cfg: SketchConfig, chunk: int = 128) -> GarmentViews:
    """Every garment of the split: its shot, its sketch (equalised when light, as jobs.make_sketches
    draws it) and without equalisation, and its short caption ("a red striped dress")."""
    ids, light, shots, sketches, plain, captions = [], [], [], [], [], []
    rows = read_rows(folder, "garments")
    for start in range(0, len(rows), chunk):
        pixels, drawn, undrawn = [], [], []
        for row in rows[start : start + chunk]:
            shot = np.asarray(rgb(row["uri"]))
            lines, equalise = garment_sketch(shot, row.get("text"), row.get("colour"), cfg)
            unequalised = edge_map(shot, False, cfg) if equalise else lines
            pixels.append(shot)
            drawn.append(np.repeat(lines[..., None], 3, axis=-1))
            undrawn.append(np.repeat(unequalised[..., None], 3, axis=-1))
            ids.append(row["garment_id"])
            light.append(equalise)
            captions.append(short_caption({a: row.get(a) or "" for a in SHORT_CAPTION_ORDER}))
        shots.append(siglip.embed_images(pixels))
        sketches.append(siglip.embed_images(drawn))
        plain.append(siglip.embed_images(undrawn))
    return GarmentViews(
        garment_ids=ids,
        shots=np.concatenate(shots),
        sketches=np.concatenate(sketches),
        plain_sketches=np.concatenate(plain),
        captions=siglip.embed_texts(captions),
        light=np.array(light, bool),
    )


def info_nce(fused: torch.Tensor, images: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows: row i of `fused` against every row of `images` and back;
    both unit (b, d)."""
    logits = fused @ images.T / temperature
    labels = torch.arange(len(fused), device=fused.device)
    return 0.5 * (
        torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)
    )


def shot_recall(fusion: Fusion, views: GarmentViews, rows: np.ndarray, k: int) -> float:
    """Recall@k of the fused sketch+caption of `rows` against those garments' shots."""
    queries = fusion(views.sketches[rows], views.captions[rows])
    return recall_any_at_k(queries, views.shots[rows], np.eye(len(rows), dtype=bool), (k,))[k]


def train_fusion(views: GarmentViews, cfg: TrainFusionConfig) -> tuple[Fusion, dict]:
    """The projection fitted on `views` less a validation share, from the weighted mean, by AdamW
    on InfoNCE; the epoch kept is the one with the best validation recall@1 (fused sketch+caption
    -> shot, among the validation garments' shots; epoch 0: the weighted mean itself). Returns it
    and the training record."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    order = rng.permutation(len(views.garment_ids))
    held = max(1, int(len(order) * cfg.validation_share))
    validation, fitted = order[:held], order[held:]
    start = Fusion.weighted_mean(views.shots.shape[1], cfg.vision_weight)
    projection = torch.nn.Parameter(torch.from_numpy(start.projection.copy()).to(cfg.device))
    optimiser = torch.optim.AdamW([projection], lr=cfg.lr, weight_decay=0.0)
    tensors = {
        name: torch.from_numpy(getattr(views, name)).to(cfg.device) for name in ("sketches", "captions", "shots")
    }
    start_recall = shot_recall(start, views, validation, 1)
    best, best_recall, best_epoch, history = start, start_recall, 0, []
    for epoch in range(1, cfg.epochs + 1):
        losses = []
        for batch in np.array_split(rng.permutation(fitted), max(1, len(fitted) // cfg.batch_size)):
            rows = torch.from_numpy(batch).to(cfg.device)
            joined = torch.cat([tensors["sketches"][rows], tensors["captions"][rows]], dim=1)
            fused = torch.nn.functional.normalize(joined @ projection.T, dim=1)
            loss = info_nce(fused, tensors["shots"][rows], cfg.temperature)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        current = Fusion(projection.detach().cpu().numpy().copy())
        recall = shot_recall(current, views, validation, 1)
        history.append(
            {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "validation_recall@1": round(recall, 4)}
        )
        if recall > best_recall:
            best, best_recall, best_epoch = current, recall, epoch
    record = {
        "garments": {"fitted": len(fitted), "validation": held},
        "kept_epoch": best_epoch,
        "validation_recall@1": {"start": round(start_recall, 4), "kept": round(best_recall, 4)},
        "history": history,
    }
    return best, record


@dataclass
class Gallery:
    """A split's scene crops (truth boxes, padded as the detector crops), embedded: unit (g, d) rows
    and the garment each shows ("" for a distractor)."""

    embeddings: np.ndarray
    garment_ids: np.ndarray


def crop_gallery(data: SplitImages, siglip: SiglipModelWrapper, chunk: int = 256) -> Gallery:
    rows = np.flatnonzero(~data.is_shot)
    embeddings = [siglip.embed_images(list(data.pixels[rows[i : i + chunk]])) for i in range(0, len(rows), chunk)]
    return Gallery(np.concatenate(embeddings), np.asarray(data.garment_ids, dtype=object)[rows])


def query_recalls(
    views: GarmentViews, gallery: Gallery, fusions: dict[str, Fusion], rows: np.ndarray | None = None
) -> dict[str, dict]:
    """Recall@1 and @10 of each query kind over the garments `rows` (None: all) that appear in the
    gallery: a hit is any crop of the garment among the first k. Kinds: image (the shot), sketch,
    text (the caption), `sketch+text <name>` for each fusion, and for light garments the sketch
    kinds again drawn without equalisation (`... unequalised`). Each: hits per k and queries."""
    rows = np.arange(len(views.garment_ids)) if rows is None else rows
    ids = np.asarray(views.garment_ids, dtype=object)[rows]
    present = np.isin(ids, gallery.garment_ids)
    rows, ids = rows[present], ids[present]
    positive = ids[:, None] == gallery.garment_ids[None, :]
    kinds = {"image": views.shots[rows], "sketch": views.sketches[rows], "text": views.captions[rows]}
    for name, fusion in fusions.items():
        kinds[f"sketch+text {name}"] = fusion(views.sketches[rows], views.captions[rows])
    light = views.light[rows]
    if light.any():
        plain = views.plain_sketches[rows][light]
        kinds["sketch unequalised (light)"] = plain
        kinds["sketch (light)"] = views.sketches[rows][light]
        for name, fusion in fusions.items():
            kinds[f"sketch+text {name} unequalised (light)"] = fusion(plain, views.captions[rows][light])
            kinds[f"sketch+text {name} (light)"] = fusion(views.sketches[rows][light], views.captions[rows][light])
    out = {}
    for kind, queries in kinds.items():
        mask = positive[light] if "(light)" in kind else positive
        recall = recall_any_at_k(unit(queries), gallery.embeddings, mask, RECALL_KS)
        out[kind] = {"queries": len(queries), **{f"hits@{k}": round(r * len(queries)) for k, r in recall.items()}}
    return out
