"""Numpy batches <-> Arrow tables with explicit schemas (fixed-size lists for vectors and boxes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def table(columns: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """An Arrow table of exactly `schema` from numpy columns: (n, d) float arrays fill fixed-size
    lists, (n, k) arrays fill variable-size lists (Ray Data hands over equal-length lists so),
    object arrays hold strings or per-row vectors or lists (None is null)."""
    arrays = []
    for field in schema:
        values = columns[field.name]
        if pa.types.is_fixed_size_list(field.type) and values.dtype != object:
            flat = pa.array(np.asarray(values, field.type.value_type.to_pandas_dtype()).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        elif pa.types.is_list(field.type) and values.ndim == 2:
            offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * values.shape[1])
            flat = pa.array(values.reshape(-1), type=field.type.value_type)
            arrays.append(pa.ListArray.from_arrays(offsets, flat, type=field.type))
        elif values.dtype == object:  # strings, or vectors that may be None
            items = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
            arrays.append(pa.array(items, type=field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def matrix(column: pa.ChunkedArray | pa.Array, widen: bool = True) -> np.ndarray:
    """(n, d) array from a fixed-size-list column of length n: float32 (float16 storage widened),
    or with `widen` false the storage type itself (a float16 payload stays half the size)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)
    return values.astype(np.float32, copy=False) if widen else values
