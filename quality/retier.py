"""A run's pairs made again from their stored candidates, without rerunning any model: the best
candidate re-picked with other lambdas, and tiers by a calibrated confidence."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core import tiering
from core.confidence import Confidence
from core.crop_rivals import crop_margins
from core.schemas import PAIRS
from quality.evaluation import best_of_candidates, element, picked_images
from quality.runs import crop_rows

PICKED = (
    "image_id",
    "image_uri",
    "crop_id",
    "box",
    "s_vlm",
    "s_siglip",
    "score",
    "margin",
    "crop_margin",
)  # what a re-pick sets


def repicked(pairs: pa.Table, lambda_vlm: float, lambda_siglip: float, crops_dir: str) -> pa.Table:
    """`pairs` (PAIRS columns) with each garment's best candidate re-picked (`best_of_candidates`):
    the PICKED columns replaced (crop margins with these lambdas too), the image uri and box of each
    picked crop read from `crops_dir`."""
    match = best_of_candidates(pairs, lambda_vlm, lambda_siglip)
    crop_ids = element(pairs["candidate_crop_ids"].combine_chunks(), match.index)
    found = crop_rows(Path(crops_dir), crop_ids, ["crop_id", "uri", "box"])
    row = pc.index_in(crop_ids, value_set=found["crop_id"].combine_chunks())
    picked = {
        "image_id": picked_images(pairs, match),
        "image_uri": found["uri"].combine_chunks().take(row),
        "crop_id": crop_ids,
        "box": found["box"].combine_chunks().take(row),
        "s_vlm": pa.array(match.s_vlm, pa.float32(), from_pandas=True),
        "s_siglip": pa.array(match.s_siglip, pa.float32(), from_pandas=True),
        "score": pa.array(match.score, pa.float32(), from_pandas=True),
        "margin": pa.array(match.margin, pa.float32(), from_pandas=True),
        "crop_margin": pa.array(crop_margins(pairs, lambda_vlm, lambda_siglip, crop_ids, match.score), pa.float32()),
    }
    for name, values in picked.items():
        pairs = pairs.set_column(pairs.schema.get_field_index(name), name, values.cast(PAIRS.field(name).type))
    return pairs


def retiered(pairs: pa.Table, confidence: Confidence, thresholds: Mapping[str, float | None]) -> pa.Table:
    """`pairs` in the PAIRS schema with `confidence` and `tier` by `thresholds` on it (None: empty tier)."""
    values = confidence(pairs)
    tiers = tiering.by_threshold(values, thresholds)
    columns = {name: pairs[name] for name in PAIRS.names if name in pairs.column_names}
    columns["tier"] = pa.array(tiers.tolist(), pa.string())
    columns["confidence"] = pa.array(values.astype(np.float32))
    return pa.table({name: columns[name] for name in PAIRS.names}, schema=PAIRS)
