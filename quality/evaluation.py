"""Quality of a mining run against a labelled benchmark split, and re-scoring for the lambda ablation.

Inputs are Arrow tables as the job and the benchmark write them:
  pairs     PAIRS (core.schemas): one row per garment, its best pair, tier and candidates in search order
  crops     core.schemas.crops: crop_id, image_id, box (original-image px), attributes
  truth     TRUTH_SCHEMA (datagen.synthetic), optionally with category / colour / pattern columns: one row
            per garment instance placed in a scene; garment_id "" marks a distractor outside the catalogue
  garments  GARMENT_SCHEMA: the catalogue with its attributes ("" where the benchmark does not know one)
A true pair is (garment_id, image_id) of a truth row with a non-empty garment_id; a garment with at
least one true pair is *matchable*. Every proportion comes with a 95 % Wilson score interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import boxes, tiering
from core.arrow import matrix
from core.config import TierConfig
from core.crop_rivals import crop_margins
from core.scoring import NO_CANDIDATE, BestMatch, best_candidate
from core.vocab import ATTRIBUTES

Z_95 = 1.959963984540054  # standard normal quantile of 0.975: two-sided 95 % interval
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
_KEY_SEPARATOR = "\x1f"  # joins garment_id and image_id into one pair key (ids never hold it)


def wilson_interval(hits: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of the proportion hits / total (95 % with the default z):
    center (p + z²/2n) / (1 + z²/n), half-width z / (1 + z²/n) * sqrt(p(1 - p)/n + z²/4n²).
    (NaN, NaN) when total is 0."""
    if total == 0:
        return math.nan, math.nan
    p, n, z2 = hits / total, total, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Proportion:
    """hits out of total, its value (NaN when total is 0) and 95 % Wilson score interval."""

    hits: int
    total: int

    @property
    def value(self) -> float:
        return self.hits / self.total if self.total else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.total)

    def as_dict(self) -> dict:
        """JSON-ready: value and interval bounds are None where undefined (total 0)."""
        low, high = self.interval
        return {
            "value": _number(self.value),
            "hits": self.hits,
            "total": self.total,
            "ci95": [_number(low), _number(high)],
        }


def _number(x: float) -> float | None:
    return None if math.isnan(x) else x


def _array(table: pa.Table, column: str) -> pa.Array:
    return table[column].combine_chunks()


def pair_keys(garment_ids: pa.Array, image_ids: pa.Array) -> pa.Array:
    """One string key per (garment_id, image_id) row; null where either is null."""
    return pc.binary_join_element_wise(garment_ids, image_ids, _KEY_SEPARATOR)


def _catalogued(truth: pa.Table) -> pa.Table:
    return truth.filter(pc.not_equal(truth["garment_id"], ""))


def true_pair_keys(truth: pa.Table) -> pa.Array:
    """The distinct keys (`pair_keys`) of the true pairs."""
    rows = _catalogued(truth)
    return pc.unique(pair_keys(rows["garment_id"].combine_chunks(), rows["image_id"].combine_chunks()))


def matchable_garments(truth: pa.Table) -> pa.Array:
    """The distinct garment_ids that have at least one true pair."""
    return pc.unique(_catalogued(truth)["garment_id"].combine_chunks())


def is_true_pair(garment_ids: pa.Array, image_ids: pa.Array, truth: pa.Table) -> np.ndarray:
    """(n,) bool: whether each (garment_id, image_id) is a true pair (a null image_id is not)."""
    found = pc.is_in(pair_keys(garment_ids, image_ids), value_set=true_pair_keys(truth))
    return found.fill_null(False).to_numpy(zero_copy_only=False)


def tier_metrics(pairs: pa.Table, truth: pa.Table) -> dict[str, dict[str, Proportion]]:
    """Per tier of high / mid / low: `precision` (true pairs among the tier's pairs),
    `cumulative_precision` and `cumulative_recall` over the tiers up to it (high, high+mid,
    high+mid+low); recall counts true pairs out of the matchable garments (each garment has one
    pair, so recall can reach 1). pairs: garment_id, image_id, tier."""
    true = is_true_pair(_array(pairs, "garment_id"), _array(pairs, "image_id"), truth)
    tiers = _array(pairs, "tier").to_numpy(zero_copy_only=False)
    n_matchable = len(matchable_garments(truth))
    out = {}
    for i, tier in enumerate(tiering.TIERS):
        inside, upto = tiers == tier, np.isin(tiers, tiering.TIERS[: i + 1])
        out[tier] = {
            "precision": Proportion(int(true[inside].sum()), int(inside.sum())),
            "cumulative_precision": Proportion(int(true[upto].sum()), int(upto.sum())),
            "cumulative_recall": Proportion(int(true[upto].sum()), n_matchable),
        }
    return out


def first_true_rank(pairs: pa.Table, truth: pa.Table) -> np.ndarray:
    """(n,) int64 per pairs row: 0-based position of the first true image among its
    `candidate_image_ids`, or -1 where none is true."""
    lists = _array(pairs, "candidate_image_ids")
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    owners = _array(pairs, "garment_id").take(pa.array(parents, pa.int64()))
    hit = pc.is_in(pair_keys(owners, lists.flatten()), value_set=true_pair_keys(truth))
    hit = hit.fill_null(False).to_numpy(zero_copy_only=False)
    position = np.arange(len(parents)) - np.searchsorted(parents, parents, side="left")
    first = np.full(len(lists), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, parents[hit], position[hit])
    return np.where(first == np.iinfo(np.int64).max, -1, first)


def retrieval_recall(pairs: pa.Table, truth: pa.Table, ks: Sequence[int]) -> dict[int, Proportion]:
    """Recall@k before scoring, per k: matchable garments with a true image among their first k
    candidates, out of all matchable garments (one missing from `pairs` counts as a miss).
    pairs: garment_id, candidate_image_ids (search order)."""
    first = first_true_rank(pairs, truth)
    n_matchable = len(matchable_garments(truth))
    return {k: Proportion(int(((first >= 0) & (first < k)).sum()), n_matchable) for k in ks}


def truth_boxes(truth: pa.Table) -> np.ndarray:
    """(n, 4) float64 [x0, y0, x1, y1] px of every truth row."""
    return np.stack([truth[c].to_numpy().astype(np.float64) for c in BOX_COLUMNS], axis=1).reshape(-1, 4)


def _rows_by_value(values: np.ndarray) -> dict[str, np.ndarray]:
    """value -> the (ascending) row indices that hold it."""
    unique, inverse = np.unique(values.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    splits = np.cumsum(np.bincount(inverse, minlength=len(unique)))[:-1]
    return dict(zip(unique.tolist(), np.split(order, splits)))


def match_truth_to_crops(truth: pa.Table, crops: pa.Table, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(truth row indices, crop row indices) of the truth boxes found by a crop: per image,
    `boxes.match_by_iou` (one-to-one, IoU >= min_iou). Every truth row counts, distractors too."""
    empty = np.zeros(0, np.int64)
    if not len(truth) or not len(crops):
        return empty, empty
    truth_xyxy, crop_xyxy = truth_boxes(truth), matrix(crops["box"])
    crop_rows = _rows_by_value(crops["image_id"].to_numpy(zero_copy_only=False))
    matched_truth, matched_crops = [], []
    for image, truth_rows in _rows_by_value(truth["image_id"].to_numpy(zero_copy_only=False)).items():
        if image not in crop_rows:
            continue
        t, c = boxes.match_by_iou(truth_xyxy[truth_rows], crop_xyxy[crop_rows[image]], min_iou)
        matched_truth.append(truth_rows[t])
        matched_crops.append(crop_rows[image][c])
    return np.concatenate([empty, *matched_truth]), np.concatenate([empty, *matched_crops])


def truth_attributes(truth: pa.Table, garments: pa.Table) -> dict[str, np.ndarray]:
    """Per attribute, (n,) str: each truth row's value, from the truth table's own column where it
    has a non-empty one (distractors), else from its catalogue garment; "" where unknown."""
    ids = truth["garment_id"].to_numpy(zero_copy_only=False)
    out = {}
    for name in ATTRIBUTES:
        if name in garments.column_names:
            catalogue = dict(zip(garments["garment_id"].to_pylist(), garments[name].to_pylist()))
            values = np.array([catalogue.get(g) or "" for g in ids], dtype=object)
        else:
            values = np.full(len(ids), "", dtype=object)
        if name in truth.column_names:
            own = truth[name].fill_null("").to_numpy(zero_copy_only=False)
            values = np.where(own != "", own, values)
        out[name] = values
    return out


def attribute_accuracy(
    truth_values: Mapping[str, np.ndarray], crops: pa.Table, matched_truth: np.ndarray, matched_crops: np.ndarray
) -> dict[str, Proportion]:
    """Per attribute: matched crops whose tagged value equals their truth row's, out of the
    matched pairs whose truth value is known (non-empty)."""
    out = {}
    for name, values in truth_values.items():
        truth_value = values[matched_truth]
        known = truth_value != ""
        tagged = crops[name].to_numpy(zero_copy_only=False)[matched_crops]
        out[name] = Proportion(int((tagged[known] == truth_value[known]).sum()), int(known.sum()))
    return out


def precision_coverage(scores: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """The precision-vs-coverage curve over the pairs that have a score (NaN: no candidate),
    sorted by score descending (ties keep input order): per rank r (1-based), `score` of the r-th
    pair, `precision` = true pairs among the first r / r, `coverage` = r / pairs with a score."""
    scored = ~np.isnan(scores)
    order = np.argsort(-scores[scored], kind="stable")
    ranked, hits = scores[scored][order], true[scored][order]
    rank = np.arange(1, len(ranked) + 1)
    return {
        "rank": rank,
        "score": ranked.astype(np.float32),
        "true": hits,
        "precision": np.cumsum(hits) / rank,
        "coverage": rank / max(1, len(ranked)),
    }


def threshold_for_precision(scores: np.ndarray, true: np.ndarray, target: float) -> float | None:
    """The lowest score threshold t such that the pairs with score >= t have precision >= target
    (precision need not fall monotonically, so every distinct score is tried); None if none does."""
    curve = precision_coverage(scores, true)
    ranked = curve["score"]
    group_end = np.append(ranked[1:] != ranked[:-1], True)  # last rank of each run of equal scores
    reaching = ranked[group_end][curve["precision"][group_end] >= target]
    return float(reaching.min()) if len(reaching) else None


def element(lists: pa.Array, index: np.ndarray) -> pa.Array:
    """lists[i][index[i]] of each row; null where index[i] is NO_CANDIDATE."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    positions = pa.array(starts + np.maximum(index, 0), pa.int64(), mask=index == NO_CANDIDATE)
    return lists.flatten().take(positions)


def padded(lists: pa.Array, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """(b, k) float32 values of a list<float> array, padded with `fill`, and the (b, k) bool mask
    of real entries; k = the longest list, at least 1."""
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    valid = np.arange(width)[None, :] < lengths[:, None]
    values = np.full((len(lengths), width), fill, np.float32)
    values[valid] = lists.flatten().to_numpy(zero_copy_only=False)
    return values, valid


def assign_tiers(keys: np.ndarray, ids: np.ndarray, cfg: TierConfig) -> np.ndarray:
    """(n,) object tiers as the job assigns them (core.tiering) from each pair's tier key: by
    thresholds, or exactly the top counts[tier] by (key descending, garment_id ascending) in count mode."""
    if cfg.mode == "threshold":
        return tiering.by_threshold(keys, cfg.thresholds)
    return tiering.by_cutoffs(keys, ids, tiering.cutoffs_in_memory(keys, ids, cfg.counts))


def best_of_candidates(pairs: pa.Table, lambda_vlm: float, lambda_siglip: float, vlm_prefilter: int = 0) -> BestMatch:
    """Each garment's best stored candidate by S = lambda_vlm * S_VLM + lambda_siglip * S_SigLIP
    (`core.scoring.best_candidate`, with its `vlm_prefilter`); `index` is its position in the
    candidate lists."""
    s_vlm, valid = padded(_array(pairs, "candidate_s_vlm"), np.nan)
    s_siglip, _ = padded(_array(pairs, "candidate_s_siglip"), np.nan)
    return best_candidate(s_vlm, s_siglip, valid, lambda_vlm, lambda_siglip, vlm_prefilter)


def picked_images(pairs: pa.Table, match: BestMatch) -> pa.Array:
    """The image_id of each garment's `match` (null without a candidate)."""
    return element(_array(pairs, "candidate_image_ids"), match.index)


def rescored(
    pairs: pa.Table, lambda_vlm: float, lambda_siglip: float, tiers: TierConfig, vlm_prefilter: int = 0
) -> pa.Table:
    """The pairs as the job would have made them with other lambdas (and `vlm_prefilter`), from the
    stored candidates (`best_of_candidates`, crop margins with these lambdas, then `assign_tiers` by
    `tiers.key`): garment_id, image_id, crop_id, s_vlm, s_siglip, score, margin, crop_margin, tier,
    candidate_image_ids. image_id / crop_id null without a candidate."""
    match = best_of_candidates(pairs, lambda_vlm, lambda_siglip, vlm_prefilter)
    garment_ids = _array(pairs, "garment_id")
    ids = garment_ids.to_numpy(zero_copy_only=False)
    crop_ids = element(_array(pairs, "candidate_crop_ids"), match.index)
    crop_margin = crop_margins(pairs, lambda_vlm, lambda_siglip, crop_ids, match.score)
    keys = tiering.tier_key(match.score, crop_margin, tiers.key)
    return pa.table(
        {
            "garment_id": garment_ids,
            "image_id": picked_images(pairs, match),
            "crop_id": crop_ids,
            "s_vlm": pa.array(match.s_vlm, pa.float32()),
            "s_siglip": pa.array(match.s_siglip, pa.float32()),
            "score": pa.array(match.score, pa.float32()),
            "margin": pa.array(match.margin, pa.float32()),
            "crop_margin": pa.array(crop_margin, pa.float32()),
            "tier": pa.array(assign_tiers(keys, ids, tiers).tolist(), pa.string()),
            "candidate_image_ids": _array(pairs, "candidate_image_ids"),
        }
    )


def ablation_lambdas(lambda_vlm: float, lambda_siglip: float) -> dict[str, tuple[float, float]]:
    """(lambda_vlm, lambda_siglip) of each ablation setting: `siglip_only` (S_VLM weight 0),
    `vlm_only` (S_SigLIP weight 0), `combined` (as given). A part alone gets the sum of both
    weights, so scores keep the range [-w, w] the tier thresholds were set for."""
    total = lambda_vlm + lambda_siglip
    return {"siglip_only": (0.0, total), "vlm_only": (total, 0.0), "combined": (lambda_vlm, lambda_siglip)}


@dataclass(frozen=True)
class EvalSettings:
    """`ks`: recall@k cut-offs (a k above the run's `top_k` candidates is reported as None);
    `min_iou`: a crop finds a truth box at IoU >= this; `target_precision`: the precision the
    reported score threshold reaches."""

    ks: tuple[int, ...] = (1, 10, 50)
    min_iou: float = 0.5
    target_precision: float = 0.95


def report(
    pairs: pa.Table,
    truth: pa.Table,
    garments: pa.Table,
    crops: pa.Table | None,
    top_k: int,
    settings: EvalSettings,
) -> dict:
    """Every metric of one run (JSON-ready): counts, tiers, retrieval recall@k, detection recall and
    attribute accuracy (None without crops), the score threshold for `settings.target_precision`
    and the coverage it keeps. pairs: garment_id, image_id, score, tier, candidate_image_ids."""
    true = is_true_pair(_array(pairs, "garment_id"), _array(pairs, "image_id"), truth)
    scores = _array(pairs, "score").fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32)
    threshold = threshold_for_precision(scores, true, settings.target_precision)
    scored = ~np.isnan(scores)
    recall = retrieval_recall(pairs, truth, settings.ks)
    out = {
        "counts": {
            "pairs": len(pairs),
            "scored_pairs": int(scored.sum()),
            "true_pairs_found": int(true.sum()),
            "matchable_garments": len(matchable_garments(truth)),
            "true_pairs": len(true_pair_keys(truth)),
            "truth_boxes": len(truth),
            "top_k": top_k,
        },
        "tiers": {t: {k: p.as_dict() for k, p in m.items()} for t, m in tier_metrics(pairs, truth).items()},
        "retrieval_recall": {str(k): recall[k].as_dict() if k <= top_k else None for k in settings.ks},
        "precision_threshold": {
            "target": settings.target_precision,
            "score": threshold,
            "coverage": float((scores[scored] >= threshold).mean()) if threshold is not None else 0.0,
        },
        "min_iou": settings.min_iou,
        "detection_recall": None,
        "attribute_accuracy": None,
    }
    if crops is not None:
        matched_truth, matched_crops = match_truth_to_crops(truth, crops, settings.min_iou)
        out["detection_recall"] = Proportion(len(matched_truth), len(truth)).as_dict()
        accuracy = attribute_accuracy(truth_attributes(truth, garments), crops, matched_truth, matched_crops)
        out["attribute_accuracy"] = {name: p.as_dict() for name, p in accuracy.items()}
    return out
