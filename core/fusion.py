"""The sketch+text query vector: one linear projection of the concatenated unit embeddings [vision;
text] (2d) into the embedding space (d), L2-normalised.

The untrained projection is the weighted mean [w I, (1 - w) I]; `jobs.train_fusion` learns one with
InfoNCE against the garments' image embeddings and saves it as safetensors (`projection`, (d, 2d)
float32; `probe`, (d,): its embedder's text embedding of PROBE_TEXT) with the vision weight it
started from in the metadata. A projection only means something for the embedder it was trained
on: `fits` tells another embedder by its embedding of the same probe text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

PROJECTION, PROBE = "projection", "probe"  # the safetensors tensor names
PROBE_TEXT = "a photo of a garment"
MIN_PROBE_COSINE = 0.99  # the same weights on another device or dtype stay above; another model's vector is unrelated


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to length 1, float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Fusion:
    """`projection` (d, 2d) float32: fused = unit(projection @ [vision; text]); `probe` (d,): the
    unit text embedding of PROBE_TEXT by the embedder it was trained on (None: fits any)."""

    projection: np.ndarray
    probe: np.ndarray | None = None

    @classmethod
    def weighted_mean(cls, dim: int, vision_weight: float) -> Fusion:
        eye = np.eye(dim, dtype=np.float32)
        return cls(np.concatenate([vision_weight * eye, (1.0 - vision_weight) * eye], axis=1))

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        tensors = load_file(str(path))
        probe = tensors.get(PROBE)
        return cls(tensors[PROJECTION].astype(np.float32), None if probe is None else probe.astype(np.float32))

    def save(self, path: str | Path, metadata: dict[str, str]) -> None:
        tensors = {PROJECTION: np.ascontiguousarray(self.projection)}
        if self.probe is not None:
            tensors[PROBE] = np.ascontiguousarray(self.probe, dtype=np.float32)
        save_file(tensors, str(path), metadata=metadata)

    def fits(self, probe: np.ndarray) -> bool:
        """Whether `probe`, an embedder's unit text embedding of PROBE_TEXT, comes from the embedder
        this projection was trained on (cosine >= MIN_PROBE_COSINE; True when none was recorded)."""
        return self.probe is None or float(np.dot(self.probe, probe)) >= MIN_PROBE_COSINE

    @property
    def dim(self) -> int:
        return self.projection.shape[0]

    def __call__(self, vision: np.ndarray, text: np.ndarray) -> np.ndarray:
        """(n, d) or (d,) unit vision and text embeddings -> their fused unit vectors, same shape."""
        joined = np.concatenate([np.asarray(vision, np.float32), np.asarray(text, np.float32)], axis=-1)
        return unit(joined @ self.projection.T)
