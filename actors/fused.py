"""The lookbook models fused in one actor: detect, embed and describe without leaving the process."""

from __future__ import annotations

from actors.captioner import CropDescriber
from actors.detector import CropDetector
from actors.embedder import CropEmbedder
from actors.rows import Batch
from miner.config import CaptionerConfig, DetectorConfig, EmbedderConfig, StorageConfig


class FusedLookbookModels:
    """Ray Data stage: decoded image rows in, described crop rows out, without the crop pixels;
    `CropDetector`, then `CropEmbedder`, then `CropDescriber` on the same device, the two SigLIP
    users sharing one model.

    Crops pass between the models in this process's memory and never reach the object store.
    """

    def __init__(
        self,
        detector: DetectorConfig,
        embedder: EmbedderConfig,
        captioner: CaptionerConfig,
        storage: StorageConfig,
        vocab: dict,
    ):
        self.detect = CropDetector(detector, storage)
        self.embed = CropEmbedder(embedder, storage)
        self.describe = CropDescriber(captioner, embedder, storage, vocab, siglip=self.embed.model)

    def __call__(self, batch: Batch) -> Batch:
        described = self.describe(self.embed(self.detect(batch)))
        del described["crop"]
        return described
