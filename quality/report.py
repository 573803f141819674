"""A run's visual report: one self-contained HTML file (images and plots inline as data: URIs) that
opens from disk anywhere.

Sections: counts per stage, tier and quarantine reason; models and config; histograms per tier of
score, margin, S_VLM and S_SigLIP (and confidence when the run has one); precision vs coverage when
judgements are given (benchmark truth or review labels); the calibration table when there is a
calibration.json; a seeded sample of pairs per tier; the pairs on either side of each tier's lower
boundary; the crops chosen as the best match of the most garments.

Scale: only a few columns of every pair are read (never the candidate lists); the cards' rows are
read by index from their row groups (quality.pair_files), and thumbnails are drawn once and cached
under RUN/report/thumbs (quality.thumbnails).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.config import DecodeConfig
from core.schemas import PAIRS_DIR
from core.storage import StorageConfig
from core.tiering import TIER_ORDER, tier_key
from quality import gallery, labels, page, run_files, sections, selection
from quality.pair_files import PairFiles
from quality.thumbnails import ThumbnailCache

REPORT_DIR, THUMBS_DIR, INDEX_HTML = "report", "thumbs", "index.html"
NUMBER_COLUMNS = ("score", "margin", "crop_margin", "s_vlm", "s_siglip", "confidence")  # histogrammed, when finite
BY_CROP_MARGIN = "score + crop_margin"  # the ranking key of a run tiered by tiers.key=score_plus_crop_margin


@dataclass(frozen=True)
class ReportSettings:
    """`per_tier`: pairs sampled per tier (seeded by `seed`); `boundary`: pairs shown on each side
    of a tier's lower boundary; `top_crops`: crops shown among those chosen by several garments;
    `bins`: histogram bins; `thumb_side`: thumbnail size in px (longer side); `threads`: thumbnail
    threads."""

    per_tier: int = 24
    boundary: int = 8
    top_crops: int = 12
    seed: int = 0
    bins: int = 50
    thumb_side: int = 256
    threads: int = 4


@dataclass(frozen=True)
class ReportInputs:
    """`run`: the run's output folder (summary.json, config.yaml, crops/, quarantine/; any may be
    absent); `pairs`: the pairs folder or file reported (default RUN/pairs); `storage` and
    `decode`: how images are read (the run's own settings, see run_files.storage_of); `truth`: a
    benchmark split's truth table; `labels`: review labels (garment_id, crop_id, verified);
    `calibration`: a calibration.json (default: found by run_files.find_calibration)."""

    run: Path
    storage: StorageConfig
    pairs: Path | None = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    truth: pa.Table | None = None
    labels: pa.Table | None = None
    calibration: Path | None = None

    @property
    def pairs_path(self) -> Path:
        return self.pairs or self.run / PAIRS_DIR


@dataclass(frozen=True)
class ReportResult:
    """Where the report is, its size, the pairs it covers and how long it took; thumbnails drawn
    now (`made`) and found in the cache (`cached`)."""

    path: Path
    html_bytes: int
    pairs: int
    made: int
    cached: int
    seconds: float


def default_out(run: Path) -> Path:
    return run / REPORT_DIR / INDEX_HTML


@dataclass(frozen=True)
class Columns:
    """The whole columns the report reads: tier codes, numbers (float64, NaN for null), the ranking
    key (confidence where the run has one, else what the run tiered by: score, or BY_CROP_MARGIN)
    and the judgements (None without any)."""

    codes: np.ndarray
    numbers: dict[str, np.ndarray]
    key_name: str
    crop_ids: pa.Array
    judged: labels.Judged | None

    @property
    def key(self) -> np.ndarray:
        return self.numbers[self.key_name]


def read_columns(files: PairFiles, inputs: ReportInputs) -> Columns:
    """Tier, the `NUMBER_COLUMNS`, crop_id, and garment_id / image_id only when judging."""
    ids = ["garment_id", "image_id"] if inputs.truth is not None or inputs.labels is not None else []
    table = files.read_columns(["tier", *NUMBER_COLUMNS, "crop_id", *ids])
    column = {name: table[name].combine_chunks() for name in table.column_names}
    numbers = {n: column[n].cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False) for n in NUMBER_COLUMNS}
    judged = None
    if inputs.truth is not None:
        judged = labels.from_truth(column["garment_id"], column["image_id"], inputs.truth)
    elif inputs.labels is not None:
        judged = labels.from_review(column["garment_id"], column["crop_id"], inputs.labels)
    key_name, tiered_by = "score", run_files.tiers_of(inputs.run).key
    if np.isfinite(numbers["confidence"]).any():
        key_name = "confidence"
    elif tiered_by != "score" and np.isfinite(numbers["crop_margin"]).any():
        key_name = BY_CROP_MARGIN
        numbers[key_name] = tier_key(numbers["score"], numbers["crop_margin"], tiered_by).astype(np.float64)
    return Columns(selection.tier_codes(column["tier"]), numbers, key_name, column["crop_id"], judged)


def card_rows(files: PairFiles, run: Path, indices: np.ndarray, judged: labels.Judged | None) -> dict[int, dict]:
    """Global row index -> the card data of that pair (gallery module doc)."""
    unique = np.unique(indices)
    rows = files.take(unique, gallery.PAIR_COLUMNS).to_pylist()
    crops = run_files.crop_details(run, [r["crop_id"] for r in rows])
    out = {}
    for index, row in zip(unique.tolist(), rows):
        row["crop"] = crops.get(row["crop_id"], {})
        row["judged"] = bool(judged.true[index]) if judged is not None and judged.labelled[index] else None
        out[index] = row
    return out


@dataclass(frozen=True)
class Shown:
    """The pairs the report shows, as global row indices: `samples` per tier, `bounds` per tier
    boundary, `top` (row of one of its pairs, garments) per most chosen crop."""

    samples: dict[str, np.ndarray]
    bounds: list[selection.Boundary]
    top: list[tuple[int, int]]

    @property
    def rows(self) -> np.ndarray:
        parts = [*self.samples.values(), *(b.inside for b in self.bounds), *(b.below for b in self.bounds)]
        return np.unique(np.concatenate([np.zeros(0, np.int64), *parts, [r for r, _ in self.top]]).astype(np.int64))


def choose(cols: Columns, settings: ReportSettings) -> Shown:
    top = selection.most_chosen(cols.crop_ids, settings.top_crops)
    return Shown(
        selection.sample_per_tier(cols.codes, cols.key, settings.per_tier, settings.seed),
        selection.boundaries(cols.codes, cols.key, settings.boundary),
        list(zip(top["row"].to_pylist(), top["garments"].to_pylist())),
    )


def galleries(
    shown: Shown, rows: dict[int, dict], counts: dict[str, int], cols: Columns, settings: ReportSettings, thumbs: dict
) -> list[tuple[str, str, str]]:
    """The gallery sections: a sample per tier, the tier boundaries, the most chosen crops."""
    how = f"seeded sample (seed {settings.seed}, at most {settings.per_tier} per tier), by {cols.key_name} descending"
    edges = {b.tier for b in shown.bounds}
    tiers = [
        gallery.tier_gallery(t, [rows[i] for i in idx.tolist()], counts[t], how, thumbs, t in edges)
        for t, idx in shown.samples.items()
    ]
    for index, row in rows.items():  # a key computed from columns (BY_CROP_MARGIN) is not a column of the row
        row.setdefault(cols.key_name, float(cols.key[index]))
    bounds = [gallery.boundary_gallery(b, rows, cols.key_name, thumbs) for b in shown.bounds]
    return [
        ("gallery", "Gallery per tier", "".join(tiers)),
        ("boundaries", "Near the tier boundaries", "".join(bounds) or page.note("no tier has a scored pair")),
        ("crops", "Most chosen crops", gallery.crops_gallery(shown.top, rows, thumbs)),
    ]


def tables(
    files: PairFiles, cols: Columns, counts: dict[str, int], inputs: ReportInputs, settings: ReportSettings
) -> list[tuple[str, str, str]]:
    """The sections before the galleries: counts, models and config, distributions, and where
    they apply, precision vs coverage and calibration."""
    summary = run_files.read_summary(inputs.run)
    where = f"{files.rows:,} pairs in {len(files.paths)} file(s) under {inputs.pairs_path}"
    out = [
        ("counts", "Counts", sections.counts_section(where, counts, inputs.run, summary)),
        ("models", "Models and config", sections.models_section(inputs.run, summary)),
        ("distributions", "Distributions", sections.distributions_section(cols.numbers, cols.codes, settings.bins)),
    ]
    if cols.judged is not None:
        precision = sections.precision_section(cols.judged, cols.key, cols.key_name, cols.codes)
        out.append(("precision", "Precision vs coverage", precision))
    if (calibration := run_files.find_calibration(inputs.run, inputs.pairs_path, inputs.calibration)) is not None:
        out.append(("calibration", "Calibration", sections.calibration_section(calibration)))
    return out


def build_report(inputs: ReportInputs, settings: ReportSettings, out: Path | None = None) -> ReportResult:
    """Write the report of `inputs` to `out` (default RUN/report/index.html) and say what it did."""
    start = time.perf_counter()
    out = out or default_out(inputs.run)
    files = PairFiles.open(inputs.pairs_path)
    cols = read_columns(files, inputs)
    counts = selection.tier_counts(cols.codes)
    shown = choose(cols, settings)
    rows = card_rows(files, inputs.run, shown.rows, cols.judged)
    specs = [s for r in rows.values() for s in (gallery.garment_spec(r), gallery.lookbook_spec(r)) if s is not None]
    folder = inputs.run / REPORT_DIR / THUMBS_DIR
    cache = ThumbnailCache(
        folder, inputs.storage, settings.thumb_side, decode_limits=inputs.decode, threads=settings.threads
    )
    thumbs = cache.get_many(specs)
    parts = [*tables(files, cols, counts, inputs, settings), *galleries(shown, rows, counts, cols, settings, thumbs)]
    links = [(anchor, title) for anchor, title, _ in parts] + [(f"tier-{t}", t) for t in TIER_ORDER]
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"run {inputs.run} · pairs {inputs.pairs_path} · {files.rows:,} pairs · made {made}"
    text = page.document("lookbook-miner report", meta, links, "".join(page.section(*part) for part in parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    seconds = round(time.perf_counter() - start, 2)
    return ReportResult(out, len(text.encode()), files.rows, cache.made, cache.cached, seconds)
