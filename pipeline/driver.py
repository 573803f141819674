"""What the job's driver does around its stages: connect to Ray, time each stage, and report the
run (summary.json, config.yaml and the printed summary)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray.data import ExecutionResources

from core.config import MineConfig, config_hash, to_yaml
from core.data_card import CARD, data_card
from core.storage import join, write_bytes
from core.tiering import TIERS, UNMATCHED
from pipeline.commits import ShardCommit

NO_CROPS = (
    "the index is empty: no lookbook image gave a crop (all quarantined, or none given), so every garment is unmatched"
)


def connect(cfg: MineConfig) -> None:
    """Join (or start) the Ray cluster at `ray_address`, then `configure_data`."""
    ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=True)
    configure_data(cfg)


def configure_data(cfg: MineConfig) -> None:
    """This driver's Ray Data settings: progress bars, the Parquet reader (`parquet_datasource_v2`),
    and with `object_store_budget_gb` Ray Data's object store limit (`ExecutionResources`), which
    its backpressure budgets against."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = cfg.progress
    context.use_datasource_v2 = cfg.parquet_datasource_v2
    if cfg.object_store_budget_gb is not None:
        budget = cfg.object_store_budget_gb * 1024**3
        context.execution_options.resource_limits = ExecutionResources(object_store_memory=budget)


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Record the block's wall seconds as `seconds[stage]` and log them."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(time.perf_counter() - start, 2)
    print(f"[lookbook-miner] stage {stage} done in {seconds[stage]:.1f} s", flush=True)


def totals(done: dict[int, ShardCommit]) -> tuple[int, dict[str, int]]:
    """Rows, and quarantined rows by reason, over committed shards."""
    reasons: dict[str, int] = {}
    for shard in done.values():
        for reason, count in shard.quarantined.items():
            reasons[reason] = reasons.get(reason, 0) + count
    return sum(s.rows for s in done.values()), reasons


def models_used(cfg: MineConfig) -> dict[str, dict[str, str]]:
    """Spec, pinned sha256 and note of each model the run loads."""
    used = {"detector": cfg.detector.model} if cfg.detector.enabled else {}
    used["embedder"] = cfg.embedder.model
    if cfg.captioner.kind == "generative":
        used["captioner"] = cfg.captioner.model
    return {role: {"spec": m.spec, "sha256": m.sha256 or "", "note": m.note} for role, m in used.items()}


def report(cfg: MineConfig, summary: dict) -> dict:
    """Complete `summary` with the config hash, the models and any notes (why every garment is
    unmatched), write it as summary.json beside the resolved config.yaml and the data card
    (core.data_card), print it, and return it."""
    summary = {"config_hash": config_hash(cfg), "models": models_used(cfg), **summary}
    if summary["counts"].get("index_rows") == 0:
        summary["notes"] = [NO_CROPS]
    write_bytes(join(cfg.output, "summary.json"), json.dumps(summary, indent=2).encode(), cfg.storage)
    write_bytes(join(cfg.output, "config.yaml"), to_yaml(cfg).encode(), cfg.storage)
    card = data_card(summary["tiers"], summary["models"], summary["config_hash"])
    write_bytes(join(cfg.output, CARD), card.encode(), cfg.storage)
    print(f"\nlookbook-miner: outputs in {cfg.output}")
    for role, model in summary["models"].items():
        print(f"  {role:9s} {model['spec']}" + (f"  ({model['note']})" if model["note"] else ""))
    print("  counts    " + ", ".join(f"{k}={v}" for k, v in summary["counts"].items()))
    print("  tiers     " + ", ".join(f"{t}={summary['tiers'].get(t, 0)}" for t in (*TIERS, UNMATCHED)))
    print("  quarantine " + json.dumps(summary["quarantine"]))
    for stage, operators in summary.get("load_seconds", {}).items():
        loads = (f"{op} {o['actors']}x max {o['max_seconds']:.1f}s" for op, o in operators.items())
        print(f"  loads     {stage}: " + ", ".join(loads))
    for note in summary.get("notes", []):
        print(f"  note      {note}")
    return summary
