"""The crop side of a pair: how much better its garment claims the crop than any other garment does.

A garment's candidates are its claims on crops, each with the score S it would give that pair.
A pair's `crop_margin` is its score minus the best score of the same crop with any other garment
among whose candidates the crop is (NaN when there is none, or the garment has no pair): a
crop that another garment claims more strongly is probably that garment's. The job computes it
distributed (`pipeline.tier_passes`: the pairs and their `claims` hash-partitioned together by
crop_id, then `top_two` and `margins` per partition); `crop_margins` does the same in memory.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CLAIM_COLUMNS = ("garment_id", "candidate_crop_ids", "candidate_s_vlm", "candidate_s_siglip")  # what `claims` reads
CLAIMS = pa.schema([("crop_id", pa.string()), ("garment_id", pa.string()), ("score", pa.float32())])
TOP_TWO = pa.schema(
    [
        ("crop_id", pa.string()),
        ("first_garment_id", pa.string()),  # the garment with the crop's highest score (ties: lowest id)
        ("first_score", pa.float32()),
        ("second_score", pa.float32()),  # the next garment's score; NaN when one garment claims the crop
    ]
)


def _flat(lists: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(row of each value, the values) of a list column."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    return pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), pc.list_flatten(lists)


def claims(pairs: pa.Table | pa.RecordBatch, lambda_vlm: float, lambda_siglip: float) -> pa.Table:
    """CLAIMS: one row per candidate of every garment in `pairs` (SCORED columns CLAIM_COLUMNS),
    its score S in float32 as `core.scoring.best_candidate` computes it (a VLM pre-filter limits
    which candidate a garment picks, not its claims)."""
    rows, crop_ids = _flat(pairs["candidate_crop_ids"])
    s_vlm = _flat(pairs["candidate_s_vlm"])[1].to_numpy(zero_copy_only=False).astype(np.float32)
    s_siglip = _flat(pairs["candidate_s_siglip"])[1].to_numpy(zero_copy_only=False).astype(np.float32)
    score = (lambda_vlm * s_vlm + lambda_siglip * s_siglip).astype(np.float32)
    garment_ids = pairs["garment_id"]
    garment_ids = garment_ids.combine_chunks() if isinstance(garment_ids, pa.ChunkedArray) else garment_ids
    return pa.Table.from_arrays(
        [crop_ids, garment_ids.take(pa.array(rows, pa.int64())), pa.array(score)], schema=CLAIMS
    )


def top_two(claimed: pa.Table) -> pa.Table:
    """TOP_TWO: one row per crop of `claimed` (CLAIMS rows holding every claim of each of their
    crops: the whole set, or one crop's group), its best claim and the runner-up's score."""
    if not claimed.num_rows:
        return TOP_TWO.empty_table()
    ordered = claimed.sort_by([("crop_id", "ascending"), ("score", "descending"), ("garment_id", "ascending")])
    crop_ids = ordered["crop_id"].to_numpy(zero_copy_only=False)
    scores = ordered["score"].to_numpy(zero_copy_only=False)
    first = np.flatnonzero(np.r_[True, crop_ids[1:] != crop_ids[:-1]])
    has_second = np.r_[first[1:], len(crop_ids)] - first >= 2
    second = np.where(has_second, scores[np.minimum(first + 1, len(scores) - 1)], np.nan).astype(np.float32)
    taken = pa.array(first, pa.int64())
    return pa.Table.from_arrays(
        [ordered["crop_id"].take(taken), ordered["garment_id"].take(taken), pa.array(scores[first]), pa.array(second)],
        schema=TOP_TWO,
    )


def margins(garment_ids: pa.Array, crop_ids: pa.Array, scores: np.ndarray, top: pa.Table) -> np.ndarray:
    """(n,) float32 crop margin of n pairs (their garment, crop (null: none) and score) from TOP_TWO
    rows `top` that hold their crops (NaN where a crop has no claim by another garment)."""
    row = pc.index_in(crop_ids, value_set=top["crop_id"].combine_chunks())
    picked = {name: top[name].combine_chunks().take(row) for name in TOP_TWO.names[1:]}
    first, second = (pc.fill_null(picked[n], np.nan).to_numpy(zero_copy_only=False) for n in TOP_TWO.names[2:])
    own = pc.fill_null(pc.equal(picked["first_garment_id"], garment_ids), False).to_numpy(zero_copy_only=False)
    rival = np.where(own, second, first).astype(np.float64)
    return (np.asarray(scores, np.float64) - rival).astype(np.float32)


def crop_margins(
    pairs: pa.Table, lambda_vlm: float, lambda_siglip: float, crop_ids: pa.Array, scores: np.ndarray
) -> np.ndarray:
    """(n,) float32 crop margin of every garment's pair in `pairs` (SCORED columns), each garment's
    pair being its crop `crop_ids` (n,; null: none) with score `scores` (n,), S from these lambdas."""
    top = top_two(claims(pairs, lambda_vlm, lambda_siglip))
    return margins(pairs["garment_id"], crop_ids, scores, top)
