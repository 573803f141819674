"""The sketch+text query vector: one linear projection of the concatenated unit embeddings [vision;
text] (2d) into the embedding space (d), L2-normalised.

The untrained projection is the weighted mean [w I, (1 - w) I]; `jobs.train_fusion` learns one with
InfoNCE against the garments' image embeddings and saves it as safetensors (`projection`, (d, 2d)
float32) with the vision weight it started from in the metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

PROJECTION = "projection"  # the safetensors tensor name


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to length 1, float32."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@dataclass(frozen=True)
class Fusion:
    """`projection` (d, 2d) float32: fused = unit(projection @ [vision; text])."""

    projection: np.ndarray

    @classmethod
    def weighted_mean(cls, dim: int, vision_weight: float) -> Fusion:
        eye = np.eye(dim, dtype=np.float32)
        return cls(np.concatenate([vision_weight * eye, (1.0 - vision_weight) * eye], axis=1))

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        return cls(load_file(str(path))[PROJECTION].astype(np.float32))

    def save(self, path: str | Path, metadata: dict[str, str]) -> None:
        save_file({PROJECTION: np.ascontiguousarray(self.projection)}, str(path), metadata=metadata)

    @property
    def dim(self) -> int:
        return self.projection.shape[0]

    def __call__(self, vision: np.ndarray, text: np.ndarray) -> np.ndarray:
        """(n, d) or (d,) unit vision and text embeddings -> their fused unit vectors, same shape."""
        joined = np.concatenate([np.asarray(vision, np.float32), np.asarray(text, np.float32)], axis=-1)
        return unit(joined @ self.projection.T)
