"""The mining job: lookbook images -> crops -> sharded index; garments -> scored, tiered pairs.

python -m jobs.mine [overlay.yaml ...] lookbook=PATH garments=PATH output=DIR [key=value ...]
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

import ray

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import CropDetector, whole_image_crops
from actors.embedder import CropEmbedder
from actors.scorer import GarmentScorer
from miner import build_index, schemas, tier_stage
from miner.config import MineConfig, config_hash, load_config, to_yaml
from miner.dataflow import SplitParquetSink, check_unique_ids, map_with_actors, read_manifest, read_parquet_dir
from miner.storage import join, make_dirs, write_bytes
from miner.tiering import TIERS, UNMATCHED

CROPS, INDEX, SCORED, PAIRS, QUARANTINE = "crops", "index", "scored", "pairs", "quarantine"


def describe(ds: ray.data.Dataset, cfg: MineConfig) -> ray.data.Dataset:
    """crop rows -> + embedding, caption, attributes, caption_embedding (crop pixels dropped)."""
    ds = map_with_actors(ds, CropEmbedder, cfg.embedder.pool, cfg=cfg.embedder, storage=cfg.storage)
    ds = map_with_actors(
        ds,
        CropDescriber,
        cfg.captioner.pool,
        cfg=cfg.captioner,
        embedder=cfg.embedder,
        storage=cfg.storage,
        vocab=cfg.vocab,
    )
    return ds.drop_columns(["crop"])


def decoded(ds: ray.data.Dataset, cfg: MineConfig) -> ray.data.Dataset:
    kwargs = {"cfg": cfg.decode, "storage": cfg.storage}
    return ds.map_batches(
        decode_images, fn_kwargs=kwargs, batch_size=cfg.decode.batch_size, num_cpus=cfg.decode.num_cpus
    )


def write(
    ds, out: str, schema, stage: str, ids: tuple[str, str], cfg: MineConfig, count_by: str | None = None
) -> SplitParquetSink:
    """Write good rows to `out`, quarantined ones to quarantine/<stage>; ids: the (id, uri) columns."""
    quarantine = join(cfg.output, QUARANTINE, stage)
    sink = SplitParquetSink(join(cfg.output, out), schema, quarantine, stage, *ids, cfg.storage, count_by)
    ds.write_datasink(sink)
    return sink


def mine_lookbook(cfg: MineConfig) -> SplitParquetSink:
    ds = decoded(read_manifest(cfg.lookbook, "image_id", (), cfg.storage), cfg)
    ds = describe(map_with_actors(ds, CropDetector, cfg.detector.pool, cfg=cfg.detector, storage=cfg.storage), cfg)
    return write(
        ds,
        CROPS,
        lambda batch: schemas.crops(batch["embedding"].shape[1], cfg.embedder.store_dtype),
        "lookbook",
        ("image_id", "uri"),
        cfg,
    )


def score_garments(cfg: MineConfig) -> SplitParquetSink:
    ds = decoded(read_manifest(cfg.garments, "garment_id", ("text",), cfg.storage), cfg)
    ds = describe(ds.map_batches(whole_image_crops, fn_kwargs={"cfg": cfg.detector}), cfg)
    ds = map_with_actors(
        ds,
        GarmentScorer,
        cfg.scoring.pool,
        index_dir=join(cfg.output, INDEX),
        cfg=cfg.scoring,
        index_cfg=cfg.index,
        storage=cfg.storage,
    )
    return write(ds, SCORED, lambda batch: schemas.SCORED, "garments", ("garment_id", "garment_uri"), cfg)


def tier_pairs(cfg: MineConfig) -> SplitParquetSink:
    scored = read_parquet_dir(join(cfg.output, SCORED), cfg.storage)
    cutoffs = tier_stage.count_cutoffs(scored, cfg.tiers, cfg.scoring) if cfg.tiers.mode == "count" else None
    ds = scored.map_batches(tier_stage.assign, fn_kwargs={"cfg": cfg.tiers, "cutoffs": cutoffs})
    return write(ds, PAIRS, lambda batch: schemas.PAIRS, "tiering", ("garment_id", "garment_uri"), cfg, count_by="tier")


@contextmanager
def timed(times: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    times[stage] = round(time.perf_counter() - start, 2)
    print(f"[lookbook-miner] stage {stage} done in {times[stage]:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    make_dirs(cfg.output, cfg.storage)
    times: dict[str, float] = {}
    with timed(times, "validate"):
        counts = {
            "lookbook_images": check_unique_ids(read_manifest(cfg.lookbook, "image_id", (), cfg.storage), "lookbook"),
            "garments": check_unique_ids(read_manifest(cfg.garments, "garment_id", ("text",), cfg.storage), "garments"),
        }
    with timed(times, "lookbook"):
        crops = mine_lookbook(cfg)
    with timed(times, "index"):
        manifest = build_index.build(join(cfg.output, CROPS), join(cfg.output, INDEX), cfg.index, cfg.storage)
    with timed(times, "scoring"):
        scored = score_garments(cfg)
    with timed(times, "tiering"):
        tiers = tier_pairs(cfg)
    summary = {
        "config_hash": config_hash(cfg),
        "models": models_used(cfg),
        "counts": {
            **counts,
            "crops": crops.counts.rows,
            "index_rows": sum(s.rows for s in manifest.shards),
            "index_shards": len(manifest.shards),
            "garments_scored": scored.counts.rows,
        },
        "tiers": {tier: tiers.counts.by_value.get(tier, 0) for tier in (*TIERS, UNMATCHED)},
        "quarantine": {"lookbook": dict(crops.counts.quarantined), "garments": dict(scored.counts.quarantined)},
        "seconds": times,
    }
    write_bytes(join(cfg.output, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.storage)
    write_bytes(join(cfg.output, "config.yaml"), to_yaml(cfg).encode(), cfg.storage)
    print_summary(summary, cfg)
    return summary


def models_used(cfg: MineConfig) -> dict[str, dict[str, str]]:
    used = {"detector": cfg.detector.model, "embedder": cfg.embedder.model}
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
