"""Batch helpers shared by the actors. A batch is a dict of equal-length numpy columns; rows whose
`reason` is non-empty are quarantined and pass through every model stage untouched."""

from __future__ import annotations

import numpy as np

from miner.schemas import REASON

Batch = dict[str, np.ndarray]


def good_rows(batch: Batch) -> np.ndarray:
    """(n,) bool: rows still in play (empty quarantine reason)."""
    return np.asarray(batch[REASON]) == ""


def scatter(mask: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
    """A (len(mask), ...) array with `values` at the True positions of `mask` and `fill` elsewhere."""
    out = np.full((len(mask), *values.shape[1:]), fill, dtype=values.dtype)
    out[mask] = values
    return out


def objects(items: list) -> np.ndarray:
    """A 1-D object array of `items` (keeps arrays of differing shapes apart)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
