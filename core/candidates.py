"""A garment's running candidates while it streams through the index shards: the top-k crops by
image cosine seen so far, with what scoring needs of each, merged exactly shard after shard."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from core.batches import Batch, objects
from core.index import topk_order

PREFIX = "shortlist_"  # batch columns: shortlist_ids, shortlist_s_siglip, ...
STRINGS = ("crop_ids", "image_ids", "image_uris")  # the string fields, one list of k per row in a batch


@dataclass(frozen=True)
class Candidates:
    """(b, k) per garment, best first (`core.index.topk_order`): index ids (-1: none), S_SigLIP
    (the search score) and S_VLM cosines, crop ids, image ids and image uris (None: none), and
    boxes (b, k, 4)."""

    ids: np.ndarray
    s_siglip: np.ndarray
    s_vlm: np.ndarray
    crop_ids: np.ndarray
    image_ids: np.ndarray
    image_uris: np.ndarray
    boxes: np.ndarray

    @classmethod
    def none(cls, b: int, k: int) -> Candidates:
        nothing = np.full((b, k), None, object)
        return cls(
            ids=np.full((b, k), -1, np.int64),
            s_siglip=np.full((b, k), -np.inf, np.float32),
            s_vlm=np.full((b, k), np.nan, np.float32),
            crop_ids=nothing,
            image_ids=nothing.copy(),
            image_uris=nothing.copy(),
            boxes=np.full((b, k, 4), np.nan, np.float32),
        )

    @classmethod
    def of(cls, batch: Batch, k: int) -> Candidates:
        """The batch's candidate columns (`columns`), or none yet."""
        if PREFIX + "ids" not in batch:
            return cls.none(len(next(iter(batch.values()))), k)
        values = {f.name: batch[PREFIX + f.name] for f in fields(cls)}
        for name in STRINGS:  # lists of k per row (Arrow list<string>)
            values[name] = np.array([list(row) for row in values[name]], dtype=object).reshape(-1, k)
        return cls(**values)

    def columns(self) -> Batch:
        """Batch columns: numeric (b, k) tensors; strings as one list of k per row."""
        out = {PREFIX + f.name: getattr(self, f.name) for f in fields(self)}
        for name in STRINGS:
            out[PREFIX + name] = objects([row.tolist() for row in getattr(self, name)])
        return out

    def merged(self, other: Candidates, k: int) -> Candidates:
        """The top k of both (same garments), by S_SigLIP descending, ties by lower id."""
        joined = {f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)], axis=1) for f in fields(self)}
        order = topk_order(joined["s_siglip"], joined["ids"], k)
        taken = {
            name: np.take_along_axis(values, order if values.ndim == 2 else order[..., None], axis=1)
            for name, values in joined.items()
        }
        return Candidates(**taken)

    def placed(self, rows: np.ndarray) -> Candidates:
        """These candidates (of the garments in the bool mask `rows`, in order) in a batch of
        len(rows) garments, none for the others."""
        out = Candidates.none(len(rows), self.ids.shape[1])
        for f in fields(self):
            getattr(out, f.name)[rows] = getattr(self, f.name)
        return out
