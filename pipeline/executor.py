"""The stage executor: runs a job stage over the uncommitted work shards of its manifest in one
Ray Data execution, and commits each shard once its output is written."""

from __future__ import annotations

import collections
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
from ray.actor import ActorHandle
from ray.data import Dataset

from core.batches import Batch
from core.config import MineConfig
from core.schemas import SHARD
from core.storage import join
from pipeline import commits
from pipeline.commits import ShardCommit
from pipeline.manifests import shard_rows, split_shards
from pipeline.progress import ProgressLog, StageProgress, log_interval
from pipeline.sink import ShardTables, SideTable, merge
from pipeline.stage import AttemptGuard

COMMIT = "commit"  # the column of a write task's result: a shard's ShardCommit as JSON
Step = Callable[[Dataset, MineConfig, AttemptGuard], Dataset]  # one operator (or a few) of a pipeline


@dataclass(frozen=True)
class ShardedStage:
    """A job stage: its `name` (commit markers, quarantine folder, metrics, attempt scope), the
    `steps` that turn manifest rows into output rows, the output `table` folder, the `schema` of
    its good rows (or a function of a batch giving it), and the id and uri columns of its output
    rows (what its quarantine rows record); `side`, where some good rows go instead (`sink.SideTable`)."""

    name: str
    steps: tuple[Step, ...]
    table: str
    schema: pa.Schema | Callable[[Batch], pa.Schema]
    ids: tuple[str, str]
    side: SideTable | None = None


def run_in_shards(
    stage: ShardedStage, manifest: Dataset, cfg: MineConfig, ledger: ActorHandle, salt: str = ""
) -> tuple[dict[int, ShardCommit], int]:
    """Run the stage's steps over the manifest's work shards that are not committed from the same
    input rows and `salt` (a digest per shard, `manifests.split_shards`), under an attempt guard
    on `ledger`, and commit each shard as soon as its last rows are written, all in one Ray Data
    execution, so each actor pool starts (and loads its models) once per stage.

    The manifest is read once, by the pass that splits its rows into a folder per shard under
    `<output>/_work`; the execution reads those folders in shard order with its order kept,
    so the first written block of a later shard tells that every earlier one is complete. Before a
    commit, files in the shard's folders that the commit does not name (an earlier run's, or left
    by a retried write) are deleted. A progress line goes to the log every `progress_interval_s`.
    The work folder is deleted when the call ends. Returns every committed shard of the
    stage and how many this call processed."""
    guard = AttemptGuard(ledger, stage.name, cfg.work.max_attempts)
    work = join(cfg.output, commits.WORK)
    inputs = split_shards(manifest, cfg.work.shards, work, cfg.storage, salt)
    committed = commits.committed(cfg.output, stage.name, cfg.work.shards, cfg.storage)
    done = {k: shard for k, shard in committed.items() if shard.inputs == inputs.digests[k]}
    pending = [k for k in range(cfg.work.shards) if k not in done]
    tables = ShardTables(cfg.output, stage.table, stage.schema, stage.name, *stage.ids, cfg.storage, side=stage.side)
    interval = log_interval(cfg.progress_interval_s, cfg.progress, sys.stdout.isatty())
    try:
        with ProgressLog(StageProgress(stage.name, cfg.work.shards, len(done)), interval) as progress:
            if not pending:
                return done, 0
            written: dict[int, ShardCommit] = {}
            unfinished = collections.deque(pending)

            def commit_through(last: int) -> None:
                """Commit every pending shard up to `last`, in order: all their rows are written."""
                while unfinished and unfinished[0] <= last:
                    shard = unfinished.popleft()
                    done[shard] = written.pop(shard, ShardCommit())
                    done[shard].inputs = inputs.digests[shard]
                    for folder in tables.folders:
                        commits.sweep(cfg.output, commits.shard_dir(folder, shard), done[shard].files, cfg.storage)
                    commits.commit(cfg.output, stage.name, shard, done[shard], cfg.storage)
                    progress.rows += done[shard].rows
                    progress.quarantined += sum(done[shard].quarantined.values())
                    progress.shards_done, progress.shards_running = len(done), len(unfinished)
                    print(
                        f"[lookbook-miner] {stage.name}: committed shard {shard} ({len(done)}/{cfg.work.shards})",
                        flush=True,
                    )

            progress.shards_running = len(pending)
            ds = shard_rows(work, [k for k in pending if inputs.rows[k]], cfg.storage)
            for step in stage.steps:
                ds = step(ds, cfg, guard)
            ds = ds.map_batches(write_parts, fn_kwargs={"tables": tables}, batch_size=None, batch_format="numpy")
            ds.context.execution_options.preserve_order = True
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                per_shard = {int(k): ShardCommit(**json.loads(c)) for k, c in zip(batch[SHARD], batch[COMMIT])}
                merge(written, per_shard)
                commit_through(max(per_shard, default=-1) - 1)
            commit_through(cfg.work.shards)
    finally:
        commits.clear(work, cfg.storage)
    return done, len(pending)


def write_parts(batch: Batch, tables: ShardTables) -> Batch:
    """Write one block's rows (`ShardTables.write`) to a file per shard named by a digest of its
    row ids (a retried task rewrites the same files); per shard, its commit counts as JSON."""
    per_shard = tables.write([batch], commits.part_name(batch[tables.id_column]))
    return {
        SHARD: np.array(list(per_shard), dtype=np.int32),
        COMMIT: np.array([json.dumps(asdict(c)) for c in per_shard.values()], dtype=object),
    }
