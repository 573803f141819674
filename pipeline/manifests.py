"""Input manifests as Ray Datasets: Parquet, CSV or JSONL rows of string columns with their work
shard, the checks that run before any compute (columns, null and duplicate ids), and the split of
a manifest's rows into a folder per work shard that a stage then reads in shard order."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
from ray.data import Dataset
from ray.data.expressions import col

from core.schemas import SHARD
from core.storage import StorageConfig, filesystem, join, write_table
from pipeline.commits import clear, part_name, shard_dir, shard_of

DUPLICATES_SHOWN = 5  # duplicate ids named in a ManifestError
MANIFEST_FORMATS = (".csv", ".jsonl", ".parquet")


class ManifestError(ValueError):
    """A manifest is unusable: missing columns, null or duplicate ids, unknown format."""


def read_manifest(uri: str, id_column: str, optional: tuple[str, ...], shards: int, storage: StorageConfig) -> Dataset:
    """The manifest as rows of string columns (`image_id`, `uri`, *optional) plus the work `shard`
    of each row (see `commits.shard_of`), whatever its format.

    `id_column` is renamed to `image_id` so garments and lookbook images share one pipeline;
    optional columns absent from the file are filled with "". Ids, uris and texts are read as
    text in every format (a CSV id `00123` stays `00123`); a JSONL line that is not a JSON object
    fails the read with a ManifestError quoting it.
    """
    suffix = os.path.splitext(uri)[1].lower()
    if suffix not in MANIFEST_FORMATS:
        raise ManifestError(f"manifest {uri}: unknown format {suffix!r}, expected one of {MANIFEST_FORMATS}")
    fs, path = filesystem(uri, storage)
    text_columns = [id_column, "uri", *optional]
    if suffix == ".csv":
        as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(text_columns, pa.string()))
        ds = ray.data.read_csv(path, filesystem=fs, convert_options=as_text)
    elif suffix == ".jsonl":
        kwargs = {"uri": uri, "columns": text_columns}
        ds = ray.data.read_text(path, filesystem=fs).map_batches(_json_lines, fn_kwargs=kwargs, batch_format="pyarrow")
    else:
        ds = ray.data.read_parquet(path, filesystem=fs)
    present = set(ds.schema().names) if suffix != ".jsonl" else set(text_columns)
    if missing := {id_column, "uri"} - present:
        raise ManifestError(f"manifest {uri} lacks columns {sorted(missing)} (has {sorted(present)})")
    keep = [id_column, "uri", *(c for c in optional if c in present)]
    fill = tuple(c for c in optional if c not in present)
    kwargs = {"id_column": id_column, "fill": fill, "shards": shards}
    return ds.select_columns(keep).map_batches(_normalise_manifest, fn_kwargs=kwargs, batch_format="pyarrow")


def _json_lines(batch: pa.Table, uri: str, columns: list[str]) -> pa.Table:
    """Lines of a JSONL manifest (`text`) -> one string column per name in `columns` (null where a
    line lacks the key; numbers and other values as their JSON text). Blank lines are skipped."""
    rows = []
    for line in batch["text"].to_pylist():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {uri}: a line is not JSON ({exc.msg}): {line[:200]!r}") from None
        if not isinstance(row, dict):
            raise ManifestError(f"manifest {uri}: a line is not a JSON object: {line[:200]!r}")
        rows.append(row)
    text = lambda v: None if v is None else v if isinstance(v, str) else json.dumps(v)  # noqa: E731
    return pa.table({c: pa.array([text(r.get(c)) for r in rows], pa.string()) for c in columns})


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
    try:
        ids = ds.select_columns([id_column]).materialize()
    except Exception as exc:  # Ray Data wraps an error of the manifest's rows in its own
        if message := _manifest_error(exc):
            raise ManifestError(message) from None
        raise
    rows = ids.count()
    if rows == 0:
        repeated = []
    elif rows <= rows_per_partition:
        repeated = ray.get(_repeated_ids.remote(id_column, DUPLICATES_SHOWN, *ids.to_arrow_refs()))
    else:
        counts = ids.groupby(id_column, num_partitions=min(200, rows // rows_per_partition)).count()
        found = counts.filter(expr=col("count()") > 1).take(DUPLICATES_SHOWN)
        repeated = [(row[id_column], row["count()"]) for row in found]
    if repeated:
        shown = ", ".join(f"{value!r} (x{count})" for value, count in repeated)
        raise ManifestError(f"{label} manifest has duplicate ids: {shown}")
    return rows


def _manifest_error(exc: Exception) -> str | None:
    """The message of a ManifestError raised by a Ray Data task, read from the remote traceback that
    Ray's error carries (the exception's own chain does not cross processes), or None."""
    marker = f"{ManifestError.__module__}.{ManifestError.__name__}: "
    text = str(exc)
    return text.split(marker, 1)[1].splitlines()[0] if marker in text else None


@ray.remote
def _repeated_ids(id_column: str, limit: int, *blocks: pa.Table) -> list[tuple[str, int]]:
    """Up to `limit` (id, count) of the ids that occur more than once in the blocks' `id_column`."""
    counts = pc.value_counts(pa.concat_tables(blocks)[id_column])
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))[:limit]
    return [(row["values"], row["counts"]) for row in repeated.to_pylist()]


@dataclass(frozen=True)
class ShardInputs:
    """Per work shard of a manifest (`split_shards`): a digest of its rows, and how many there are."""

    digests: list[str]
    rows: list[int]


def split_shards(ds: Dataset, shards: int, work: str, storage: StorageConfig, salt: str = "") -> ShardInputs:
    """One streaming pass over a manifest dataset (`read_manifest`) that writes its rows to Parquet
    under `work/shard=K/`, a folder per work shard (emptied first) with a file per manifest block,
    for `shard_rows` to read back in shard order with no shuffle; a retried task rewrites the same
    files (`commits.part_name`).

    Returns per shard its row count and a digest of its rows (every column but the shard, in any
    order) and of `salt`: what a commit marker records, so that a shard whose input rows changed
    (rows added, removed or edited) is redone and the others are kept. Each batch sends the driver
    only a (shards,) XOR of row hashes and counts."""
    clear(work, storage)
    kwargs = {"shards": shards, "work": work, "storage": storage}
    xor, rows = np.zeros(shards, np.uint64), np.zeros(shards, np.int64)
    for part in ds.map_batches(_split_by_shard, fn_kwargs=kwargs, batch_format="pyarrow").iter_batches():
        xor ^= np.bitwise_xor.reduce(part["xor"], axis=0)
        rows += part["rows"].sum(axis=0)
    digests = [hashlib.sha256(f"{salt}|{rows[k]}|{xor[k]:016x}".encode()).hexdigest()[:32] for k in range(shards)]
    return ShardInputs(digests, rows.tolist())


def _split_by_shard(batch: pa.Table, shards: int, work: str, storage: StorageConfig) -> dict[str, np.ndarray]:
    columns = {c: batch[c].to_pylist() for c in sorted(batch.column_names) if c != SHARD}
    values = zip(*columns.values())
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b("\0".join(v).encode(), digest_size=8).digest(), "big") for v in values],
        dtype=np.uint64,
    )
    shard = batch[SHARD].to_numpy()
    xor, rows = np.zeros(shards, np.uint64), np.bincount(shard, minlength=shards)
    np.bitwise_xor.at(xor, shard, hashes)
    order = np.argsort(shard, kind="stable")
    by_shard, starts = batch.take(order), np.cumsum(rows) - rows
    name = part_name(columns["image_id"]) + ".parquet"
    for k in np.flatnonzero(rows).tolist():
        write_table(by_shard.slice(starts[k], rows[k]), join(shard_dir(work, k), name), storage)
    return {"xor": xor[None, :], "rows": rows[None, :]}


def shard_rows(work: str, shards: list[int], storage: StorageConfig) -> Dataset:
    """The rows that `split_shards` wrote for each of `shards` (each with rows), one read task per
    shard: in the order given where the execution preserves order."""
    items = ray.data.from_items([{SHARD: k} for k in shards], override_num_blocks=len(shards) or None)
    kwargs = {"work": work, "storage": storage}
    return items.map_batches(_read_shard, fn_kwargs=kwargs, batch_size=1, batch_format="pyarrow")


def _read_shard(batch: pa.Table, work: str, storage: StorageConfig) -> pa.Table:
    fs, path = filesystem(shard_dir(work, batch[SHARD][0].as_py()), storage)
    return pq.read_table(path, filesystem=fs, partitioning=None)  # every file of the folder, in name order
