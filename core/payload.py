"""An index shard's payload: per crop of the shard, what scoring reads besides the index, in an
Arrow IPC file sorted by index id that searchers memory-map (zero copy, shared page cache). Shards
with compressed codes (`core.shard_search.reranked`) also keep the stored image embedding, which
their searches re-rank with."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.arrow import matrix

INDEX_ID = "index_id"
COLUMNS = ["crop_id", "image_id", "uri", "box", "caption_embedding"]  # read from the crop files, plus INDEX_ID
EMBEDDING = "embedding"  # the image embedding, kept for re-ranking
BATCH_ROWS = 1 << 18  # rows per record batch of a payload file: few batches, each a zero-copy view


def columns(rerank: bool) -> list[str]:
    """The crop-file columns a payload holds (besides INDEX_ID)."""
    return COLUMNS + [EMBEDDING] if rerank else COLUMNS


def schema(dim: int, dtype: str, rerank: bool = False) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    fields = [
        ("crop_id", pa.string()),
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("box", pa.list_(pa.float32(), 4)),
        ("caption_embedding", pa.list_(value, dim)),
    ]
    return pa.schema(fields + ([(EMBEDDING, pa.list_(value, dim))] if rerank else []) + [(INDEX_ID, pa.int64())])


def read(path: str) -> pa.Table:
    """The payload file at the local `path`, memory-mapped."""
    return pa.ipc.open_file(pa.memory_map(path)).read_all()


class Payload:
    """A mapped payload file: the rows of index ids, and their columns gathered for (b, k) ids.
    Only the ids are copied into the process (8 bytes a row); the rest stays mapped."""

    def __init__(self, path: str):
        table = read(path)
        self.ids = table[INDEX_ID].to_numpy()
        self.crop_id, self.image_id, self.uri = table["crop_id"], table["image_id"], table["uri"]
        self.box = ChunkedRows(table["box"])
        self.caption = ChunkedRows(table["caption_embedding"])
        self.embedding = ChunkedRows(table[EMBEDDING]) if EMBEDDING in table.column_names else None

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Payload row of each index id (any shape), -1 for id -1 or an id the shard lacks."""
        if not len(self.ids):
            return np.full(ids.shape, -1, np.int64)
        rows = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return np.where((ids >= 0) & (self.ids[rows] == ids), rows, -1)

    def captions(self, rows: np.ndarray) -> np.ndarray:
        """(..., dim) float32 caption embeddings of payload `rows` (zeros for -1)."""
        return self.caption.take(rows, 0.0)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(..., dim) float32 image embeddings of index `ids` (zeros for -1): `core.shard_search.Vectors`."""
        return self.embedding.take(self.rows(ids), 0.0)

    def blocks(self):
        """(image embeddings (n, dim) as stored, their index ids (n,)) per record batch, zero copy."""
        for start, part in zip(self.embedding.starts, self.embedding.parts):
            yield part, self.ids[start : start + len(part)]

    def boxes(self, rows: np.ndarray) -> np.ndarray:
        """(..., 4) float32 boxes of payload `rows` (NaN for -1)."""
        return self.box.take(rows, np.nan)

    @staticmethod
    def strings(column: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
        """Values of a string column at payload `rows` (any shape; -1 gives None), as objects."""
        flat = rows.ravel()
        taken = column.take(pa.array(np.maximum(flat, 0), mask=flat < 0))
        return taken.to_numpy().reshape(rows.shape)


class ChunkedRows:
    """A fixed-size-list column as a numpy view per record batch (zero copy of a mapped file)."""

    def __init__(self, column: pa.ChunkedArray):
        self.parts = [matrix(chunk, widen=False) for chunk in column.chunks]
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.width = column.type.list_size

    def take(self, rows: np.ndarray, fill: float) -> np.ndarray:
        """(..., width) float32 values of `rows` (any shape), `fill` for row -1."""
        out = np.full((*rows.shape, self.width), fill, np.float32)
        chunk = np.searchsorted(self.starts, rows, side="right") - 1
        for n, part in enumerate(self.parts):
            mine = (chunk == n) & (rows >= 0)
            out[mine] = part[rows[mine] - self.starts[n]]
        return out
