"""Searching one index shard: the index's own top-k for exact codes; for compressed codes
(`reranked`) the top `depth` by the codes, re-scored exactly against the stored vectors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import faiss
import numpy as np

from core import index as shard_index

RERANK_QUERIES = 64  # queries re-scored at once: 64 x depth 256 x dim 768 float32 is 50 MiB

# (b, n) index ids -> (b, n, dim) float32 stored vectors, zeros for id -1
Vectors = Callable[[np.ndarray], np.ndarray]


def reranked(factory: str) -> bool:
    """Whether `factory` stores lossy codes (product quantization), so that searches re-rank
    their top candidates against the stored vectors."""
    return re.search(r"(?:^|,)PQ\d", factory) is not None


class ShardSearch:
    """Top-k by inner product over one shard's `index`; when `vectors` is given (compressed
    codes), the index's top `depth` re-scored exactly with `vectors` and the best k kept."""

    def __init__(self, index: faiss.Index, vectors: Vectors | None = None, depth: int = 0):
        self.index, self.vectors, self.depth = index, vectors, depth

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (n, k), ranked by score then lower id; id -1 (score -inf) where the
        shard has fewer than k vectors."""
        if self.vectors is None:
            return shard_index.search(self.index, queries, k, nprobe)
        _, ids = shard_index.search(self.index, queries, max(k, self.depth), nprobe)
        parts = [
            _rescore(queries[start : start + RERANK_QUERIES], ids[start : start + RERANK_QUERIES], self.vectors, k)
            for start in range(0, len(queries), RERANK_QUERIES)
        ]
        if not parts:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate([s for s, _ in parts]), np.concatenate([i for _, i in parts])


def _rescore(queries: np.ndarray, ids: np.ndarray, vectors: Vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.einsum("bd,bnd->bn", queries.astype(np.float32), vectors(ids), dtype=np.float32)
    return shard_index.merge_topk([scores], [ids], k)


def exact_topk(
    queries: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over `blocks` of (vectors (n, dim), their ids (n,)), widened
    to float32 a block at a time; ranked by score then lower id (among ties at a block's k-th
    score, which enter the ranking is arbitrary)."""
    queries = np.asarray(queries, np.float32)
    best = (np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64))
    for vectors, ids in blocks:
        scores = queries @ np.asarray(vectors, np.float32).T
        ids = np.broadcast_to(np.asarray(ids, np.int64), scores.shape)
        if scores.shape[1] > k:
            top = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
            scores, ids = np.take_along_axis(scores, top, axis=1), np.take_along_axis(ids, top, axis=1)
        best = shard_index.merge_topk([best[0], scores], [best[1], ids], k)
    return best


def array_vectors(vectors: np.ndarray) -> Vectors:
    """`Vectors` over an in-memory (n, dim) array whose row i has id i."""

    def take(ids: np.ndarray) -> np.ndarray:
        out = vectors[np.maximum(ids, 0)].astype(np.float32)
        out[ids < 0] = 0.0
        return out

    return take
