"""The mining job: lookbook images -> crops -> sharded index; garments -> scored, tiered pairs.

python -m jobs.mine [overlay.yaml ...] lookbook=PATH garments=PATH output=DIR [key=value ...]

validate -> lookbook (decode, detect, embed, describe: crops) -> index (FAISS shards over the
crops) -> scoring (decode, embed, describe, search: one scored row per garment) -> tiering
(pairs). Every input row ends in its stage's table or in quarantine/<stage>.
"""

from __future__ import annotations

import sys
from functools import partial

import ray
from ray.actor import ActorHandle
from ray.data import Dataset

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import CropDetector, whole_image_crops
from actors.embedder import CropEmbedder
from actors.fused import FusedLookbookModels
from actors.scorer import ShardCandidates, best_match
from core import schemas
from core.config import MineConfig, config_hash, load_config
from core.index import IndexManifest, load_manifest
from core.schemas import CROPS_DIR, GARMENT_IDS, GARMENTS, INDEX_DIR, LOOKBOOK, SCENE_CLASS, SCENES_DIR, SCORED_DIR
from core.steps import DECODE, POSTPROCESS, PREPROCESS
from core.storage import join, make_dirs
from core.tiering import TIERS, UNMATCHED
from pipeline import commits, index_build
from pipeline.commits import ShardCommit
from pipeline.driver import connect, report, timed, totals
from pipeline.executor import ShardedStage, Step, run_in_shards
from pipeline.manifests import check_unique_ids, read_manifest
from pipeline.metrics import CROPS_DETECTED, CROPS_EMBEDDED, GARMENTS_SCORED, IMAGES_READ
from pipeline.sink import SideTable
from pipeline.stage import AttemptGuard, attempt_ledger, map_actors, map_tasks
from pipeline.tier_passes import tier_pairs


def split_rows(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    """Manifest rows in blocks of `decode.rows_per_task` (a work shard arrives as one block), so a
    task that decodes a block holds at most that many images and the blocks spread over actors."""
    return ds.repartition(target_num_rows_per_block=cfg.decode.rows_per_task)


def decode(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    ds, d = split_rows(ds, cfg, guard), cfg.decode
    return map_tasks(
        ds, decode_images, guard, DECODE, (IMAGES_READ,), d.batch_size, d.num_cpus, cfg=d, storage=cfg.storage
    )


def whole_images(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    return map_tasks(ds, whole_image_crops, guard, PREPROCESS, (CROPS_DETECTED,), cfg=cfg.detector)


def detect(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    return map_actors(
        ds, CropDetector, cfg.detector.pool, guard, (CROPS_DETECTED,), cfg=cfg.detector, storage=cfg.storage
    )


def embed(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    return map_actors(
        ds, CropEmbedder, cfg.embedder.pool, guard, (CROPS_EMBEDDED,), cfg=cfg.embedder, storage=cfg.storage
    )


def describe(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    models = {"cfg": cfg.captioner, "embedder": cfg.embedder, "storage": cfg.storage, "vocab": cfg.vocab}
    return map_actors(ds, CropDescriber, cfg.captioner.pool, guard, **models).drop_columns(["crop"])


def detect_embed_describe(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    """`fusion.lookbook`: the three models in one actor (with `fusion.decode` the decoding too)."""
    decoding = cfg.decode if cfg.fusion.decode else None
    counters = (IMAGES_READ,) * bool(decoding) + (CROPS_DETECTED, CROPS_EMBEDDED)
    models = {"detector": cfg.detector, "embedder": cfg.embedder, "captioner": cfg.captioner, "vocab": cfg.vocab}
    return map_actors(
        ds, FusedLookbookModels, cfg.fusion.pool, guard, counters, storage=cfg.storage, decode=decoding, **models
    )


def search(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    """Garments stream through one actor pool per index shard, each adding its shard's candidates."""
    index = {"index_dir": join(cfg.output, INDEX_DIR), "index_cfg": cfg.index, "storage": cfg.storage}
    for shard in range(len(load_manifest(index["index_dir"], cfg.storage).shards)):
        name = f"IndexShard{shard:03d}"
        ds = map_actors(ds, ShardCandidates, cfg.scoring.pool, guard, name=name, shard=shard, cfg=cfg.scoring, **index)
    return ds


def score(ds: Dataset, cfg: MineConfig, guard: AttemptGuard) -> Dataset:
    return map_tasks(ds, best_match, guard, POSTPROCESS, (GARMENTS_SCORED,), cfg=cfg.scoring)


def lookbook_steps(cfg: MineConfig) -> tuple[Step, ...]:
    """Manifest rows -> described crop rows (one whole-image crop per image without the detector)."""
    if not cfg.detector.enabled:
        return decode, whole_images, embed, describe
    if cfg.fusion.lookbook:
        return (split_rows if cfg.fusion.decode else decode), detect_embed_describe
    return decode, detect, embed, describe


GARMENT_STEPS = (decode, whole_images, embed, describe, search, score)  # -> one scored row per garment


def validate(cfg: MineConfig) -> dict[str, int]:
    """Row counts of both manifests (unique ids checked); the output folder claimed for this config."""
    counts = {
        "lookbook_images": check_unique_ids(read_manifest(cfg.lookbook, "image_id", (), 1, cfg.storage), LOOKBOOK),
        "garments": check_unique_ids(read_manifest(cfg.garments, "garment_id", ("text",), 1, cfg.storage), GARMENTS),
    }
    make_dirs(cfg.output, cfg.storage)
    commits.claim(cfg.output, config_hash(cfg), cfg.force, cfg.storage)
    return counts


def mine_lookbook(cfg: MineConfig, ledger: ActorHandle) -> tuple[dict[int, ShardCommit], int]:
    manifest = read_manifest(cfg.lookbook, "image_id", (), cfg.work.shards, cfg.storage)
    schema = partial(schemas.crops_of, dtype=cfg.embedder.store_dtype)
    scenes = SideTable(SCENES_DIR, schemas.SCENES, "det_class", SCENE_CLASS)
    stage = ShardedStage(LOOKBOOK, lookbook_steps(cfg), CROPS_DIR, schema, ("image_id", "uri"), scenes)
    return run_in_shards(stage, manifest, cfg, ledger)


def score_garments(cfg: MineConfig, ledger: ActorHandle, index: IndexManifest) -> tuple[dict[int, ShardCommit], int]:
    """Every garment shard is redone when its rows or the index (its crop files) changed."""
    manifest = read_manifest(cfg.garments, "garment_id", ("text",), cfg.work.shards, cfg.storage)
    stage = ShardedStage(GARMENTS, GARMENT_STEPS, SCORED_DIR, schemas.SCORED, GARMENT_IDS)
    return run_in_shards(stage, manifest, cfg, ledger, salt=index.source)


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    connect(cfg)
    seconds: dict[str, float] = {}
    with timed(seconds, "validate"):
        counts = validate(cfg)
    with attempt_ledger() as ledger:
        with timed(seconds, "lookbook"):
            crops, lookbook_processed = mine_lookbook(cfg, ledger)
        with timed(seconds, "index"):
            index = index_build.index_run(cfg, crops)
        with timed(seconds, "scoring"):
            scored, garments_processed = score_garments(cfg, ledger, index)
        load_seconds = ray.get(ledger.load_seconds.remote())
    with timed(seconds, "tiering"):
        tiers = tier_pairs(cfg, scored)
    (crop_rows, lookbook_quarantine), (scored_rows, garment_quarantine) = totals(crops), totals(scored)
    scenes = sum(shard.side_rows for shard in crops.values())
    counts.update(crops=crop_rows, scenes=scenes, index_rows=index.rows, index_shards=len(index.shards))
    counts.update(garments_scored=scored_rows)
    processed = {"lookbook_processed": lookbook_processed, "garments_processed": garments_processed}
    return report(cfg, {
        "counts": counts,
        "tiers": {tier: tiers.by_value.get(tier, 0) for tier in (*TIERS, UNMATCHED)},
        "quarantine": {LOOKBOOK: lookbook_quarantine, GARMENTS: garment_quarantine},
        "work_shards": {"total": cfg.work.shards, **processed},
        "index": {
            "type": index.index_type, "shards": len(index.shards), "nprobe": index.nprobe,
            "recall_at_10": index.params.get("measured_recall"), "generation": index.generation,
        },
        "seconds": seconds,
        "load_seconds": load_seconds,
    })  # fmt: skip


if __name__ == "__main__":
    main()
