"""Ray Data plumbing shared by the jobs: manifests in, actor-pool arguments, split Parquet sinks.

Every stage's rows carry `reason` / `error`; the sink writes good rows to the output table and
the others to the quarantine table, so each input row ends in exactly one of them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy, Dataset
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink
from ray.data.expressions import col

from miner import arrow
from miner.config import PoolConfig, StorageConfig
from miner.schemas import ERROR, QUARANTINE, REASON
from miner.storage import filesystem, join, write_bytes

MANIFEST_READERS = {".parquet": ray.data.read_parquet, ".csv": ray.data.read_csv, ".jsonl": ray.data.read_json}


class ManifestError(ValueError):
    """A manifest is unusable: missing columns, null or duplicate ids, unknown format."""


def read_manifest(uri: str, id_column: str, optional: tuple[str, ...], storage: StorageConfig) -> Dataset:
    """The manifest as rows of string columns (`image_id`, `uri`, *optional), whatever its format.

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
    return ds.select_columns(keep).map_batches(
        _normalise_manifest, fn_kwargs={"id_column": id_column, "fill": fill}, batch_format="pyarrow"
    )


def _normalise_manifest(batch: pa.Table, id_column: str, fill: tuple[str, ...]) -> pa.Table:
    if batch[id_column].null_count or batch["uri"].null_count:
        raise ManifestError(f"manifest has rows with a null {id_column} or uri")
    columns = {"image_id": batch[id_column].cast(pa.string()), "uri": batch["uri"].cast(pa.string())}
    for name in batch.column_names:
        if name not in (id_column, "uri"):
            columns[name] = batch[name].cast(pa.string()).fill_null("")
    for name in fill:
        columns[name] = pa.array([""] * len(batch), pa.string())
    return pa.table(columns)


def check_unique_ids(ds: Dataset, label: str, id_column: str = "image_id", rows_per_partition: int = 100_000) -> int:
    """The number of rows; raises ManifestError naming up to five ids that occur more than once.

    A distributed group-by, with one shuffle partition per `rows_per_partition` ids (at most 200).
    """
    rows = ds.count()
    partitions = min(200, max(1, rows // rows_per_partition))
    counts = ds.select_columns([id_column]).groupby(id_column, num_partitions=partitions).count()
    duplicates = counts.filter(expr=col("count()") > 1).take(5)
    if duplicates:
        shown = ", ".join(f"{d[id_column]!r} (x{d['count()']})" for d in duplicates)
        raise ManifestError(f"{label} manifest has duplicate ids: {shown}")
    return rows


def read_parquet_dir(uri: str, storage: StorageConfig) -> Dataset:
    """A folder of Parquet files written by a SplitParquetSink, as a dataset."""
    fs, path = filesystem(uri, storage)
    return ray.data.read_parquet(path, filesystem=fs)


def map_with_actors(ds: Dataset, actor_class: type, pool: PoolConfig, **constructor_kwargs) -> Dataset:
    """`ds.map_batches(actor_class)` on an autoscaling pool of min_size..max_size actors, each
    built once as `actor_class(**constructor_kwargs)` with the pool's CPUs and GPUs."""
    return ds.map_batches(
        actor_class,
        fn_constructor_kwargs=constructor_kwargs,
        compute=ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
        batch_size=pool.batch_size,
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus or None,
    )


@dataclass
class SplitCounts:
    """Rows written by a SplitParquetSink: to the output table, and to quarantine by reason."""

    rows: int = 0
    quarantined: Counter = field(default_factory=Counter)
    by_value: Counter = field(default_factory=Counter)


class SplitParquetSink(Datasink[SplitCounts]):
    """Writes good rows (empty `reason`) to `<out_dir>/part-NNNNNN.parquet` with `schema(batch)`,
    quarantined rows to `<quarantine_dir>/part-NNNNNN.parquet` (QUARANTINE schema, with `stage`).

    File names depend only on the write task's index, so a retried task overwrites its own
    files. After the write, `counts` holds the totals (good rows also by `count_by` value).
    Rows without a `reason` column are all good.
    """

    def __init__(
        self,
        out_dir: str,
        schema: Callable[[dict[str, np.ndarray]], pa.Schema],
        quarantine_dir: str,
        stage: str,
        id_column: str,
        uri_column: str,
        storage: StorageConfig,
        count_by: str | None = None,
    ):
        self.out_dir, self.schema, self.quarantine_dir, self.stage = out_dir, schema, quarantine_dir, stage
        self.id_column, self.uri_column, self.storage, self.count_by = id_column, uri_column, storage, count_by
        self.counts = SplitCounts()

    def write(self, blocks: Iterable[Block], ctx) -> SplitCounts:
        counts = SplitCounts()
        good_parts, bad_parts = [], []
        for block in blocks:
            batch = BlockAccessor.for_block(block).to_numpy()
            reasons = batch.get(REASON, np.full(BlockAccessor.for_block(block).num_rows(), "", dtype=object))
            good = reasons == ""
            if good.any():
                good_parts.append(arrow.table({k: v[good] for k, v in batch.items()}, self.schema(batch)))
            if (~good).any():
                bad_parts.append(self._quarantine({k: v[~good] for k, v in batch.items()}))
                counts.quarantined.update(reasons[~good].tolist())
            if self.count_by:
                counts.by_value.update(batch[self.count_by][good].tolist())
            counts.rows += int(good.sum())
        name = f"part-{ctx.task_idx:06d}.parquet"
        for parts, folder in ((good_parts, self.out_dir), (bad_parts, self.quarantine_dir)):
            if parts:
                write_table(pa.concat_tables(parts), join(folder, name), self.storage)
        return counts

    def _quarantine(self, batch: dict[str, np.ndarray]) -> pa.Table:
        n = len(batch[REASON])
        columns = {
            "id": batch[self.id_column],
            "uri": batch[self.uri_column],
            "stage": np.full(n, self.stage, dtype=object),
            "reason": batch[REASON],
            "error": batch[ERROR],
        }
        return arrow.table(columns, QUARANTINE)

    def on_write_complete(self, write_result) -> None:
        for counts in write_result.write_returns:
            self.counts.rows += counts.rows
            self.counts.quarantined.update(counts.quarantined)
            self.counts.by_value.update(counts.by_value)


def write_table(table: pa.Table, uri: str, storage: StorageConfig) -> None:
    """Write one Parquet file atomically (see `storage.write_bytes`)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage)
