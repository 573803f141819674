"""A run's pairs Parquet files read at scale: whole columns for the few that every row needs, and
single rows by global index, which reads only the row groups that hold them.

A global row index counts rows across the files in sorted path order, then row groups in file
order; `read_columns` and `take` agree on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class PairFiles:
    """The Parquet files of a pairs folder (or one file) and the row count of each row group."""

    paths: tuple[Path, ...]
    group_rows: tuple[tuple[int, ...], ...]  # per file, rows per row group

    @classmethod
    def open(cls, location: str | Path) -> PairFiles:
        """The `*.parquet` files under a folder (Hive `shard=K` folders included), or one file."""
        location = Path(location)
        paths = sorted(location.rglob("*.parquet")) if location.is_dir() else [location]
        if not paths:
            raise FileNotFoundError(f"no Parquet file under {location}")
        groups = []
        for path in paths:
            meta = pq.ParquetFile(path).metadata
            groups.append(tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups)))
        return cls(tuple(paths), tuple(groups))

    @property
    def rows(self) -> int:
        return sum(sum(groups) for groups in self.group_rows)

    def schema(self) -> pa.Schema:
        return pq.read_schema(self.paths[0])

    def read_columns(self, columns: Sequence[str]) -> pa.Table:
        """`columns` of every row, in global row order; a column a file lacks is null there."""
        wanted = self._wanted(columns)
        tables = [self._read(path, wanted, None) for path in self.paths]
        return pa.concat_tables(tables).combine_chunks()

    def take(self, indices: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """The rows at the global `indices` (any order, repeats allowed), in that order: only the
        row groups holding one of them are read."""
        indices = np.asarray(indices, np.int64)
        wanted = self._wanted(columns)
        if not len(indices):
            return wanted.empty_table()
        starts = np.cumsum([0, *(n for groups in self.group_rows for n in groups)])
        located = np.searchsorted(starts, indices, side="right") - 1  # flat row-group number per index
        flat = [(path, g) for path, groups in zip(self.paths, self.group_rows) for g in range(len(groups))]
        pieces, offsets = [], {}
        for number in np.unique(located):
            path, group = flat[number]
            offsets[int(number)] = sum(len(p) for p in pieces)
            pieces.append(self._read(path, wanted, group))
        table = pa.concat_tables(pieces)
        rows = [offsets[int(n)] + int(i - starts[n]) for i, n in zip(indices, located)]
        return table.take(pa.array(rows, pa.int64()))

    def _wanted(self, columns: Sequence[str]) -> pa.Schema:
        """`columns` with the first file's types (null type for one it lacks)."""
        schema = self.schema()
        return pa.schema([schema.field(c) if c in schema.names else pa.field(c, pa.null()) for c in columns])

    @staticmethod
    def _read(path: Path, wanted: pa.Schema, group: int | None) -> pa.Table:
        """`wanted` columns of one file (or one of its row groups), nulls for those it lacks."""
        file = pq.ParquetFile(path)
        present = [name for name in wanted.names if name in file.schema_arrow.names]
        table = file.read(columns=present) if group is None else file.read_row_group(group, columns=present)
        columns = [
            table[name] if name in present else pa.nulls(len(table), wanted.field(name).type) for name in wanted.names
        ]
        return pa.Table.from_arrays(columns, schema=wanted)
