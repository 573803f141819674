"""The lookbook models fused in one actor: (decode,) detect, embed and describe without leaving the process."""

from __future__ import annotations

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import CropDetector
from actors.embedder import CropEmbedder
from core.batches import Batch
from core.config import CaptionerConfig, DecodeConfig, DetectorConfig, EmbedderConfig
from core.steps import DECODE, StepTimer
from core.storage import StorageConfig


class FusedLookbookModels:
    """Ray Data stage: decoded image rows in (manifest rows with `decode`), described crop rows out,
    without the crop pixels; `CropDetector`, then `CropEmbedder`, then `CropDescriber` on the same
    device, the two SigLIP users sharing one model and all of them one `timer`.

    Crops (and with `decode` the decoded images) pass between the steps in this process's memory,
    on the models' device, and never reach the object store. With `decode`, `decode_images` runs
    first, timed as `decode`.
    """

    def __init__(
        self,
        detector: DetectorConfig,
        embedder: EmbedderConfig,
        captioner: CaptionerConfig,
        storage: StorageConfig,
        vocab: dict,
        decode: DecodeConfig | None = None,
    ):
        self.timer = StepTimer()
        self.decode, self.storage = decode, storage
        self.detect = CropDetector(detector, storage, self.timer, on_device=True)
        self.embed = CropEmbedder(embedder, storage, self.timer)
        self.describe = CropDescriber(captioner, embedder, storage, vocab, siglip=self.embed.model, timer=self.timer)

    def __call__(self, batch: Batch) -> Batch:
        if self.decode:
            with self.timer(DECODE):
                batch = decode_images(batch, self.decode, self.storage, on_device=True)
        described = self.describe(self.embed(self.detect(batch)))
        del described["crop"]
        return described
