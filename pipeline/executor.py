"""The stage executor: runs a job stage over the uncommitted work shards of its manifest, a few
shards per Ray Data execution, and commits each shard once its output is written."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from ray.actor import ActorHandle
from ray.data import Dataset
from ray.data.expressions import col

from core.batches import Batch
from core.config import MineConfig
from core.schemas import QUARANTINE_DIR, SHARD
from core.storage import join
from pipeline import commits
from pipeline.commits import ShardCommit
from pipeline.progress import ProgressLog, StageProgress, log_interval
from pipeline.sink import SplitParquetSink
from pipeline.stage import AttemptGuard

Step = Callable[[Dataset, MineConfig, AttemptGuard], Dataset]  # one operator (or a few) of a pipeline


@dataclass(frozen=True)
class ShardedStage:
    """A job stage: its `name` (commit markers, quarantine folder, metrics, attempt scope), the
    `steps` that turn manifest rows into output rows, the output `table` folder, the `schema` of
    its good rows (or a function of a batch giving it), and the id and uri columns of its output
    rows (what its quarantine rows record)."""

    name: str
    steps: tuple[Step, ...]
    table: str
    schema: pa.Schema | Callable[[Batch], pa.Schema]
    ids: tuple[str, str]


def run_in_shards(
    stage: ShardedStage, manifest: Dataset, inputs: list[str], cfg: MineConfig, ledger: ActorHandle
) -> tuple[dict[int, ShardCommit], int]:
    """Run the stage's steps over the manifest's work shards that are not committed from the same
    `inputs` (a digest per shard, `manifests.shard_digests`), `work.shards_per_execution` at a
    time, under an attempt guard on `ledger`: clear each shard's earlier files, write, then commit
    (with a progress line in the log every `progress_interval_s`). Returns every committed shard
    of the stage and how many this call processed."""
    guard = AttemptGuard(ledger, stage.name, cfg.work.max_attempts)
    committed = commits.committed(cfg.output, stage.name, cfg.work.shards, cfg.storage)
    done = {k: shard for k, shard in committed.items() if shard.inputs == inputs[k]}
    pending = [k for k in range(cfg.work.shards) if k not in done]
    interval = log_interval(cfg.progress_interval_s, cfg.progress, sys.stdout.isatty())
    with ProgressLog(StageProgress(stage.name, cfg.work.shards, len(done)), interval) as progress:
        for start in range(0, len(pending), cfg.work.shards_per_execution):
            group = pending[start : start + cfg.work.shards_per_execution]
            for shard in group:
                for folder in (stage.table, f"{QUARANTINE_DIR}/{stage.name}"):
                    commits.clear(join(cfg.output, commits.shard_dir(folder, shard)), cfg.storage)
            sink = SplitParquetSink(cfg.output, stage.table, stage.schema, stage.name, *stage.ids, cfg.storage)
            progress.shards_running = len(group)
            ds = manifest.filter(expr=col(SHARD).is_in(group))
            for step in stage.steps:
                ds = step(ds, cfg, guard)
            ds.write_datasink(sink)
            for shard in group:
                done[shard] = sink.shards.get(shard, ShardCommit())
                done[shard].inputs = inputs[shard]
                commits.commit(cfg.output, stage.name, shard, done[shard], cfg.storage)
                progress.rows += done[shard].rows
                progress.quarantined += sum(done[shard].quarantined.values())
            progress.shards_done, progress.shards_running = len(done), 0
            print(
                f"[lookbook-miner] {stage.name}: committed shards {group} ({len(done)}/{cfg.work.shards})", flush=True
            )
    return done, len(pending)
