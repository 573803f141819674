"""The mining job: lookbook images -> crops -> sharded index; garments -> scored, tiered pairs.

python -m jobs.mine [overlay.yaml ...] lookbook=PATH garments=PATH output=DIR [key=value ...]
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

import ray
from ray.actor import ActorHandle
from ray.data import ExecutionResources
from ray.data.expressions import col

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import CropDetector, whole_image_crops
from actors.embedder import CropEmbedder
from actors.fused import FusedLookbookModels
from actors.scorer import GarmentScorer
from miner import build_index, commits, metrics, schemas, tier_stage
from miner.commits import ShardCommit
from miner.config import MineConfig, config_hash, load_config, to_yaml
from miner.dataflow import (
    AttemptGuard,
    SplitParquetSink,
    check_unique_ids,
    map_with_actors,
    read_manifest,
    read_parquet_dir,
    start_attempt_ledger,
)
from miner.progress import ProgressLog, StageProgress, log_interval
from miner.schemas import SHARD
from miner.storage import join, make_dirs, write_bytes
from miner.tiering import TIERS, UNMATCHED

CROPS, INDEX, SCORED, PAIRS, QUARANTINE = "crops", "index", "scored", "pairs", "quarantine"
LOOKBOOK, GARMENTS, TIERING = "lookbook", "garments", "tiering"  # job stages: commits, quarantine, metrics
GARMENT_IDS = ("garment_id", "garment_uri")  # id and uri columns of scored garment rows


def describe(ds: ray.data.Dataset, cfg: MineConfig, guard: AttemptGuard) -> ray.data.Dataset:
    """crop rows -> + embedding, caption, attributes, caption_embedding (crop pixels dropped)."""
    ds = map_with_actors(ds, CropEmbedder, cfg.embedder.pool, guard, cfg=cfg.embedder, storage=cfg.storage)
    ds = map_with_actors(
        ds,
        CropDescriber,
        cfg.captioner.pool,
        guard,
        cfg=cfg.captioner,
        embedder=cfg.embedder,
        storage=cfg.storage,
        vocab=cfg.vocab,
    )
    return ds.drop_columns(["crop"])


def split_rows(ds: ray.data.Dataset, cfg: MineConfig) -> ray.data.Dataset:
    """Manifest rows in blocks of `decode.rows_per_task` rows (a streaming repartition: a work
    shard's manifest rows arrive as one block, whatever their number), so the task that decodes a
    block holds at most that many images and the blocks spread over the actors."""
    return ds.repartition(target_num_rows_per_block=cfg.decode.rows_per_task)


def decoded(ds: ray.data.Dataset, cfg: MineConfig, stage: str) -> ray.data.Dataset:
    """Manifest rows -> decoded image rows, `decode.rows_per_task` rows per task."""
    kwargs = {"cfg": cfg.decode, "storage": cfg.storage}
    return split_rows(ds, cfg).map_batches(
        metrics.metered(decode_images, stage),
        fn_kwargs=kwargs,
        batch_size=cfg.decode.batch_size,
        num_cpus=cfg.decode.num_cpus,
    )


def run_in_shards(
    stage: str,
    table: str,
    manifest: ray.data.Dataset,
    pipeline,
    schema,
    ids: tuple[str, str],
    cfg: MineConfig,
) -> tuple[dict[int, ShardCommit], int]:
    """Run `pipeline` over the manifest's uncommitted work shards, `work.shards_per_execution` at a
    time: clear each shard's partial files, write, then commit (with a progress line in the log
    every `progress_interval_s`). Returns every committed shard of the stage and how many this call
    processed."""
    done = commits.committed(cfg.output, stage, cfg.work.shards, cfg.storage)
    pending = [k for k in range(cfg.work.shards) if k not in done]
    quarantine = f"{QUARANTINE}/{stage}"
    interval = log_interval(cfg.progress_interval_s, cfg.progress, sys.stdout.isatty())
    with ProgressLog(StageProgress(stage, cfg.work.shards, len(done)), interval) as progress:
        for start in range(0, len(pending), cfg.work.shards_per_execution):
            group = pending[start : start + cfg.work.shards_per_execution]
            for shard in group:
                for folder in (table, quarantine):
                    commits.clear(join(cfg.output, commits.shard_dir(folder, shard)), cfg.storage)
            sink = SplitParquetSink(cfg.output, table, schema, quarantine, stage, *ids, cfg.storage)
            progress.shards_running = len(group)
            pipeline(manifest.filter(expr=col(SHARD).is_in(group))).write_datasink(sink)
            for shard in group:
                done[shard] = sink.shards.get(shard, ShardCommit())
                commits.commit(cfg.output, stage, shard, done[shard], cfg.storage)
                progress.rows += done[shard].rows
                progress.quarantined += sum(done[shard].quarantined.values())
            progress.shards_done, progress.shards_running = len(done), 0
            print(f"[lookbook-miner] {stage}: committed shards {group} ({len(done)}/{cfg.work.shards})", flush=True)
    return done, len(pending)


def whole_images(ds: ray.data.Dataset, cfg: MineConfig, stage: str) -> ray.data.Dataset:
    """Decoded rows -> one whole-image crop row each (no detector)."""
    return ds.map_batches(metrics.metered(whole_image_crops, stage), fn_kwargs={"cfg": cfg.detector})


def lookbook_pipeline(ds: ray.data.Dataset, cfg: MineConfig, guard: AttemptGuard) -> ray.data.Dataset:
    """Manifest rows -> crop rows with embeddings and descriptions (whole images when the detector
    is disabled; `fusion.lookbook` and `fusion.decode` apply to the detector path only)."""
    if not cfg.detector.enabled:
        return describe(whole_images(decoded(ds, cfg, guard.scope), cfg, guard.scope), cfg, guard)
    if cfg.fusion.lookbook:
        fused_decode = cfg.decode if cfg.fusion.decode else None
        return map_with_actors(
            split_rows(ds, cfg) if fused_decode else decoded(ds, cfg, guard.scope), FusedLookbookModels,
            cfg.fusion.pool, guard, detector=cfg.detector, embedder=cfg.embedder, captioner=cfg.captioner,
            storage=cfg.storage, vocab=cfg.vocab, decode=fused_decode, stage=guard.scope,
        )  # fmt: skip
    ds = decoded(ds, cfg, guard.scope)
    ds = map_with_actors(ds, CropDetector, cfg.detector.pool, guard, cfg=cfg.detector, storage=cfg.storage)
    return describe(ds, cfg, guard)


def garment_pipeline(ds: ray.data.Dataset, cfg: MineConfig, guard: AttemptGuard) -> ray.data.Dataset:
    """Manifest rows -> one scored row per garment (its best crop in the index)."""
    ds = describe(whole_images(decoded(ds, cfg, guard.scope), cfg, guard.scope), cfg, guard)
    return map_with_actors(
        ds, GarmentScorer, cfg.scoring.pool, guard,
        index_dir=join(cfg.output, INDEX), cfg=cfg.scoring, index_cfg=cfg.index, storage=cfg.storage,
    )  # fmt: skip


def mine_lookbook(cfg: MineConfig, ledger: ActorHandle) -> tuple[dict[int, ShardCommit], int]:
    manifest = read_manifest(cfg.lookbook, "image_id", (), cfg.work.shards, cfg.storage)
    schema = lambda batch: schemas.crops(batch["embedding"].shape[1], cfg.embedder.store_dtype)  # noqa: E731
    guard = AttemptGuard(ledger, LOOKBOOK, cfg.work.max_attempts)
    pipeline = lambda ds: lookbook_pipeline(ds, cfg, guard)  # noqa: E731
    return run_in_shards(LOOKBOOK, CROPS, manifest, pipeline, schema, ("image_id", "uri"), cfg)


def score_garments(cfg: MineConfig, ledger: ActorHandle) -> tuple[dict[int, ShardCommit], int]:
    manifest = read_manifest(cfg.garments, "garment_id", ("text",), cfg.work.shards, cfg.storage)
    guard = AttemptGuard(ledger, GARMENTS, cfg.work.max_attempts)
    pipeline = lambda ds: garment_pipeline(ds, cfg, guard)  # noqa: E731
    return run_in_shards(GARMENTS, SCORED, manifest, pipeline, lambda b: schemas.SCORED, GARMENT_IDS, cfg)


def tier_pairs(cfg: MineConfig) -> ShardCommit:
    """Tier every scored garment (cheap: no model runs), replacing any earlier pairs."""
    scored = read_parquet_dir(join(cfg.output, SCORED), cfg.storage)
    cutoffs = tier_stage.count_cutoffs(scored, cfg.tiers, cfg.scoring) if cfg.tiers.mode == "count" else None
    commits.clear(join(cfg.output, PAIRS), cfg.storage)
    sink = SplitParquetSink(
        cfg.output,
        PAIRS,
        lambda b: schemas.PAIRS,
        f"{QUARANTINE}/{TIERING}",
        TIERING,
        *GARMENT_IDS,
        cfg.storage,
        count_by="tier",
        value_metric=metrics.PAIRS,
    )
    kwargs = {"cfg": cfg.tiers, "cutoffs": cutoffs}
    scored.map_batches(tier_stage.assign, fn_kwargs=kwargs, batch_format="pyarrow").write_datasink(sink)
    return sink.shards.get(0, ShardCommit())


def totals(done: dict[int, ShardCommit]) -> tuple[int, dict[str, int]]:
    """Rows, and quarantined rows by reason, over committed shards."""
    reasons: dict[str, int] = {}
    for shard in done.values():
        for reason, count in shard.quarantined.items():
            reasons[reason] = reasons.get(reason, 0) + count
    return sum(s.rows for s in done.values()), reasons


@contextmanager
def timed(times: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    times[stage] = round(time.perf_counter() - start, 2)
    print(f"[lookbook-miner] stage {stage} done in {times[stage]:.1f} s", flush=True)


def configure_data(cfg: MineConfig) -> None:
    """This driver's Ray Data settings: progress bars, and with `object_store_budget_gb` Ray Data's
    object store limit (`ExecutionResources`), which its backpressure budgets against."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = cfg.progress
    if cfg.object_store_budget_gb is not None:
        budget = cfg.object_store_budget_gb * 1024**3
        context.execution_options.resource_limits = ExecutionResources(object_store_memory=budget)


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=True)
    configure_data(cfg)
    times: dict[str, float] = {}
    with timed(times, "validate"):
        counts = {
            "lookbook_images": check_unique_ids(
                read_manifest(cfg.lookbook, "image_id", (), 1, cfg.storage), "lookbook"
            ),
            "garments": check_unique_ids(
                read_manifest(cfg.garments, "garment_id", ("text",), 1, cfg.storage), "garments"
            ),
        }
        make_dirs(cfg.output, cfg.storage)
        commits.claim(cfg.output, config_hash(cfg), cfg.force, cfg.storage)
    ledger = start_attempt_ledger()
    with timed(times, "lookbook"):
        crops, lookbook_processed = mine_lookbook(cfg, ledger)
    with timed(times, "index"):
        manifest = build_index.build(join(cfg.output, CROPS), join(cfg.output, INDEX), cfg.index, cfg.storage)
    with timed(times, "scoring"):
        scored, garments_processed = score_garments(cfg, ledger)
    ray.kill(ledger)
    with timed(times, "tiering"):
        tiers = tier_pairs(cfg)
    crop_rows, lookbook_quarantine = totals(crops)
    scored_rows, garment_quarantine = totals(scored)
    summary = {
        "config_hash": config_hash(cfg),
        "models": models_used(cfg),
        "counts": {
            **counts,
            "crops": crop_rows,
            "index_rows": sum(s.rows for s in manifest.shards),
            "index_shards": len(manifest.shards),
            "garments_scored": scored_rows,
        },
        "tiers": {tier: tiers.by_value.get(tier, 0) for tier in (*TIERS, UNMATCHED)},
        "quarantine": {"lookbook": lookbook_quarantine, "garments": garment_quarantine},
        "work_shards": {
            "total": cfg.work.shards,
            "lookbook_processed": lookbook_processed,
            "garments_processed": garments_processed,
        },
        "seconds": times,
    }
    write_bytes(join(cfg.output, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.storage)
    write_bytes(join(cfg.output, "config.yaml"), to_yaml(cfg).encode(), cfg.storage)
    print_summary(summary, cfg)
    return summary


def models_used(cfg: MineConfig) -> dict[str, dict[str, str]]:
    used = {"detector": cfg.detector.model} if cfg.detector.enabled else {}
    used["embedder"] = cfg.embedder.model
    if cfg.captioner.kind == "generative":
        used["captioner"] = cfg.captioner.model
    return {role: {"spec": m.spec, "sha256": m.sha256 or "", "note": m.note} for role, m in used.items()}


def print_summary(summary: dict, cfg: MineConfig) -> None:
    print(f"\nlookbook-miner: outputs in {cfg.output}")
    for role, model in summary["models"].items():
        print(f"  {role:9s} {model['spec']}" + (f"  ({model['note']})" if model["note"] else ""))
    print("  counts    " + ", ".join(f"{k}={v}" for k, v in summary["counts"].items()))
    print("  tiers     " + ", ".join(f"{t}={summary['tiers'].get(t, 0)}" for t in (*TIERS, UNMATCHED)))
    print("  quarantine " + json.dumps(summary["quarantine"]))


if __name__ == "__main__":
    main()
