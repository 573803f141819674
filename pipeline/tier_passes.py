"""The tiering stage: every scored garment gets its tier, streamed with Ray Data.

Threshold mode is one map. Count mode is exact without gathering all scores anywhere:
pass 1 sums per-batch histograms of the scores; pass 2 gathers only the (score, garment_id)
pairs inside the few bins that hold a tier boundary; the cutoffs then tier every row in a map.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray
from ray.data import Dataset

from core import tiering
from core.confidence import Confidence
from core.config import MineConfig, ScoringConfig, TierConfig
from core.schemas import GARMENT_IDS, PAIRS, PAIRS_DIR, SCORED_DIR, TIERING
from core.storage import filesystem, join
from pipeline import commits, metrics
from pipeline.commits import ShardCommit
from pipeline.sink import ShardTables, SplitParquetSink


def score_range(scoring: ScoringConfig) -> tuple[float, float]:
    """Every score lies in [-w, w], w = |lambda_vlm| + |lambda_siglip| (cosines lie in [-1, 1])."""
    width = abs(scoring.lambda_vlm) + abs(scoring.lambda_siglip)
    return -width, width


def _bins(batch: dict, cfg: TierConfig, scoring: ScoringConfig) -> np.ndarray:
    scores = batch["score"].astype(np.float64)
    return tiering.score_bins(np.nan_to_num(scores, nan=0.0), *score_range(scoring), cfg.histogram_bins)


def _histogram(batch: dict, cfg: TierConfig, scoring: ScoringConfig) -> dict:
    scored = ~np.isnan(batch["score"])
    counts = np.bincount(_bins(batch, cfg, scoring)[scored], minlength=cfg.histogram_bins)
    return {"histogram": counts[None, :]}


def _in_bins(batch: dict, wanted: list[int], cfg: TierConfig, scoring: ScoringConfig) -> dict:
    bins = _bins(batch, cfg, scoring)
    keep = ~np.isnan(batch["score"]) & np.isin(bins, wanted)
    return {"bin": bins[keep], "score": batch["score"][keep], "garment_id": batch["garment_id"][keep]}


def count_cutoffs(scored: Dataset, cfg: TierConfig, scoring: ScoringConfig) -> list[tiering.Cutoff | None]:
    """The exact (score, garment_id) cutoff of each tier in count mode (None: tier not full)."""
    columns = scored.select_columns(["garment_id", "score"])
    histogram = np.zeros(cfg.histogram_bins, np.int64)
    for batch in columns.map_batches(_histogram, fn_kwargs={"cfg": cfg, "scoring": scoring}).iter_batches():
        histogram += batch["histogram"].sum(axis=0)
    ranks = tiering.cumulative_ranks(cfg.counts)
    bins = tiering.boundary_bins(histogram, ranks)
    wanted = sorted({b for b in bins if b is not None})
    gathered = {"bin": [], "score": [], "garment_id": []}
    if wanted:
        kwargs = {"wanted": wanted, "cfg": cfg, "scoring": scoring}
        for batch in columns.map_batches(_in_bins, fn_kwargs=kwargs).iter_batches():
            for key in gathered:
                gathered[key].extend(batch[key].tolist())
    in_bin = {
        key: np.asarray(values, dtype=object if key == "garment_id" else None) for key, values in gathered.items()
    }
    cutoffs = []
    for rank, b in zip(ranks, bins):
        if b is None:
            cutoffs.append(None)
            continue
        mask = in_bin["bin"] == b
        above = int(histogram[b + 1 :].sum())
        cutoffs.append(tiering.cutoff_in_bin(in_bin["score"][mask], in_bin["garment_id"][mask], above, rank))
    return cutoffs


def assign(batch: pa.Table, cfg: TierConfig, cutoffs: list[tiering.Cutoff | None] | None) -> pa.Table:
    """Scored rows (an Arrow batch: list columns such as the candidates stay Arrow) plus `tier` and
    `confidence`: by thresholds on the score, by count-mode cutoffs when given, or by thresholds on
    the calibrated confidence (the only mode that fills `confidence`)."""
    scores = batch["score"].to_numpy(zero_copy_only=False)
    confidence = np.full(len(scores), np.nan)
    if cfg.mode == "calibrated":
        confidence = Confidence.from_dict(cfg.calibration)(batch)
        tiers = tiering.by_threshold(confidence, cfg.thresholds)
    elif cutoffs is None:
        tiers = tiering.by_threshold(scores, cfg.thresholds)
    else:
        tiers = tiering.by_cutoffs(scores, batch["garment_id"].to_numpy(zero_copy_only=False), cutoffs)
    batch = batch.append_column("tier", pa.array(tiers.tolist(), pa.string()))
    return batch.append_column("confidence", pa.array(confidence.astype(np.float32)))


def tier_pairs(cfg: MineConfig, scored: dict[int, ShardCommit]) -> ShardCommit:
    """Tier every scored garment of the committed garment shards `scored` (cheap: no model runs), replacing
    any earlier pairs."""
    commits.clear(join(cfg.output, PAIRS_DIR), cfg.storage)
    files = commits.shard_files(cfg.output, scored, SCORED_DIR)
    if not files:  # no garment was scored (all quarantined, or none given)
        return ShardCommit()
    fs = filesystem(cfg.output, cfg.storage)[0]
    scored = ray.data.read_parquet([filesystem(f, cfg.storage)[1] for f in files], filesystem=fs, partitioning=None)
    cutoffs = count_cutoffs(scored, cfg.tiers, cfg.scoring) if cfg.tiers.mode == "count" else None
    tables = ShardTables(
        cfg.output, PAIRS_DIR, PAIRS, TIERING, *GARMENT_IDS, cfg.storage, count_by="tier", value_metric=metrics.PAIRS
    )
    sink = SplitParquetSink(tables)
    kwargs = {"cfg": cfg.tiers, "cutoffs": cutoffs}
    scored.map_batches(assign, fn_kwargs=kwargs, batch_format="pyarrow").write_datasink(sink)
    return sink.shards.get(0, ShardCommit())
