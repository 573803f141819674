"""Input manifests as Ray Datasets: Parquet, CSV or JSONL rows of string columns with their work
shard, and the checks that run before any compute (columns, null and duplicate ids)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import Dataset
from ray.data.expressions import col

from core.schemas import SHARD
from core.storage import StorageConfig, filesystem
from pipeline.commits import shard_of

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
