"""What a report reads from a run's folder besides the pairs: summary.json, config.yaml, the
quarantine tables, crop attributes, calibration.json, and the storage and decode settings that
thumbnails are read with. A file that is absent gives None (or an empty table), never an error:
a folder written by jobs.calibrate has pairs and calibration.json only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from omegaconf import OmegaConf

from core.config import DecodeConfig, TierConfig, merged_config
from core.schemas import CROPS_DIR, QUARANTINE_DIR
from core.storage import StorageConfig
from core.vocab import ATTRIBUTES
from quality.runs import crop_rows

SUMMARY, CONFIG, CALIBRATION = "summary.json", "config.yaml", "calibration.json"
CROP_DETAILS = ("crop_id", "uri", "caption", *ATTRIBUTES)  # what a gallery card shows of a crop
EXAMPLES = 3  # quarantined rows shown per (stage, reason)


def read_summary(run: Path) -> dict | None:
    path = run / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def read_config_text(run: Path) -> str | None:
    path = run / CONFIG
    return path.read_text() if path.is_file() else None


def _config_node(run: Path, key: str) -> list:
    """The run's config.yaml node `key` as a merge default (nothing without config.yaml)."""
    path = run / CONFIG
    if not path.is_file():
        return []
    node = OmegaConf.load(path).get(key)
    return [] if node is None else [node]


def storage_of(run: Path, overrides: Sequence[str] = ()) -> StorageConfig:
    """The run's `storage` settings (config.yaml; defaults without it), then `overrides`
    (`key=value` of StorageConfig, with or without a `storage.` prefix): the allow-list and S3
    endpoint the thumbnails are read with."""
    dotlist = [item.removeprefix("storage.") for item in overrides]
    return merged_config(StorageConfig, dotlist, *_config_node(run, "storage"))


def tiers_of(run: Path) -> TierConfig:
    """The run's `tiers` settings (config.yaml; defaults without it)."""
    return merged_config(TierConfig, [], *_config_node(run, "tiers"))


def decode_limits_of(run: Path) -> DecodeConfig:
    """The run's `decode` limits (formats, max bytes and pixels), defaults without config.yaml."""
    return merged_config(DecodeConfig, [], *_config_node(run, "decode"))


def quarantine_counts(run: Path) -> tuple[pa.Table, dict[tuple[str, str], list[dict]]]:
    """(stage, reason, rows) of `quarantine/` by rows descending, and up to `EXAMPLES` rows (id,
    uri, error) per (stage, reason). Empty without a quarantine folder."""
    empty = pa.table(
        {"stage": pa.array([], pa.string()), "reason": pa.array([], pa.string()), "rows": pa.array([], pa.int64())}
    )
    folder = run / QUARANTINE_DIR
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        return empty, {}
    table = ds.dataset(folder, format="parquet", partitioning=None).to_table(
        columns=["id", "uri", "stage", "reason", "error"]
    )
    counts = table.group_by(["stage", "reason"]).aggregate([("id", "count")])
    counts = pa.table({"stage": counts["stage"], "reason": counts["reason"], "rows": counts["id_count"]})
    counts = counts.sort_by([("rows", "descending"), ("stage", "ascending"), ("reason", "ascending")])
    examples = {}
    for stage, reason in zip(counts["stage"].to_pylist(), counts["reason"].to_pylist()):
        mask = pc.and_(pc.equal(table["stage"], stage), pc.equal(table["reason"], reason))
        examples[(stage, reason)] = table.filter(mask).slice(0, EXAMPLES).select(["id", "uri", "error"]).to_pylist()
    return counts, examples


def crop_details(run: Path, crop_ids: Sequence[str]) -> dict[str, dict]:
    """crop_id -> its `CROP_DETAILS` (uri, caption, attributes) for the given crops, read from the
    run's crops table (only the rows asked for); {} without one."""
    return {row["crop_id"]: row for row in crop_rows(run / CROPS_DIR, crop_ids, CROP_DETAILS).to_pylist()}


def find_calibration(run: Path, pairs: Path, given: Path | None = None) -> Path | None:
    """`given`, else calibration.json beside the pairs folder (the folder jobs.calibrate wrote),
    else in the run folder; None when there is none."""
    if given is not None:
        return given
    folder = pairs.parent if pairs.is_dir() else pairs.parent.parent
    return next((p for p in (folder / CALIBRATION, run / CALIBRATION) if p.is_file()), None)
