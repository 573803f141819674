"""SigLIP image and text embeddings (transformers `SiglipModel`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from core.batches import Batch, good_rows, scatter
from core.config import EmbedderConfig
from core.models import load_pretrained, load_weights, resolve, torch_device
from core.pixels import as_tensor
from core.steps import FORWARD, POSTPROCESS, PREPROCESS, StepTimer
from core.storage import StorageConfig


class SiglipModelWrapper:
    """Both SigLIP towers. Outputs are L2-normalised float32 arrays of shape (n, dim); each call's
    processor or tokenizer time is recorded as `preprocess` in `timer`, the model's as `forward`.
    Images are resized and normalised on the model's device (the processor's torchvision backend):
    crops already there (tensors from the detector) never come back to the host."""

    def __init__(self, cfg: EmbedderConfig, storage: StorageConfig, timer: StepTimer | None = None):
        self.timer = timer or StepTimer()
        spec = resolve("embedder", cfg.model, storage)
        self.device = torch_device(cfg.device)
        dtype = getattr(torch, cfg.gpu_dtype) if self.device.startswith("cuda") else torch.float32
        self.model = load_weights("embedder", AutoModel, spec, dtype=dtype).to(self.device).eval()
        self.processor = load_pretrained("embedder", AutoImageProcessor, spec)
        self.tokenizer = load_pretrained("embedder", AutoTokenizer, spec)
        self.dtype = dtype
        self.dim = int(self.model.config.vision_config.hidden_size)
        self.logit_scale = float(self.model.logit_scale.detach().exp())  # image-text cosine to logit

    @torch.inference_mode()
    def embed_images(self, images: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
        """images: RGB uint8, (h, w, 3) arrays or (3, h, w) tensors, of any size."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        with self.timer(PREPROCESS):
            tensors = [as_tensor(i, self.device) for i in images]
            pixels = self.processor(
                images=tensors, return_tensors="pt", device=self.device, input_data_format="channels_first"
            )["pixel_values"]
        with self.timer(FORWARD):
            features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)).pooler_output
            return _normalise(features)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self.timer(PREPROCESS):
            tokens = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        with self.timer(FORWARD):
            features = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device)).pooler_output
            return _normalise(features)


def _normalise(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


class CropEmbedder:
    """Ray Data stage: adds `embedding` (n, dim) float32 unit vectors for the `crop` column
    (zeros on quarantined rows)."""

    def __init__(self, cfg: EmbedderConfig, storage: StorageConfig, timer: StepTimer | None = None):
        self.timer = timer or StepTimer()
        self.model = SiglipModelWrapper(cfg, storage, self.timer)

    def __call__(self, batch: Batch) -> Batch:
        good = good_rows(batch)
        embeddings = self.model.embed_images([c for c, ok in zip(batch["crop"], good) if ok])
        with self.timer(POSTPROCESS):
            batch["embedding"] = scatter(good, embeddings, 0.0)
        return batch
