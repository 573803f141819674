"""The Parquet output of every job stage: good rows to the stage's table, quarantined rows to its
quarantine table, per work shard, with the counts that the shard's commit marker records; written
by Ray Data write tasks (`SplitParquetSink`) or by the map tasks of the stage executor."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink

from core import arrow
from core.batches import Batch, quarantine_columns
from core.schemas import ERROR, QUARANTINE, QUARANTINE_DIR, REASON, SHARD
from core.steps import WRITE
from core.storage import StorageConfig, join, redact, write_table
from pipeline import metrics
from pipeline.commits import ShardCommit, shard_dir

WRITER = "SplitParquetSink"  # the operator name of the write step in the metrics


@dataclass(frozen=True)
class SideTable:
    """Good rows whose `column` equals `value` go to the `table` folder with `schema` instead of the
    stage's table; their count is the commit's `side_rows`."""

    table: str
    schema: pa.Schema
    column: str
    value: object


@dataclass(frozen=True)
class ShardTables:
    """Where a stage's rows go: good rows (empty `reason`) of work shard K to
    `<output>/<table>/shard=K/<part>.parquet` with `schema` (or `schema(batch)`), quarantined rows
    to `<output>/quarantine/<stage>/shard=K/<part>.parquet` (QUARANTINE schema, with `stage`; user
    info in a uri redacted, see `storage.redact`). Rows without a `shard` column belong to shard
    0; without `reason`, all are good. With `value_metric` (a counter of `pipeline.metrics` tagged
    by the `count_by` column) good rows are also counted per value; with `side` some good rows go
    to a side table instead (`SideTable`)."""

    output: str
    table: str
    schema: pa.Schema | Callable[[Batch], pa.Schema]
    stage: str
    id_column: str
    uri_column: str
    storage: StorageConfig
    count_by: str | None = None
    value_metric: str | None = None
    side: SideTable | None = None

    @property
    def quarantine(self) -> str:
        return f"{QUARANTINE_DIR}/{self.stage}"

    @property
    def folders(self) -> tuple[str, ...]:
        """Every folder this stage writes shard files into."""
        return (self.table, self.quarantine, *((self.side.table,) if self.side else ()))

    def write(self, batches: Iterable[Batch], part: str) -> dict[int, ShardCommit]:
        """Write the rows of `batches` as one file `<part>.parquet` per shard and table; per shard,
        the counts and files that its commit marker records. Records the seconds as the `write`
        step, and the rows in the job metrics: ROWS_WRITTEN, QUARANTINED by reason and
        `value_metric` per value."""
        start = time.perf_counter()
        parts: dict[tuple[int, str], list[pa.Table]] = defaultdict(list)
        done: dict[int, ShardCommit] = defaultdict(ShardCommit)
        for batch in batches:
            n = len(batch[self.id_column])
            reasons = quarantine_columns(batch, n)[0]
            shards = batch.get(SHARD, np.zeros(n, dtype=np.int32))
            for shard in np.unique(shards).tolist():
                here = shards == shard
                good, bad = here & (reasons == ""), here & (reasons != "")
                counts = done[shard]
                if self.side and (aside := good & (batch[self.side.column] == self.side.value)).any():
                    rows = {k: v[aside] for k, v in batch.items()}
                    parts[shard, self.side.table].append(arrow.table(rows, self.side.schema))
                    counts.side_rows += int(aside.sum())
                    metrics.count(metrics.ROWS_WRITTEN, int(aside.sum()), stage=self.stage, table=self.side.table)
                    good &= ~aside
                if good.any():
                    rows = {k: v[good] for k, v in batch.items()}
                    parts[shard, self.table].append(arrow.table(rows, self.table_schema(batch)))
                    counts.rows += int(good.sum())
                    metrics.count(metrics.ROWS_WRITTEN, int(good.sum()), stage=self.stage, table=self.table)
                    if self.count_by:
                        _add(counts.by_value, rows[self.count_by])
                    if self.value_metric:
                        metrics.count_each(self.value_metric, self.count_by, rows[self.count_by], stage=self.stage)
                if bad.any():
                    parts[shard, self.quarantine].append(self._quarantine({k: v[bad] for k, v in batch.items()}))
                    _add(counts.quarantined, reasons[bad])
                    metrics.count_each(metrics.QUARANTINED, "reason", reasons[bad], stage=self.stage)
        for (shard, folder), tables in parts.items():
            relative = f"{shard_dir(folder, shard)}/{part}.parquet"
            size = write_table(pa.concat_tables(tables), join(self.output, relative), self.storage)
            done[shard].files.append(relative)
            done[shard].sizes.append(size)
        metrics.record_steps(self.stage, WRITER, {WRITE: time.perf_counter() - start})
        return dict(done)

    def table_schema(self, batch: Batch) -> pa.Schema:
        return self.schema(batch) if callable(self.schema) else self.schema

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


class SplitParquetSink(Datasink[dict[int, ShardCommit]]):
    """A Ray Data sink writing to `tables` (`ShardTables`), a file `part-T` per shard and table, T
    the write task's index, so a retried task overwrites its own files. After the write, `shards`
    holds per shard the counts and files written: what the shard's commit marker records."""

    def __init__(self, tables: ShardTables):
        self.tables = tables
        self.shards: dict[int, ShardCommit] = {}

    def write(self, blocks: Iterable[Block], ctx) -> dict[int, ShardCommit]:
        batches = (BlockAccessor.for_block(block).to_numpy() for block in blocks)
        return self.tables.write(batches, f"part-{ctx.task_idx:06d}")

    def on_write_complete(self, write_result) -> None:
        for per_shard in write_result.write_returns:
            merge(self.shards, per_shard)


def merge(totals: dict[int, ShardCommit], per_shard: dict[int, ShardCommit]) -> None:
    """Add one write's counts and files per shard (`ShardTables.write`) to `totals`."""
    for shard, counts in per_shard.items():
        total = totals.setdefault(shard, ShardCommit())
        total.rows += counts.rows
        total.side_rows += counts.side_rows
        _add(total.quarantined, counts.quarantined)
        _add(total.by_value, counts.by_value)
        total.files.extend(counts.files)
        total.sizes.extend(counts.sizes)


def _add(totals: dict[str, int], values) -> None:
    """Add counts to `totals`: from a mapping of counts, or one per item of an array of values."""
    for key, count in values.items() if isinstance(values, dict) else Counter(values.tolist()).items():
        totals[key] = totals.get(key, 0) + count
