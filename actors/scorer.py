"""Scoring garments against the sharded crop index: one actor pool per index shard adds that
shard's candidates to each garment, then `best_match` keeps the best of them, with its margin."""

from __future__ import annotations

import numpy as np

from core import index as shard_index
from core.batches import Batch, good_rows, objects
from core.candidates import Candidates
from core.config import IndexConfig, ScoringConfig
from core.payload import Payload
from core.schemas import ERROR, REASON, SHARD
from core.scoring import best_candidate
from core.shard_search import ShardSearch, reranked
from core.steps import FORWARD, POSTPROCESS, StepTimer
from core.storage import StorageConfig, join, local_copy


class IndexShardSearcher:
    """Index shard `shard` of the index under `index_dir`, memory-mapped from local files (copies
    under `cfg.local_cache` when the index is remote): its top-k crops by image cosine, and their
    payload (crop and image ids, image uris, boxes, caption embeddings). A process holds its own copy only of
    the index's quantizer and the payload's ids; the vectors stay in the shared page cache.
    Compressed codes are re-ranked with the image embeddings in the payload (`core.shard_search`)."""

    def __init__(self, index_dir: str, shard: int, cfg: IndexConfig, storage: StorageConfig, k: int):
        manifest = shard_index.load_manifest(index_dir, storage)
        entry = manifest.shards[shard]
        local = local_copy(join(index_dir, entry.index_file), cfg.local_cache, storage)
        index = shard_index.read_mapped(local, entry.sha256, entry.index_file, manifest.index_type)
        self.nprobe = cfg.nprobe or manifest.nprobe or None
        depth = manifest.params.get("rerank_depth", 0)
        self.index = shard_index.to_gpu_if_available(index, cfg.use_gpu, max(k, depth), self.nprobe)
        self.payload = Payload(local_copy(join(index_dir, entry.payload_file), cfg.local_cache, storage))
        self.shard = ShardSearch(self.index, self.payload.vectors if reranked(manifest.index_type) else None, depth)

    def candidates(self, image: np.ndarray, caption: np.ndarray, k: int) -> Candidates:
        """This shard's top-k crops for garments with (b, dim) unit `image` and `caption` embeddings."""
        found = Candidates.none(len(image), k)
        if not len(self.payload) or not len(image):
            return found
        scores, ids = self.shard.search(image, k, self.nprobe)
        rows = self.payload.rows(ids)
        s_vlm = np.einsum("bd,bkd->bk", caption, self.payload.captions(rows), dtype=np.float32)
        return Candidates(
            ids=np.where(rows >= 0, ids, -1),
            s_siglip=np.where(rows >= 0, scores, -np.inf).astype(np.float32),
            s_vlm=np.where(rows >= 0, s_vlm, np.nan).astype(np.float32),
            crop_ids=self.payload.strings(self.payload.crop_id, rows),
            image_ids=self.payload.strings(self.payload.image_id, rows),
            image_uris=self.payload.strings(self.payload.uri, rows),
            boxes=self.payload.boxes(rows),
        )


class ShardCandidates:
    """Ray Data stage of index shard `shard`: garment rows (with `embedding`, `caption_embedding`)
    in, the same rows out with their candidate columns (`core.candidates`) now the top `top_k` of
    the candidates they came with and this shard's. Quarantined rows are not searched."""

    def __init__(self, index_dir: str, shard: int, cfg: ScoringConfig, index_cfg: IndexConfig, storage: StorageConfig):
        self.searcher = IndexShardSearcher(index_dir, shard, index_cfg, storage, cfg.top_k)
        self.k = cfg.top_k
        self.timer = StepTimer()

    def __call__(self, batch: Batch) -> Batch:
        good = good_rows(batch)
        with self.timer(FORWARD):
            found = self.searcher.candidates(batch["embedding"][good], batch["caption_embedding"][good], self.k)
        with self.timer(POSTPROCESS):
            merged = Candidates.of(batch, self.k).merged(found.placed(good), self.k)
            return {**batch, **merged.columns()}


def best_match(batch: Batch, cfg: ScoringConfig) -> Batch:
    """Garment rows with their candidates from every index shard in, one scored row per garment out:
    best crop by S = lambda_vlm * S_VLM + lambda_siglip * S_SigLIP (among the `vlm_prefilter`
    highest by S_VLM when set), its scores, the margin to the runner-up, and the candidates in
    search order (SCORED schema plus the quarantine columns)."""
    found = Candidates.of(batch, cfg.top_k)
    valid = found.ids >= 0
    match = best_candidate(found.s_vlm, found.s_siglip, valid, cfg.lambda_vlm, cfg.lambda_siglip, cfg.vlm_prefilter)
    n_candidates = valid.sum(axis=1).astype(np.int32)  # valid ids are a prefix (topk_order ranks -1 last)
    rows = np.arange(len(valid))
    best = np.maximum(match.index, 0)
    matched = match.index >= 0
    return {
        "garment_id": batch["image_id"],
        "garment_uri": batch["uri"],
        "garment_caption": batch["caption"],
        "image_id": np.where(matched, found.image_ids[rows, best], None),
        "image_uri": np.where(matched, found.image_uris[rows, best], None),
        "crop_id": np.where(matched, found.crop_ids[rows, best], None),
        "box": objects([box if ok else None for box, ok in zip(found.boxes[rows, best], matched)]),
        "s_vlm": match.s_vlm,
        "s_siglip": match.s_siglip,
        "score": match.score,
        "margin": match.margin,
        "n_candidates": n_candidates,
        "candidate_crop_ids": _leading(found.crop_ids, n_candidates),
        "candidate_image_ids": _leading(found.image_ids, n_candidates),
        "candidate_s_vlm": _leading(match.candidate_s_vlm, n_candidates),
        "candidate_s_siglip": _leading(match.candidate_s_siglip, n_candidates),
        REASON: batch[REASON],
        ERROR: batch[ERROR],
        SHARD: batch[SHARD],
    }


def _leading(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(b,) object array: row i's first counts[i] values of the (b, k) `values`, as a list."""
    return objects([row[:n].tolist() for row, n in zip(values, counts)])
