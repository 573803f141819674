"""Crop descriptions: a caption, structured attributes from the vocabulary, and the caption's
SigLIP text embedding (the input of S_VLM).

Two captioners, chosen by `captioner.kind`:
- `siglip_zeroshot`: each attribute is the vocabulary value whose prompt scores highest against
  the crop's SigLIP image embedding; the caption is `caption_template` filled with them.
- `generative`: an image-to-text model (BLIP, Florence, ...) writes the caption; attributes are the
  vocabulary values it names (`unknown` otherwise).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from actors.embedder import SiglipModelWrapper
from core.batches import Batch, good_rows, objects, scatter
from core.config import CaptionerConfig, EmbedderConfig
from core.models import load_pretrained, load_weights, resolve, torch_device
from core.pixels import as_array
from core.schemas import OCCASION_CONFIDENCE
from core.steps import FORWARD, POSTPROCESS, PREPROCESS, StepTimer
from core.storage import StorageConfig
from core.vocab import ATTRIBUTES, OCCASION, UNKNOWN, attributes_from_text, caption, prompts


class ZeroShotTagger:
    """Attributes by SigLIP zero-shot classification over the vocabulary prompts."""

    def __init__(self, siglip: SiglipModelWrapper, vocab: dict[str, list[str]], templates: dict[str, str]):
        self.vocab = vocab
        self.prompt_embeddings = {attr: siglip.embed_texts(p) for attr, p in prompts(vocab, templates).items()}
        self.logit_scale = siglip.logit_scale

    def __call__(self, image_embeddings: np.ndarray) -> list[dict[str, str]]:
        """image_embeddings: (n, dim) unit vectors -> n attribute dicts."""
        best = {attr: (image_embeddings @ e.T).argmax(axis=1) for attr, e in self.prompt_embeddings.items()}
        return [{attr: self.vocab[attr][best[attr][i]] for attr in ATTRIBUTES} for i in range(len(image_embeddings))]

    def confidence(self, image_embeddings: np.ndarray, attr: str) -> np.ndarray:
        """(n,) float32: the probability of each image's `attr` value among that attribute's values,
        a softmax over the prompt cosines times SigLIP's logit scale (CLIP-style zero-shot)."""
        logits = self.logit_scale * (image_embeddings @ self.prompt_embeddings[attr].T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        return (probabilities.max(axis=1) / probabilities.sum(axis=1)).astype(np.float32)


class GenerativeCaptioner:
    """Free-text captions from an image-to-text model loaded with transformers' Auto classes."""

    def __init__(self, cfg: CaptionerConfig, storage: StorageConfig, timer: StepTimer):
        self.timer = timer
        spec = resolve("captioner", cfg.model, storage)
        self.device = torch_device(cfg.device)
        dtype = getattr(torch, cfg.gpu_dtype) if self.device.startswith("cuda") else torch.float32
        self.processor = load_pretrained("captioner", AutoProcessor, spec)
        self.model = load_weights("captioner", AutoModelForImageTextToText, spec, dtype=dtype)
        self.model = self.model.to(self.device).eval()
        self.dtype = dtype
        self.prompt = cfg.generate_prompt
        self.max_new_tokens = cfg.max_new_tokens

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray | torch.Tensor]) -> list[str]:
        with self.timer(PREPROCESS):
            inputs = self.processor(
                images=[Image.fromarray(as_array(i)) for i in images],
                text=[self.prompt] * len(images),
                return_tensors="pt",
            ).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with self.timer(FORWARD):
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        with self.timer(POSTPROCESS):
            return [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]


class CropDescriber:
    """Ray Data stage: adds `caption`, one column per attribute, `occasion_confidence` and
    `caption_embedding` (n, dim). `occasion_confidence` is the zero-shot probability of the occasion
    (`ZeroShotTagger.confidence`), or with a generative captioner 1 where the caption names one, else 0.

    Needs the `embedding` column (zero-shot tagging reads it). A row with a non-empty `text`
    column (a garment's catalogue text) uses that text as its caption when
    `use_manifest_text` is set; its attributes still come from the image. `siglip`: an already
    loaded model to share (else one is loaded from `embedder`); `timer`: one to share with it.
    """

    def __init__(
        self,
        cfg: CaptionerConfig,
        embedder: EmbedderConfig,
        storage: StorageConfig,
        vocab: dict,
        siglip: SiglipModelWrapper | None = None,
        timer: StepTimer | None = None,
    ):
        self.cfg = cfg
        self.vocab = vocab
        self.timer = timer or StepTimer()
        self.siglip = siglip or SiglipModelWrapper(embedder, storage, self.timer)
        self.tagger = ZeroShotTagger(self.siglip, vocab, cfg.prompts)
        self.timer.take()  # the prompt embeddings are set-up work, not a batch's
        self.generator = GenerativeCaptioner(cfg, storage, self.timer) if cfg.kind == "generative" else None

    def __call__(self, batch: Batch) -> Batch:
        good = good_rows(batch)
        if self.generator is not None:
            captions = self.generator([c for c, ok in zip(batch["crop"], good) if ok])
            with self.timer(POSTPROCESS):
                attributes = [attributes_from_text(c, self.vocab) for c in captions]
            occasion_confidence = np.array([a[OCCASION] != UNKNOWN for a in attributes], np.float32)
        else:
            with self.timer(FORWARD):
                attributes = self.tagger(batch["embedding"][good])
                occasion_confidence = self.tagger.confidence(batch["embedding"][good], OCCASION)
            with self.timer(POSTPROCESS):
                captions = [caption(self.cfg.caption_template, a) for a in attributes]
        if self.cfg.use_manifest_text and "text" in batch:
            texts = [t for t, ok in zip(batch["text"], good) if ok]
            captions = [t if isinstance(t, str) and t.strip() else c for t, c in zip(texts, captions)]
        caption_embeddings = self.siglip.embed_texts(captions)
        with self.timer(POSTPROCESS):
            batch["caption"] = scatter(good, objects(captions), "")
            for attr in ATTRIBUTES:
                batch[attr] = scatter(good, objects([a[attr] for a in attributes]), UNKNOWN)
            batch[OCCASION_CONFIDENCE] = scatter(good, occasion_confidence, 0.0)
            batch["caption_embedding"] = scatter(good, caption_embeddings, 0.0)
        return batch
