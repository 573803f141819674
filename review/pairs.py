"""A run's pairs as the review app reads them: a few columns of every pair, full rows of the few it shows.

`run` is a mining output folder (holding `pairs/`), its `pairs/` folder, or one pairs Parquet file
(as `quality.runs.read_run` takes). Only local runs. The review never holds the candidate lists
or image bytes of every pair: `read_population` reads narrow columns (three ids, the tier, four
numbers: about 100 bytes a pair, so 1e6 pairs fit in about 100 MB), `read_rows` the display
columns of the pairs it serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.config import DecodeConfig, TierConfig
from core.schemas import CROPS_DIR, PAIRS_DIR
from core.storage import StorageConfig
from core.vocab import ATTRIBUTES
from quality.run_files import decode_limits_of, storage_of, tiers_of
from quality.runs import crop_rows, run_folder

POPULATION_COLUMNS = ["garment_id", "crop_id", "image_id", "tier", "score", "margin", "crop_margin", "confidence"]
ROW_COLUMNS = [
    *("garment_id", "garment_uri", "garment_caption", "image_id", "image_uri", "crop_id", "box"),
    *("s_vlm", "s_siglip", "score", "margin", "crop_margin", "n_candidates", "tier", "confidence"),
]
CROP_COLUMNS = ["crop_id", "caption", *ATTRIBUTES]


@dataclass(frozen=True)
class Population:
    """Every reviewable pair of a run (a pair with a crop: garments without a candidate are left
    out), sorted by garment_id, which is unique in a run. Arrays of equal length; `score`, `margin`,
    `crop_margin` and `confidence` float64, NaN where null (or where the run has no such column)."""

    garment_id: np.ndarray
    crop_id: np.ndarray
    image_id: np.ndarray
    tier: np.ndarray
    score: np.ndarray
    margin: np.ndarray
    crop_margin: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.garment_id)

    def key(self, row: int) -> tuple[str, str]:
        """The pair key (garment_id, crop_id) of population row `row`."""
        return str(self.garment_id[row]), str(self.crop_id[row])


def pairs_source(run: str | Path) -> Path:
    """The pairs folder or file of `run`."""
    folder = run_folder(run)
    return folder / PAIRS_DIR if folder else Path(run)


def _present(source: Path, wanted: list[str]) -> list[str]:
    """The columns of `wanted` that the Parquet file or folder `source` has (runs written before a
    column was added lack it)."""
    names = set(ds.dataset(source, format="parquet").schema.names)
    return [name for name in wanted if name in names]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(len(table), np.nan)
    column = table[name].combine_chunks().cast(pa.float64())
    return column.fill_null(float("nan")).to_numpy(zero_copy_only=False)


def _strings(table: pa.Table, name: str) -> np.ndarray:
    return table[name].combine_chunks().fill_null("").to_numpy(zero_copy_only=False).astype(object)


def read_population(run: str | Path) -> Population:
    """The reviewable pairs of `run`: POPULATION_COLUMNS only, rows with a null or empty crop_id
    dropped, sorted by garment_id (then crop_id) so that every later step is deterministic."""
    source = pairs_source(run)
    table = pq.read_table(source, columns=_present(source, POPULATION_COLUMNS), partitioning=None)
    table = table.filter(pc.fill_null(pc.not_equal(table["crop_id"], ""), False))
    table = table.sort_by([("garment_id", "ascending"), ("crop_id", "ascending")])
    return Population(
        garment_id=_strings(table, "garment_id"),
        crop_id=_strings(table, "crop_id"),
        image_id=_strings(table, "image_id"),
        tier=_strings(table, "tier"),
        score=_floats(table, "score"),
        margin=_floats(table, "margin"),
        crop_margin=_floats(table, "crop_margin"),
        confidence=_floats(table, "confidence"),
    )


def read_rows(run: str | Path, garment_ids: Iterable[str]) -> dict[str, dict]:
    """ROW_COLUMNS of the pairs of `garment_ids` (a pushed-down filter: only matching rows are
    materialised), keyed by garment_id; a column the run lacks is None."""
    ids, source = sorted(set(garment_ids)), pairs_source(run)
    if not ids:
        return {}
    columns = _present(source, ROW_COLUMNS)
    table = pq.read_table(source, columns=columns, filters=pc.field("garment_id").isin(ids), partitioning=None)
    return {row["garment_id"]: {**dict.fromkeys(ROW_COLUMNS), **row} for row in table.to_pylist()}


def read_crop_notes(run: str | Path, crop_ids: Iterable[str]) -> dict[str, dict]:
    """Caption and attributes of `crop_ids` from the run's `crops/` table, keyed by crop_id; empty
    when the run has no crops folder (a pairs file alone)."""
    folder = run_folder(run)
    if folder is None:
        return {}
    return {row["crop_id"]: row for row in crop_rows(folder / CROPS_DIR, crop_ids, CROP_COLUMNS).to_pylist()}


def run_limits(run: str | Path) -> tuple[StorageConfig, DecodeConfig]:
    """The storage allow-list and decode limits the run was mined with (its `config.yaml`), else the
    defaults, whose allow-list admits no local file."""
    folder = run_folder(run)
    if folder is None:
        return StorageConfig(), DecodeConfig()
    return storage_of(folder), decode_limits_of(folder)


def run_tier_key(run: str | Path) -> str:
    """The `tiers.key` the run was tiered by (its `config.yaml`), else the default."""
    folder = run_folder(run)
    return (tiers_of(folder) if folder else TierConfig()).key
