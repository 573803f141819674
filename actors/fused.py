"""The lookbook models fused in one actor: (decode,) detect, embed and describe without leaving the process."""

from __future__ import annotations

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import CropDetector
from actors.embedder import CropEmbedder
from actors.rows import Batch
from miner import metrics
from miner.config import CaptionerConfig, DecodeConfig, DetectorConfig, EmbedderConfig, StorageConfig


class FusedLookbookModels:
    """Ray Data stage: decoded image rows in (manifest rows with `decode`), described crop rows out,
    without the crop pixels; `CropDetector`, then `CropEmbedder`, then `CropDescriber` on the same
    device, the two SigLIP users sharing one model.

    Crops (and with `decode` the decoded images) pass between the steps in this process's memory
    and never reach the object store. With `decode`, `decode_images` runs first and is recorded in
    the job metrics as a step of `stage`, as a separate decode stage is.
    """

    def __init__(
        self,
        detector: DetectorConfig,
        embedder: EmbedderConfig,
        captioner: CaptionerConfig,
        storage: StorageConfig,
        vocab: dict,
        decode: DecodeConfig | None = None,
        stage: str = "",
    ):
        self.decode = metrics.metered(decode_images, stage) if decode else None
        self.decode_kwargs = {"cfg": decode, "storage": storage}
        self.detect = CropDetector(detector, storage)
        self.embed = CropEmbedder(embedder, storage)
        self.describe = CropDescriber(captioner, embedder, storage, vocab, siglip=self.embed.model)

    def __call__(self, batch: Batch) -> Batch:
        if self.decode:
            batch = self.decode(batch, **self.decode_kwargs)
        described = self.describe(self.embed(self.detect(batch)))
        del described["crop"]
        return described
