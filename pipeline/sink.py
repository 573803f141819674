"""The Parquet sink of every job stage: good rows to the stage's table, quarantined rows to its
quarantine table, per work shard, with the counts that the shard's commit marker records."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

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


class SplitParquetSink(Datasink[dict[int, ShardCommit]]):
    """Writes good rows (empty `reason`) of work shard K to `<output>/<table>/shard=K/part-T.parquet`
    with `schema` (or `schema(batch)`), quarantined rows to `<output>/quarantine/<stage>/shard=K/part-T.parquet`
    (QUARANTINE schema, with `stage`; user info in a uri redacted, see `storage.redact`); T is the
    write task's index, so a retried task overwrites its own files. Rows without a `shard` column
    belong to shard 0; without `reason`, all are good.
    After the write, `shards` holds per shard the counts (good rows also by `count_by` value) and
    the files written, relative to `output`: what the shard's commit marker records. Each write
    task records its seconds as the `write` step and its rows in the job metrics: ROWS_WRITTEN,
    QUARANTINED by reason and, with `value_metric` (a counter of `pipeline.metrics` tagged by the
    `count_by` column), its count per value.
    """

    def __init__(
        self,
        output: str,
        table: str,
        schema: pa.Schema | Callable[[Batch], pa.Schema],
        stage: str,
        id_column: str,
        uri_column: str,
        storage: StorageConfig,
        count_by: str | None = None,
        value_metric: str | None = None,
    ):
        self.output, self.table, self.schema = output, table, schema
        self.quarantine = f"{QUARANTINE_DIR}/{stage}"
        self.stage, self.id_column, self.uri_column = stage, id_column, uri_column
        self.storage, self.count_by, self.value_metric = storage, count_by, value_metric
        self.shards: dict[int, ShardCommit] = {}

    def write(self, blocks: Iterable[Block], ctx) -> dict[int, ShardCommit]:
        start = time.perf_counter()
        parts: dict[tuple[int, str], list[pa.Table]] = defaultdict(list)
        done: dict[int, ShardCommit] = defaultdict(ShardCommit)
        for block in blocks:
            accessor = BlockAccessor.for_block(block)
            batch = accessor.to_numpy()
            n = accessor.num_rows()
            reasons = quarantine_columns(batch, n)[0]
            shards = batch.get(SHARD, np.zeros(n, dtype=np.int32))
            for shard in np.unique(shards).tolist():
                here = shards == shard
                good, bad = here & (reasons == ""), here & (reasons != "")
                counts = done[shard]
                if good.any():
                    parts[shard, self.table].append(
                        arrow.table({k: v[good] for k, v in batch.items()}, self.table_schema(batch))
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
            size = write_table(pa.concat_tables(tables), join(self.output, relative), self.storage)
            done[shard].files.append(relative)
            done[shard].sizes.append(size)
        metrics.record_steps(self.stage, type(self).__name__, {WRITE: time.perf_counter() - start})
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

    def on_write_complete(self, write_result) -> None:
        for per_shard in write_result.write_returns:
            for shard, counts in per_shard.items():
                total = self.shards.setdefault(shard, ShardCommit())
                total.rows += counts.rows
                _add(total.quarantined, counts.quarantined)
                _add(total.by_value, counts.by_value)
                total.files.extend(counts.files)
                total.sizes.extend(counts.sizes)


def _add(totals: dict[str, int], values) -> None:
    """Add counts to `totals`: from a mapping of counts, or one per item of an array of values."""
    for key, count in values.items() if isinstance(values, dict) else Counter(values.tolist()).items():
        totals[key] = totals.get(key, 0) + count
