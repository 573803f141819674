"""The tiering stage: every scored garment gets its crop margin and its tier, streamed with Ray Data.

Crop margins (`core.crop_rivals`) take one hash repartition by crop_id of the pairs together with
every garment's candidates (its claims on crops); the pairs with their margins are then
materialised in the object store for the passes below. Threshold mode is one map. Count mode is
exact without gathering all keys anywhere: pass 1 sums per-batch histograms of the tier keys; pass
2 gathers only the (key, garment_id) pairs inside the few bins that hold a tier boundary; the
cutoffs then tier every row in a map.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import Dataset

from core import crop_rivals, tiering
from core.confidence import Confidence
from core.config import MineConfig, ScoringConfig, TierConfig
from core.schemas import GARMENT_IDS, PAIRS, PAIRS_DIR, SCORED_DIR, TIERING
from core.storage import filesystem, join
from pipeline import commits, metrics
from pipeline.commits import ShardCommit
from pipeline.sink import ShardTables, SplitParquetSink


def key_range(cfg: TierConfig, scoring: ScoringConfig) -> tuple[float, float]:
    """The range of the tier key (`tiering.key_range`): every score lies in [-w, w],
    w = |lambda_vlm| + |lambda_siglip| (cosines lie in [-1, 1])."""
    return tiering.key_range(cfg.key, abs(scoring.lambda_vlm) + abs(scoring.lambda_siglip))


def _floats(batch: dict | pa.Table, name: str) -> np.ndarray | None:
    if name not in (batch.column_names if isinstance(batch, pa.Table) else batch):
        return None
    column = batch[name]
    return column.to_numpy(zero_copy_only=False) if isinstance(column, pa.ChunkedArray | pa.Array) else column


def _keys(batch: dict | pa.Table, cfg: TierConfig) -> np.ndarray:
    return tiering.tier_key(_floats(batch, "score"), _floats(batch, "crop_margin"), cfg.key)


def _bins(keys: np.ndarray, cfg: TierConfig, scoring: ScoringConfig) -> np.ndarray:
    return tiering.score_bins(np.nan_to_num(keys, nan=0.0), *key_range(cfg, scoring), cfg.histogram_bins)


def _histogram(batch: dict, cfg: TierConfig, scoring: ScoringConfig) -> dict:
    keys = _keys(batch, cfg)
    counts = np.bincount(_bins(keys, cfg, scoring)[~np.isnan(keys)], minlength=cfg.histogram_bins)
    return {"histogram": counts[None, :]}


def _in_bins(batch: dict, wanted: list[int], cfg: TierConfig, scoring: ScoringConfig) -> dict:
    keys = _keys(batch, cfg)
    bins = _bins(keys, cfg, scoring)
    keep = ~np.isnan(keys) & np.isin(bins, wanted)
    return {"bin": bins[keep], "score": keys[keep], "garment_id": batch["garment_id"][keep]}


def count_cutoffs(scored: Dataset, cfg: TierConfig, scoring: ScoringConfig) -> list[tiering.Cutoff | None]:
    """The exact (key, garment_id) cutoff of each tier in count mode (None: tier not full)."""
    columns = scored.select_columns(["garment_id", "score", *(["crop_margin"] if cfg.key != "score" else [])])
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
    `confidence`: by thresholds on the tier key, by count-mode cutoffs when given, or by thresholds on
    the calibrated confidence (the only mode that fills `confidence`)."""
    keys = _keys(batch, cfg)
    confidence = np.full(len(keys), np.nan)
    if cfg.mode == "calibrated":
        confidence = Confidence.from_dict(cfg.calibration)(batch)
        tiers = tiering.by_threshold(confidence, cfg.thresholds)
    elif cutoffs is None:
        tiers = tiering.by_threshold(keys, cfg.thresholds)
    else:
        tiers = tiering.by_cutoffs(keys, batch["garment_id"].to_numpy(zero_copy_only=False), cutoffs)
    batch = batch.append_column("tier", pa.array(tiers.tolist(), pa.string()))
    return batch.append_column("confidence", pa.array(confidence.astype(np.float32)))


PAIR = "_pair"  # true on the pair rows among the claims that with_crop_margins co-locates by crop


def _pairs_and_claims(batch: pa.Table, scoring: ScoringConfig) -> pa.Table:
    """Scored rows in; the same rows (PAIR true) and every claim of their garments (CLAIMS columns,
    the others null, PAIR false) out, in one table."""
    claimed = crop_rivals.claims(batch, scoring.lambda_vlm, scoring.lambda_siglip)
    pairs = batch.append_column(PAIR, pa.array(np.ones(batch.num_rows, bool)))
    claimed = claimed.append_column(PAIR, pa.array(np.zeros(claimed.num_rows, bool)))
    return pa.concat_tables([pairs, claimed], promote_options="default")


def _margins_in_partition(partition: pa.Table) -> pa.Table:
    """One hash partition by crop_id of `_pairs_and_claims` rows in (every claim on each of its
    crops), its pairs with their `crop_margin` out."""
    is_pair = partition[PAIR]
    pairs = partition.filter(is_pair).drop_columns([PAIR])
    claimed = partition.filter(pc.invert(is_pair)).select(crop_rivals.CLAIMS.names)
    top = crop_rivals.top_two(claimed)
    margin = crop_rivals.margins(pairs["garment_id"], pairs["crop_id"], _floats(pairs, "score"), top)
    return pairs.append_column("crop_margin", pa.array(margin))


def with_crop_margins(scored: Dataset, scoring: ScoringConfig, partitions: int) -> Dataset:
    """`scored` (SCORED rows) plus each pair's `crop_margin` (`core.crop_rivals`), by one hash
    repartition by crop_id into `partitions` blocks of the pairs together with every claim of every
    garment: a partition then holds each of its crops' pairs and claims (what map_groups relies on),
    and is computed in one vectorised call."""
    both = scored.map_batches(_pairs_and_claims, fn_kwargs={"scoring": scoring}, batch_format="pyarrow")
    grouped = both.repartition(partitions, keys=["crop_id"])
    return grouped.map_batches(_margins_in_partition, batch_size=None, batch_format="pyarrow")


def tier_pairs(cfg: MineConfig, scored: dict[int, ShardCommit]) -> ShardCommit:
    """Tier every scored garment of the committed garment shards `scored` (cheap: no model runs), replacing
    any earlier pairs."""
    commits.clear(join(cfg.output, PAIRS_DIR), cfg.storage)
    files = commits.shard_files(cfg.output, scored, SCORED_DIR)
    if not files:  # no garment was scored (all quarantined, or none given)
        return ShardCommit()
    fs = filesystem(cfg.output, cfg.storage)[0]
    scored = ray.data.read_parquet([filesystem(f, cfg.storage)[1] for f in files], filesystem=fs, partitioning=None)
    scored = with_crop_margins(scored, cfg.scoring, partitions=len(files)).materialize()
    cutoffs = count_cutoffs(scored, cfg.tiers, cfg.scoring) if cfg.tiers.mode == "count" else None
    tables = ShardTables(
        cfg.output, PAIRS_DIR, PAIRS, TIERING, *GARMENT_IDS, cfg.storage, count_by="tier", value_metric=metrics.PAIRS
    )
    sink = SplitParquetSink(tables)
    kwargs = {"cfg": cfg.tiers, "cutoffs": cutoffs}
    scored.map_batches(assign, fn_kwargs=kwargs, batch_format="pyarrow").write_datasink(sink)
    return sink.shards.get(0, ShardCommit())
