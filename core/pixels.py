"""Image pixels in two layouts: host arrays (h, w, 3) uint8, the layout of rows and Parquet, and
torch tensors (3, h, w) uint8, the layout models take on their device."""

from __future__ import annotations

import numpy as np
import torch


def as_tensor(image: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    """The (3, h, w) uint8 tensor on `device` of an (h, w, 3) array (copied first when read-only,
    as Arrow's are) or a (3, h, w) tensor."""
    if isinstance(image, torch.Tensor):
        return image.to(device)
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device).permute(2, 0, 1)


def as_array(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """The (h, w, 3) uint8 host array of a (3, h, w) tensor or an (h, w, 3) array."""
    if isinstance(image, np.ndarray):
        return image
    return image.permute(1, 2, 0).contiguous().cpu().numpy()
