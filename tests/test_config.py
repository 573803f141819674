"""Pure tests for core/config.py: defaults, overlays, overrides, validation, config hash."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from core.config import (
    CONF_DIR,
    DecodeConfig,
    MineConfig,
    config_hash,
    load_config,
    validate,
)

REQUIRED = ["lookbook=data/lookbook.parquet", "garments=data/garments.parquet", "output=out/run"]


def _overlay(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("missing", ["lookbook", "garments", "output"])
def test_required_keys_missing(missing: str) -> None:
    args = [a for a in REQUIRED if not a.startswith(missing + "=")]
    with pytest.raises(MissingMandatoryValue, match=missing):
        load_config(args)


def test_defaults_from_conf_and_types() -> None:
    cfg = load_config(REQUIRED)
    assert isinstance(cfg, MineConfig) and isinstance(cfg.decode, DecodeConfig)
    assert (cfg.lookbook, cfg.garments, cfg.output) == ("data/lookbook.parquet", "data/garments.parquet", "out/run")
    defaults = yaml.safe_load((CONF_DIR / "mine.yaml").read_text())
    assert cfg.scoring.lambda_vlm == defaults["scoring"]["lambda_vlm"]
    assert cfg.tiers.thresholds == defaults["tiers"]["thresholds"]
    assert cfg.decode.formats == defaults["decode"]["formats"]
    assert cfg.index.shards == defaults["index"]["shards"]


def test_vocab_comes_from_conf_vocab_yaml() -> None:
    cfg = load_config(REQUIRED)
    assert cfg.vocab == yaml.safe_load((CONF_DIR / "vocab.yaml").read_text())
    assert isinstance(cfg.vocab, dict) and all(isinstance(v, list) for v in cfg.vocab.values())


def test_dotlist_overrides() -> None:
    cfg = load_config([*REQUIRED, "index.shards=7", "scoring.lambda_vlm=0.25", "tiers.counts.high=3"])
    assert cfg.index.shards == 7
    assert cfg.scoring.lambda_vlm == 0.25
    assert cfg.tiers.counts["high"] == 3
    assert cfg.tiers.counts["mid"] == yaml.safe_load((CONF_DIR / "mine.yaml").read_text())["tiers"]["counts"]["mid"]
    # the later of two overrides of one key wins
    assert load_config([*REQUIRED, "index.shards=2", "index.shards=5"]).index.shards == 5


def test_overlay_files_in_order_then_dotlist(tmp_path: Path) -> None:
    first = _overlay(tmp_path / "first.yaml", "index: {shards: 3, nprobe: 4}\nscoring: {top_k: 9}\n")
    second = _overlay(tmp_path / "second.yaml", "index: {shards: 6}\n")
    cfg = load_config([*REQUIRED, first, second])
    assert (cfg.index.shards, cfg.index.nprobe, cfg.scoring.top_k) == (6, 4, 9)
    cfg = load_config([*REQUIRED, second, first])
    assert cfg.index.shards == 3
    # key=value overrides come after every file, wherever they stand on the command line
    cfg = load_config(["index.shards=11", first, *REQUIRED, second])
    assert (cfg.index.shards, cfg.index.nprobe) == (11, 4)


def test_overlay_can_supply_required_values(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path / "paths.yml", "lookbook: a.parquet\ngarments: b.parquet\noutput: out\n")
    cfg = load_config([overlay])
    assert (cfg.lookbook, cfg.garments, cfg.output) == ("a.parquet", "b.parquet", "out")


def test_conf_demo_overlay_applies() -> None:
    demo = yaml.safe_load((CONF_DIR / "demo.yaml").read_text())
    cfg = load_config([*REQUIRED, str(CONF_DIR / "demo.yaml")])
    assert cfg.index.shards == demo["index"]["shards"]
    assert cfg.tiers.counts == demo["tiers"]["counts"]


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(OmegaConfBaseException):
        load_config([*REQUIRED, "index.shardz=2"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tiers.mode=top", "tiers.mode"),
        ("tiers.mode=calibrated", "tiers.calibration"),  # a calibrated mode needs the fitted model
        ("tiers.delta=0", "tiers.delta"),
        ("tiers.target_precision.high=1.5", "tiers.target_precision"),
        ("captioner.kind=llava", "captioner.kind"),
        ("detector.no_detection=drop", "detector.no_detection"),
        ("detector.image_size=300", "detector.image_size"),  # letterboxed tensors must fit YOLO's stride
        ("index.shards=0", "index.shards"),
        ("scoring.top_k=0", "top_k"),
        ("scoring.vlm_prefilter=21", "vlm_prefilter"),  # more than top_k (20) candidates
        ("decode.device=cuda", "fusion.decode"),  # decode tasks hold no GPU: only the fused actor does
    ],
)
def test_validate_errors_from_overrides(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config([*REQUIRED, override])


@pytest.mark.parametrize("table", ["thresholds", "counts", "target_precision"])
def test_validate_missing_tier_name(table: str) -> None:
    cfg = load_config(REQUIRED)
    del getattr(cfg.tiers, table)["mid"]
    with pytest.raises(ValueError, match=f"tiers.{table}"):
        validate(cfg)


def test_validate_extra_tier_name() -> None:
    with pytest.raises(ValueError, match="tiers.thresholds"):
        load_config([*REQUIRED, "tiers.thresholds.top=0.99"])
    cfg = load_config(REQUIRED)
    cfg.tiers.counts["top"] = 1
    with pytest.raises(ValueError, match="tiers.counts"):
        validate(cfg)


def test_validate_prompt_missing_for_vocab_attribute() -> None:
    cfg = load_config(REQUIRED)
    cfg.vocab["fabric"] = ["denim", "silk"]
    with pytest.raises(ValueError, match="fabric"):
        validate(cfg)


def test_config_hash_stable_and_sensitive() -> None:
    a, b = load_config(REQUIRED), load_config(list(REQUIRED))
    assert a == b
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    changed = load_config([*REQUIRED, "scoring.top_k=21"])
    assert config_hash(changed) != config_hash(a)
    replaced = dataclasses.replace(a, output="out/other")
    assert config_hash(replaced) != config_hash(a)
    assert config_hash(dataclasses.replace(replaced, output=a.output)) == config_hash(a)


@pytest.mark.parametrize("gpus", [1, 8, 64])
def test_gpu_size_overlays_fill_exactly_their_gpus(gpus: int) -> None:
    cfg = load_config([str(CONF_DIR / "gpu.yaml"), str(CONF_DIR / f"gpu-{gpus}.yaml"), *REQUIRED])
    assert cfg.fusion.lookbook and cfg.fusion.pool.max_size * cfg.fusion.pool.num_gpus == gpus
    garment_stage = [cfg.embedder.pool, cfg.captioner.pool]  # the stage after the lookbook one
    assert sum(p.max_size * p.num_gpus for p in garment_stage) == gpus
    for pool in (cfg.fusion.pool, *garment_stage, cfg.scoring.pool):
        assert 1 <= pool.min_size <= pool.max_size


def test_ray_data_settings_reach_the_context_and_are_not_hashed() -> None:
    import ray

    from pipeline.driver import configure_data

    overrides = ["object_store_budget_gb=1.5", "progress=false", "parquet_datasource_v2=true"]
    budgeted = load_config([*REQUIRED, *overrides])
    assert config_hash(budgeted) == config_hash(load_config(REQUIRED))
    context = ray.data.DataContext.get_current()
    saved = context.execution_options.resource_limits, context.use_datasource_v2, context.enable_progress_bars
    try:
        configure_data(budgeted)
        assert context.execution_options.resource_limits.object_store_memory == 1.5 * 1024**3
        assert context.enable_progress_bars is False
        assert context.use_datasource_v2 is True
        configure_data(load_config(REQUIRED))
        assert context.use_datasource_v2 is False
    finally:
        context.execution_options.resource_limits, context.use_datasource_v2, context.enable_progress_bars = saved


def test_models_used_names_the_models_a_run_loads() -> None:
    from pipeline.driver import models_used

    assert set(models_used(load_config(REQUIRED))) == {"detector", "embedder"}
    assert set(models_used(load_config([*REQUIRED, "detector.enabled=false"]))) == {"embedder"}
    generative = models_used(load_config([*REQUIRED, "captioner.kind=generative", "captioner.model.spec=org/blip"]))
    assert generative["captioner"] == {"spec": "org/blip", "sha256": "", "note": ""}


def test_the_submission_id_follows_the_manifests(tmp_path) -> None:
    """#13, item 6: rows appended to a manifest were refused as already SUCCEEDED."""
    from jobs.submit import submission_id

    manifest = tmp_path / "lookbook.csv"
    manifest.write_text("image_id,uri\na,/a.jpg\n")
    args = [f"lookbook={manifest}", f"garments={manifest}", f"output={tmp_path / 'out'}"]
    first = submission_id(args)
    assert submission_id(args) == first
    manifest.write_text("image_id,uri\na,/a.jpg\nb,/b.jpg\n")
    assert submission_id(args) != first
