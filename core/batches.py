"""Batches as the stages pass them: a dict of equal-length numpy columns. Rows whose `reason` is
non-empty are quarantined and pass through every model stage untouched."""

from __future__ import annotations

import numpy as np

from core.schemas import ERROR, REASON, ROW_IDS

Batch = dict[str, np.ndarray]


def good_rows(batch: Batch) -> np.ndarray:
    """(n,) bool: rows still in play (empty quarantine reason)."""
    return np.asarray(batch[REASON]) == ""


def blank(n: int) -> np.ndarray:
    """(n,) object array of empty strings: a batch's `reason` or `error` column with no row quarantined."""
    return np.full(n, "", dtype=object)


def quarantine_columns(batch: Batch, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Writable object-array copies of the batch's `reason` and `error` columns, blank where absent."""
    return tuple(np.array(batch[c], dtype=object) if c in batch else blank(n) for c in (REASON, ERROR))


def row_ids(batch: Batch) -> np.ndarray:
    """The id of each row: its first column among `ROW_IDS` (a crop's id, else its image's)."""
    return np.asarray(batch[next(c for c in ROW_IDS if c in batch)], dtype=object)


def take(batch: Batch, rows: np.ndarray) -> Batch:
    """The rows of `batch` selected by a bool mask or indices."""
    return {k: v[rows] for k, v in batch.items()}


def scatter(mask: np.ndarray, values: np.ndarray, fill) -> np.ndarray:
    """A (len(mask), ...) array with `values` at the True positions of `mask` and `fill` elsewhere."""
    out = np.full((len(mask), *values.shape[1:]), fill, dtype=values.dtype)
    out[mask] = values
    return out


def objects(items: list) -> np.ndarray:
    """A 1-D object array of `items`, each kept as it is (arrays and tensors of any shape). Set one
    by one: a slice assignment lets numpy convert every tensor to an array first (about 0.6 ms a
    224 px crop)."""
    out = np.empty(len(items), dtype=object)
    for k, item in enumerate(items):
        out[k] = item
    return out


def concat(batches: list[Batch]) -> Batch:
    """One batch of the rows of `batches` (same columns), in order."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
