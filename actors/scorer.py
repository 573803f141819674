"""Scoring garments against the sharded crop index: best lookbook match per garment, with margin."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import index as shard_index
from core.arrow import matrix
from core.batches import Batch, good_rows, objects
from core.config import IndexConfig, ScoringConfig
from core.schemas import ERROR, REASON, SHARD
from core.scoring import best_match
from core.steps import FORWARD, POSTPROCESS, StepTimer
from core.storage import StorageConfig, filesystem, join


class ShardedSearcher:
    """All shards of an index folder, loaded once: exact top-k across shards (`k` at most, which
    with the nprobe decides whether a shard may move to a GPU), and the payload (crop ids, boxes,
    image and caption embeddings) of any global id."""

    def __init__(self, index_dir: str, cfg: IndexConfig, storage: StorageConfig, k: int):
        fs, path = filesystem(join(index_dir, shard_index.MANIFEST), storage)
        with fs.open_input_stream(path) as f:
            self.manifest = shard_index.IndexManifest.from_json(f.read().decode())
        self.shards = []
        payloads = []
        for entry in self.manifest.shards:
            fs, path = filesystem(join(index_dir, entry.index_file), storage)
            with fs.open_input_stream(path) as f:
                data = f.read()
            index = shard_index.deserialize(data, entry.sha256, entry.index_file)
            nprobe = cfg.nprobe or self.manifest.nprobe
            self.shards.append(shard_index.to_gpu_if_available(index, cfg.use_gpu, k, nprobe))
            fs, path = filesystem(join(index_dir, entry.payload_file), storage)
            payloads.append(pq.read_table(path, filesystem=fs))
        payload = pa.concat_tables(payloads) if payloads else None
        self.id_start = np.array([e.id_start for e in self.manifest.shards], np.int64)
        self.offsets = np.cumsum([0] + [e.rows for e in self.manifest.shards])[:-1]
        # Columnar payload, each column ending with a sentinel row (null / NaN / zeros) that row -1,
        # "no candidate", reads: Arrow strings, not Python objects; vectors in their stored dtype
        # (float16 by default), widened only for the rows a batch gathers.
        self.crop_id = _strings_with_sentinel(payload, "crop_id")
        self.image_id = _strings_with_sentinel(payload, "image_id")
        self.box = _vectors_with_sentinel(payload, "box", 4, np.nan)
        self.image = _vectors_with_sentinel(payload, "embedding", self.manifest.dim, 0.0)
        self.caption = _vectors_with_sentinel(payload, "caption_embedding", self.manifest.dim, 0.0)
        self.nprobe = cfg.nprobe

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """(n, k) global ids of the nearest crops by image cosine, -1 where fewer exist."""
        return shard_index.search_shards(self.shards, queries, k, self.nprobe)[1]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Payload row of each global id (shard offset + id - shard id_start); -1 for id -1."""
        shard = np.maximum(np.searchsorted(self.id_start, ids, side="right") - 1, 0)
        return np.where(ids >= 0, self.offsets[shard] + ids - self.id_start[shard], -1) if self.shards else ids

    def strings(self, column: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The values of a string column at payload `rows` (any shape; -1 gives None), as objects."""
        taken = column.take(pa.array(np.where(rows < 0, len(column) - 1, rows).ravel()))
        return taken.to_numpy(zero_copy_only=False).reshape(rows.shape)


def _strings_with_sentinel(payload: pa.Table | None, column: str) -> pa.Array:
    values = payload[column].combine_chunks() if payload is not None else pa.array([], pa.string())
    return pa.concat_arrays([values, pa.nulls(1, pa.string())])


def _vectors_with_sentinel(payload: pa.Table | None, column: str, dim: int, fill: float) -> np.ndarray:
    vectors = matrix(payload[column], widen=False) if payload is not None else np.zeros((0, dim), np.float32)
    return np.concatenate([vectors, np.full((1, dim), fill, vectors.dtype)])


class GarmentScorer:
    """Ray Data stage: garment rows (with `embedding`, `caption_embedding`) in, one scored row per
    garment out: best crop, s_vlm, s_siglip, score, margin, n_candidates and the candidates
    themselves in search order (SCORED schema plus the quarantine columns). Quarantined rows are
    not searched: they come out without a candidate."""

    def __init__(self, index_dir: str, cfg: ScoringConfig, index_cfg: IndexConfig, storage: StorageConfig):
        self.searcher = ShardedSearcher(index_dir, index_cfg, storage, cfg.top_k)
        self.cfg = cfg
        self.timer = StepTimer()

    def __call__(self, batch: Batch) -> Batch:
        good = good_rows(batch)
        ids = np.full((len(good), self.cfg.top_k), -1, np.int64)
        with self.timer(FORWARD):
            if good.any():
                ids[good] = self.searcher.search(batch["embedding"][good], self.cfg.top_k)
        with self.timer(POSTPROCESS):
            return self.scored(batch, ids)

    def scored(self, batch: Batch, ids: np.ndarray) -> Batch:
        """The output rows for garments whose candidates are the global crop ids `ids` (b, top_k)."""
        valid = ids >= 0
        rows = self.searcher.rows(np.where(valid, ids, -1))
        candidates = self.searcher.image[rows].astype(np.float32), self.searcher.caption[rows].astype(np.float32)
        if not self.searcher.shards:  # an empty index (the lookbook gave no crop): no candidate of any width
            candidates = tuple(np.zeros((*rows.shape, batch["embedding"].shape[1]), np.float32) for _ in candidates)
        match = best_match(
            batch["embedding"],
            batch["caption_embedding"],
            *candidates,
            valid,
            self.cfg.lambda_vlm,
            self.cfg.lambda_siglip,
        )
        n_candidates = valid.sum(axis=1).astype(np.int32)  # valid ids are a prefix (search_shards ranks -1 last)
        best = np.where(match.index >= 0, rows[np.arange(len(rows)), np.maximum(match.index, 0)], -1)
        return {
            "garment_id": batch["image_id"],
            "garment_uri": batch["uri"],
            "garment_caption": batch["caption"],
            "image_id": self.searcher.strings(self.searcher.image_id, best),
            "crop_id": self.searcher.strings(self.searcher.crop_id, best),
            "box": objects([box if row >= 0 else None for box, row in zip(self.searcher.box[best], best)]),
            "s_vlm": match.s_vlm,
            "s_siglip": match.s_siglip,
            "score": match.score,
            "margin": match.margin,
            "n_candidates": n_candidates,
            "candidate_crop_ids": _leading(self.searcher.strings(self.searcher.crop_id, rows), n_candidates),
            "candidate_image_ids": _leading(self.searcher.strings(self.searcher.image_id, rows), n_candidates),
            "candidate_s_vlm": _leading(match.candidate_s_vlm, n_candidates),
            "candidate_s_siglip": _leading(match.candidate_s_siglip, n_candidates),
            REASON: batch[REASON],
            ERROR: batch[ERROR],
            SHARD: batch[SHARD],
        }


def _leading(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b,) object array: row i's first counts[i] values of the (b, k) `values`, as a list."""
    return objects([row[:n].tolist() for row, n in zip(values, counts)])
