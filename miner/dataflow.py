"""Ray Data plumbing shared by the jobs: manifests in, actor-pool arguments, split Parquet sinks.

Every stage's rows carry `reason` / `error`; the sink writes good rows to the output table and
the others to the quarantine table, so each input row ends in exactly one of them.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.actor import ActorHandle
from ray.data import ActorPoolStrategy, Dataset
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink
from ray.data.expressions import col
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from miner import arrow, metrics
from miner.attempts import AttemptLedger, crash_error, plan_attempts, run_plan
from miner.commits import ShardCommit, shard_dir, shard_of
from miner.config import PoolConfig, StorageConfig
from miner.images import WORKER_CRASH
from miner.schemas import ERROR, QUARANTINE, REASON, ROW_IDS, SHARD
from miner.storage import filesystem, join, redact, write_bytes

DUPLICATES_SHOWN = 5  # duplicate ids named in a ManifestError
MANIFEST_READERS = {".parquet": ray.data.read_parquet, ".csv": ray.data.read_csv, ".jsonl": ray.data.read_json}


class ManifestError(ValueError):
    """A manifest is unusable: missing columns, null or duplicate ids, unknown format."""


def read_manifest(uri: str, id_column: str, optional: tuple[str, ...], shards: int, storage: StorageConfig) -> Dataset:
    """The manifest as rows of string columns (`image_id`, `uri`, *optional) plus the work `shard`
    of each row (see `commits.shard_of`), whatever its format.

    `id_column` is renamed to `image_id` so garments and lookbook images share one pipeline;
    optional columns absent from the file are filled with "".
    """
    suffix = os.path.splitext(uri)[1].lower()
    if suffix not in MANIFEST_READERS:
        raise ManifestError(f"manifest {uri}: unknown format {suffix!r}, expected one of {sorted(MANIFEST_READERS)}")
    fs, path = filesystem(uri, storage)
    ds = MANIFEST_READERS[suffix](path, filesystem=fs)
    present = set(ds.schema().names)
    if missing := {id_column, "uri"} - present:
        raise ManifestError(f"manifest {uri} lacks columns {sorted(missing)} (has {sorted(present)})")
    keep = [id_column, "uri", *(c for c in optional if c in present)]
    fill = tuple(c for c in optional if c not in present)
    kwargs = {"id_column": id_column, "fill": fill, "shards": shards}
    return ds.select_columns(keep).map_batches(_normalise_manifest, fn_kwargs=kwargs, batch_format="pyarrow")


def _normalise_manifest(batch: pa.Table, id_column: str, fill: tuple[str, ...], shards: int) -> pa.Table:
    if batch[id_column].null_count or batch["uri"].null_count:
        raise ManifestError(f"manifest has rows with a null {id_column} or uri")
    columns = {"image_id": batch[id_column].cast(pa.string()), "uri": batch["uri"].cast(pa.string())}
    for name in batch.column_names:
        if name not in (id_column, "uri"):
            columns[name] = batch[name].cast(pa.string()).fill_null("")
    for name in fill:
        columns[name] = pa.array([""] * len(batch), pa.string())
    columns[SHARD] = pa.array(shard_of(columns["image_id"].to_numpy(zero_copy_only=False), shards))
    return pa.table(columns)


def check_unique_ids(ds: Dataset, label: str, id_column: str = "image_id", rows_per_partition: int = 100_000) -> int:
    """The number of rows; raises ManifestError naming up to five ids that occur more than once.

    The id column is read once. Up to `rows_per_partition` ids, one task counts them (a shuffle's
    actors would cost more than the count); above, a distributed group-by with one shuffle
    partition per `rows_per_partition` ids (at most 200).
    """
    ids = ds.select_columns([id_column]).materialize()
    rows = ids.count()
    if rows <= rows_per_partition:
        repeated = ray.get(_repeated_ids.remote(id_column, DUPLICATES_SHOWN, *ids.to_arrow_refs()))
    else:
        counts = ids.groupby(id_column, num_partitions=min(200, rows // rows_per_partition)).count()
        found = counts.filter(expr=col("count()") > 1).take(DUPLICATES_SHOWN)
        repeated = [(row[id_column], row["count()"]) for row in found]
    if repeated:
        shown = ", ".join(f"{value!r} (x{count})" for value, count in repeated)
        raise ManifestError(f"{label} manifest has duplicate ids: {shown}")
    return rows


@ray.remote
def _repeated_ids(id_column: str, limit: int, *blocks: pa.Table) -> list[tuple[str, int]]:
    """Up to `limit` (id, count) of the ids that occur more than once in the blocks' `id_column`."""
    counts = pc.value_counts(pa.concat_tables(blocks)[id_column])
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))[:limit]
    return [(row["values"], row["counts"]) for row in repeated.to_pylist()]


def read_parquet_dir(uri: str, storage: StorageConfig) -> Dataset:
    """A folder of Parquet files written by a SplitParquetSink, as a dataset (the `shard=K`
    folder names are not read as a column)."""
    fs, path = filesystem(uri, storage)
    return ray.data.read_parquet(path, filesystem=fs, partitioning=None)


@dataclass(frozen=True)
class AttemptGuard:
    """Bounds the attempts at each row of a pipeline's actor stages (see `miner.attempts`).

    `ledger` is the job's AttemptLedger actor (`start_attempt_ledger`); `scope` names the
    pipeline, within which row ids are unique; a row whose attempts killed the worker
    `max_attempts` times is quarantined as `worker_crash`.
    """

    ledger: ActorHandle
    scope: str
    max_attempts: int


def start_attempt_ledger() -> ActorHandle:
    """A new AttemptLedger actor on this (the driver's) node, taking no CPU. Its counts live in
    memory for as long as the driver: a resubmitted job starts from zero."""
    node = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(AttemptLedger)
        .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
        .remote()
    )


def map_with_actors(
    ds: Dataset, actor_class: type, pool: PoolConfig, guard: AttemptGuard, **constructor_kwargs
) -> Dataset:
    """`ds.map_batches(actor_class)` on an autoscaling pool of min_size..max_size actors, each
    built once as `actor_class(**constructor_kwargs)` with the pool's CPUs and GPUs, under
    `guard`: a row that kills the worker `guard.max_attempts` times comes out as one row of the
    stage's output layout with reason `worker_crash`, never run again (see `GuardedStage`).
    Every batch is recorded in the job metrics of stage `guard.scope` (see `metrics.metered`).

    Dead actors are restarted and their tasks retried without limit (Ray Data's defaults,
    set here so they cannot drift): the guard, not Ray, bounds the attempts.
    """
    threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(pool.threads)}}} if pool.threads else {}
    return ds.map_batches(
        metrics.metered(guarded(actor_class), guard.scope),
        fn_constructor_kwargs={"guard": guard, **constructor_kwargs},
        compute=ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
        batch_size=pool.batch_size,
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus or None,
        max_restarts=-1,
        max_task_retries=-1,
        **threads,
    )


class GuardedStage:
    """A Ray Data stage that runs `actor_class` (set by `guarded`) under an AttemptGuard.

    Per batch: rows with no unfinished attempt run together; rows left in flight by a dead
    worker run one call each, so a crash blames only its row; rows that reached
    `max_attempts` get reason `worker_crash` (a batch without `reason` / `error` columns gets
    them) and pass through the stage like any quarantined row (stages never run their model on
    quarantined rows). Rows are marked in flight in the
    ledger just before their call and cleared when it returns. The output is the stage's
    outputs of these calls, concatenated.
    """

    actor_class: type

    def __init__(self, guard: AttemptGuard, **constructor_kwargs):
        self.ledger, self.max_attempts = LedgerClient(guard.ledger), guard.max_attempts
        self.stage = f"{guard.scope}/{self.actor_class.__name__}"
        self.inner = self.actor_class(**constructor_kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = row_ids(batch)
        if not len(ids):
            return self.inner(batch)
        counts = self.ledger.begin(self.stage, ids.tolist())
        plan = plan_attempts(counts, self.max_attempts)
        if plan.give_up.any():
            blank = np.full(len(ids), "", dtype=object)
            reasons, errors = batch.get(REASON, blank), batch.get(ERROR, blank)
            batch = {**batch, REASON: reasons.astype(object), ERROR: errors.astype(object)}
            for i in np.flatnonzero(plan.give_up):
                batch[REASON][i] = WORKER_CRASH
                batch[ERROR][i] = crash_error(ids[i], self.stage, counts[i])
        call = lambda rows: self.inner(take(batch, rows))  # noqa: E731
        outputs = run_plan(plan, ids, self.stage, self.ledger, call, begun=not any(counts))
        return {k: np.concatenate([out[k] for out in outputs]) for k in outputs[0]}


class LedgerClient:
    """Blocking calls to an AttemptLedger actor (a call returns once the ledger has recorded it)."""

    def __init__(self, handle: ActorHandle):
        self.handle = handle

    def begin(self, stage: str, ids: list[str]) -> list[int]:
        return ray.get(self.handle.begin.remote(stage, ids))

    def start(self, stage: str, ids: list[str]) -> None:
        ray.get(self.handle.start.remote(stage, ids))

    def finish(self, stage: str, ids: list[str]) -> None:
        ray.get(self.handle.finish.remote(stage, ids))


def guarded(actor_class: type) -> type:
    """A GuardedStage subclass that runs `actor_class`, named like it (Ray Data names its
    operator and actor processes `MapBatches(<class name>)`)."""
    return type(actor_class.__name__, (GuardedStage,), {"actor_class": actor_class, "__doc__": actor_class.__doc__})


def row_ids(batch: dict[str, np.ndarray]) -> np.ndarray:
    """The id of each row: its first column among `ROW_IDS` (a crop's id, else its image's)."""
    return np.asarray(batch[next(c for c in ROW_IDS if c in batch)], dtype=object)


def take(batch: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The rows of `batch` selected by a bool mask or indices."""
    return {k: v[rows] for k, v in batch.items()}


class SplitParquetSink(Datasink[dict[int, ShardCommit]]):
    """Writes good rows (empty `reason`) of work shard K to `<output>/<table>/shard=K/part-T.parquet`
    with `schema(batch)`, quarantined rows to `<output>/<quarantine>/shard=K/part-T.parquet`
    (QUARANTINE schema, with `stage`; user info in a uri redacted, see `storage.redact`); T is the
    write task's index, so a retried task overwrites its own files. Rows without a `shard` column
    belong to shard 0; without `reason`, all are good.
    After the write, `shards` holds per shard the counts (good rows also by `count_by` value) and
    the files written, relative to `output`: what the shard's commit marker records. Each write
    task also adds its rows to the job metrics: ROWS_WRITTEN, QUARANTINED by reason and, with
    `value_metric` (a counter of `miner.metrics` tagged by the `count_by` column), its count per value.
    """

    def __init__(
        self,
        output: str,
        table: str,
        schema: Callable[[dict[str, np.ndarray]], pa.Schema],
        quarantine: str,
        stage: str,
        id_column: str,
        uri_column: str,
        storage: StorageConfig,
        count_by: str | None = None,
        value_metric: str | None = None,
    ):
        self.output, self.table, self.schema, self.quarantine = output, table, schema, quarantine
        self.stage, self.id_column, self.uri_column = stage, id_column, uri_column
        self.storage, self.count_by, self.value_metric = storage, count_by, value_metric
        self.shards: dict[int, ShardCommit] = {}

    def write(self, blocks: Iterable[Block], ctx) -> dict[int, ShardCommit]:
        parts: dict[tuple[int, str], list[pa.Table]] = defaultdict(list)
        done: dict[int, ShardCommit] = defaultdict(ShardCommit)
        for block in blocks:
            accessor = BlockAccessor.for_block(block)
            batch = accessor.to_numpy()
            n = accessor.num_rows()
            reasons = batch.get(REASON, np.full(n, "", dtype=object))
            shards = batch.get(SHARD, np.zeros(n, dtype=np.int32))
            for shard in np.unique(shards).tolist():
                here = shards == shard
                good, bad = here & (reasons == ""), here & (reasons != "")
                counts = done[shard]
                if good.any():
                    parts[shard, self.table].append(
                        arrow.table({k: v[good] for k, v in batch.items()}, self.schema(batch))
                    )
                    counts.rows += int(good.sum())
                    metrics.count(metrics.ROWS_WRITTEN, int(good.sum()), stage=self.stage, table=self.table)
                    if self.count_by:
                        _add(counts.by_value, batch[self.count_by][good])
                    if self.value_metric:
                        metrics.count_each(
                            self.value_metric, self.count_by, batch[self.count_by][good], stage=self.stage
                        )
                if bad.any():
                    parts[shard, self.quarantine].append(self._quarantine({k: v[bad] for k, v in batch.items()}))
                    _add(counts.quarantined, reasons[bad])
                    metrics.count_each(metrics.QUARANTINED, "reason", reasons[bad], stage=self.stage)
        for (shard, folder), tables in parts.items():
            relative = f"{shard_dir(folder, shard)}/part-{ctx.task_idx:06d}.parquet"
            write_table(pa.concat_tables(tables), join(self.output, relative), self.storage)
            done[shard].files.append(relative)
        return dict(done)

    def _quarantine(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch[REASON])
        columns = {
            "id": batch[self.id_column],
            "uri": np.array([redact(u) for u in batch[self.uri_column]], dtype=object),
            "stage": np.full(n, self.stage, dtype=object),
            "reason": batch[REASON],
            "error": batch[ERROR],
        }
        return arrow.table(columns, QUARANTINE)

    def on_write_complete(self, write_result) -> None:
        for per_shard in write_result.write_returns:
            for shard, counts in per_shard.items():
                total = self.shards.setdefault(shard, ShardCommit())
                total.rows += counts.rows
                _add(total.quarantined, counts.quarantined)
                _add(total.by_value, counts.by_value)
                total.files.extend(counts.files)


def _add(totals: dict[str, int], values) -> None:
    """Add counts to `totals`: from a mapping of counts, or one per item of an array of values."""
    for key, count in values.items() if isinstance(values, dict) else Counter(values.tolist()).items():
        totals[key] = totals.get(key, 0) + count


def write_table(table: pa.Table, uri: str, storage: StorageConfig) -> None:
    """Write one Parquet file atomically (see `storage.write_bytes`)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage)
