"""Numpy batches -> Arrow tables: every layout Ray Data hands a sink for list columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.arrow import table
from core.batches import objects

LISTS = pa.schema([("values", pa.list_(pa.float32())), ("names", pa.list_(pa.string()))])


def test_equal_length_lists_arrive_as_2d_arrays():
    columns = {"values": np.array([[1, 2], [3, 4]], np.float32), "names": np.array([["a", "b"], ["c", "d"]], object)}
    assert table(columns, LISTS).to_pylist() == [
        {"values": [1.0, 2.0], "names": ["a", "b"]},
        {"values": [3.0, 4.0], "names": ["c", "d"]},
    ]


def test_empty_lists_as_a_zero_width_array():
    columns = {"values": np.zeros((2, 0), np.float32), "names": np.empty((2, 0), object)}
    assert table(columns, LISTS).to_pylist() == [{"values": [], "names": []}] * 2


def test_ragged_lists_as_object_arrays():
    columns = {"values": objects([[1.0], np.array([2.0, 3.0])]), "names": objects([np.array(["a"], object), []])}
    assert table(columns, LISTS).to_pylist() == [{"values": [1.0], "names": ["a"]}, {"values": [2.0, 3.0], "names": []}]
