"""The reviewed run as Parquet: every pair of the run with its review label, tiers updated by it.

OUT/pairs/part-00000.parquet   the run's pairs columns, plus
    verified     bool: True accepted, False rejected, null not labelled (`review.store.read_labels`:
                 the latest live accept/reject of the pair key (garment_id, crop_id); a label of
                 an older crop of the garment does not apply)
    mined_tier   the tier the job gave the pair
  and, with `promote` (the default), `tier` updated: an accepted pair is `high`, a rejected pair
  `unmatched` (it leaves every tier); unlabelled pairs keep their tier. Without it `tier` is the
  mined tier. Rows sorted by (garment_id, crop_id).
OUT/export.json                counts: pairs, accepted, rejected, unlabelled, promoted, demoted

Deterministic: the same pairs, labels and `promote` give the same bytes (one file, fixed Parquet
writer settings, no timestamps). The output goes through `core.storage` (a local folder or s3://).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.schemas import PAIRS_DIR
from core.storage import StorageConfig, join, write_bytes
from core.tiering import TIERS, UNMATCHED
from quality.labels import label_rows
from review.pairs import pairs_source
from review.store import read_labels

HIGH = TIERS[0]
PART = "part-00000.parquet"
WRITER = {"compression": "zstd", "compression_level": 3, "row_group_size": 65536, "use_dictionary": True}


def labelled_pairs(pairs: pa.Table, labels: pa.Table, promote: bool) -> pa.Table:
    """`pairs` sorted by (garment_id, crop_id) with `verified` and `mined_tier` (see the module
    docstring); `labels` as `read_labels` returns them."""
    pairs = pairs.sort_by([("garment_id", "ascending"), ("crop_id", "ascending")])
    rows = label_rows(pairs["garment_id"].combine_chunks(), pairs["crop_id"].combine_chunks(), labels)
    verified = labels["verified"].combine_chunks().take(pa.array(rows, pa.int64(), mask=rows < 0))
    mined = pairs["tier"].combine_chunks()
    tier = mined
    if promote:
        tier = pc.if_else(pc.fill_null(verified, False), HIGH, mined)
        tier = pc.if_else(pc.fill_null(pc.invert(verified), False), UNMATCHED, tier)
    pairs = pairs.set_column(pairs.schema.get_field_index("tier"), "tier", tier)
    return pairs.append_column("verified", verified).append_column("mined_tier", mined)


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def counts(table: pa.Table) -> dict[str, int]:
    """Pairs, labels and tier changes of an exported table."""
    verified = table["verified"]
    changed = pc.fill_null(pc.not_equal(table["tier"], table["mined_tier"]), False)
    return {
        "pairs": len(table),
        "accepted": _count(verified),
        "rejected": _count(pc.invert(verified)),
        "unlabelled": verified.null_count,
        "promoted": _count(pc.and_(changed, pc.equal(table["tier"], HIGH))),
        "demoted": _count(pc.and_(changed, pc.equal(table["tier"], UNMATCHED))),
    }


def parquet_bytes(table: pa.Table) -> bytes:
    """`table` as one Parquet file written with the fixed WRITER settings."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **WRITER)
    return buffer.getvalue().to_pybytes()


def export(
    run: str | Path, db_path: str | Path, out: str, promote: bool = True, storage: StorageConfig | None = None
) -> dict[str, int]:
    """Write the export of `run` with the labels of `db_path` under `out` (module docstring); its counts."""
    storage = storage or StorageConfig()
    pairs = pq.read_table(pairs_source(run), partitioning=None)
    table = labelled_pairs(pairs, read_labels(db_path), promote)
    summary = {**counts(table), "promote": promote}
    write_bytes(join(str(out), PAIRS_DIR, PART), parquet_bytes(table), storage)
    write_bytes(join(str(out), "export.json"), (json.dumps(summary, indent=2) + "\n").encode(), storage)
    return summary
