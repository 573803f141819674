"""Garment-to-crop scoring: S = lambda_vlm * S_VLM + lambda_siglip * S_SigLIP, best match and margin."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_CANDIDATE = -1


@dataclass(frozen=True)
class BestMatch:
    """Per garment (shape (b,)): index of the best candidate (NO_CANDIDATE when none), its scores,
    and `margin` = best score minus runner-up score (NaN with fewer than two candidates);
    `candidate_s_vlm` / `candidate_s_siglip`: (b, k) float32 cosines of every candidate (invalid
    ones included, as computed)."""

    index: np.ndarray
    s_vlm: np.ndarray
    s_siglip: np.ndarray
    score: np.ndarray
    margin: np.ndarray
    candidate_s_vlm: np.ndarray
    candidate_s_siglip: np.ndarray


def best_match(
    garment_image: np.ndarray,
    garment_caption: np.ndarray,
    candidate_image: np.ndarray,
    candidate_caption: np.ndarray,
    valid: np.ndarray,
    lambda_vlm: float,
    lambda_siglip: float,
) -> BestMatch:
    """Score every candidate of every garment and keep the best (see `best_candidate`).

    garment_*: (b, d) unit vectors; candidate_*: (b, k, d) unit vectors; valid: (b, k) bool, k >= 1.
    S_VLM and S_SigLIP are cosines in [-1, 1].
    """
    s_vlm = np.einsum("bd,bkd->bk", garment_caption, candidate_caption, dtype=np.float32)
    s_siglip = np.einsum("bd,bkd->bk", garment_image, candidate_image, dtype=np.float32)
    return best_candidate(s_vlm, s_siglip, valid, lambda_vlm, lambda_siglip)


def vlm_prefiltered(s_vlm: np.ndarray, valid: np.ndarray, keep: int) -> np.ndarray:
    """(b, k) bool: `valid` narrowed to each garment's `keep` valid candidates with the highest
    S_VLM (ties: the lower index), the seed method's semantic pre-filter; `keep` 0: `valid` as is."""
    if keep <= 0:
        return valid
    order = np.argsort(np.where(valid, -s_vlm, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return valid & (rank < keep)


def best_candidate(
    s_vlm: np.ndarray,
    s_siglip: np.ndarray,
    valid: np.ndarray,
    lambda_vlm: float,
    lambda_siglip: float,
    vlm_prefilter: int = 0,
) -> BestMatch:
    """The best candidate per garment by S = lambda_vlm * s_vlm + lambda_siglip * s_siglip (float32),
    among its `vlm_prefilter` candidates with the highest s_vlm when that is > 0 (`vlm_prefiltered`;
    the margin is then to the runner-up among those).

    s_vlm, s_siglip: (b, k) float32 cosines; valid: (b, k) bool, k >= 1. Ties go to the lower
    candidate index. Re-scoring stored candidate cosines with other lambdas goes through here too.
    """
    s_vlm = np.asarray(s_vlm, np.float32)
    s_siglip = np.asarray(s_siglip, np.float32)
    valid = vlm_prefiltered(s_vlm, np.asarray(valid, bool), vlm_prefilter)
    score = np.where(valid, lambda_vlm * s_vlm + lambda_siglip * s_siglip, -np.inf).astype(np.float32)
    order = np.argsort(-score, axis=1, kind="stable")
    rows = np.arange(len(score))
    best = order[:, 0]
    has_best = valid[rows, best]
    best_score = score[rows, best]
    runner_up = score[rows, order[:, 1]] if score.shape[1] > 1 else np.full(len(score), -np.inf, np.float32)
    nan = np.float32(np.nan)
    with np.errstate(invalid="ignore"):  # -inf - -inf where fewer than two candidates: masked to NaN
        margin = np.where(valid.sum(axis=1) >= 2, best_score - runner_up, nan).astype(np.float32)
    return BestMatch(
        index=np.where(has_best, best, NO_CANDIDATE),
        s_vlm=np.where(has_best, s_vlm[rows, best], nan),
        s_siglip=np.where(has_best, s_siglip[rows, best], nan),
        score=np.where(has_best, best_score, nan),
        margin=margin,
        candidate_s_vlm=s_vlm,
        candidate_s_siglip=s_siglip,
    )
