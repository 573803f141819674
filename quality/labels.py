"""Which pairs are labelled and which of those are true: from a benchmark split's truth, or from
review decisions (a table the caller reads; quality does not import the review app)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quality import evaluation

REVIEW_COLUMNS = ("garment_id", "crop_id", "verified")  # what a review labels table must hold


@dataclass(frozen=True)
class Judged:
    """Per pairs row, (n,) bool: `labelled` (a judgement exists) and `true` (False where not
    labelled); `source` names where the judgements come from."""

    labelled: np.ndarray
    true: np.ndarray
    source: str

    @property
    def count(self) -> int:
        return int(self.labelled.sum())


def from_truth(garment_ids: pa.Array, image_ids: pa.Array, truth: pa.Table) -> Judged:
    """Every pair with a candidate (non-null image_id) is judged by the truth table
    (evaluation.is_true_pair)."""
    true = evaluation.is_true_pair(garment_ids, image_ids, truth)
    return Judged(image_ids.is_valid().to_numpy(zero_copy_only=False), true, "benchmark truth")


def label_rows(garment_ids: pa.Array, crop_ids: pa.Array, labels: pa.Table) -> np.ndarray:
    """(n,) int64 per pair: the row of `labels` (garment_id, crop_id, verified) with its
    (garment_id, crop_id), the last for a repeated pair; -1 where none has."""
    if missing := set(REVIEW_COLUMNS) - set(labels.column_names):
        raise ValueError(f"review labels lack the columns {sorted(missing)}")
    keys = evaluation.pair_keys(garment_ids, crop_ids)
    found = evaluation.pair_keys(labels["garment_id"].combine_chunks(), labels["crop_id"].combine_chunks())
    last = np.arange(len(found))[::-1]  # index_in finds the first: search reversed
    position = pc.index_in(keys, value_set=found.take(pa.array(last, pa.int64()))).fill_null(-1)
    position = position.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(position >= 0, last[np.maximum(position, 0)] if len(last) else -1, -1)


def from_review(garment_ids: pa.Array, crop_ids: pa.Array, labels: pa.Table) -> Judged:
    """A pair is labelled when `labels` (garment_id, crop_id, verified) has its (garment_id,
    crop_id); true when that row's `verified` is true (the last row wins for a repeated pair)."""
    rows = label_rows(garment_ids, crop_ids, labels)
    labelled = rows >= 0
    verified = labels["verified"].combine_chunks().fill_null(False).to_numpy(zero_copy_only=False)
    true = np.zeros(len(rows), bool)
    true[labelled] = verified[rows[labelled]]
    return Judged(labelled, true, "review")
