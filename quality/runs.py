"""A finished mining run and a benchmark split, read from disk for evaluation (local paths, no Ray)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from core.config import MineConfig, load_config
from core.schemas import CROPS_DIR, PAIRS_DIR
from core.vocab import ATTRIBUTES
from quality import evaluation

CROP_COLUMNS = ["crop_id", "image_id", "box", *ATTRIBUTES]  # what the metrics read (no embeddings)


@dataclass(frozen=True)
class Run:
    """A mining run's tables: pairs, crops (None when only pairs were given), its resolved config
    (None without config.yaml), and `folder`: the output folder, or the one holding the pairs."""

    folder: Path
    pairs: pa.Table
    crops: pa.Table | None
    cfg: MineConfig | None

    @property
    def top_k(self) -> int:
        """Candidates kept per garment: the run's `scoring.top_k`, else the longest candidate list."""
        if self.cfg is not None:
            return self.cfg.scoring.top_k
        return max((len(c) for c in self.pairs["candidate_image_ids"].to_pylist()), default=0)


def run_folder(path: str | Path) -> Path | None:
    """The output folder of `path` (an output folder, or its pairs/ folder); None for a pairs file or
    a pairs folder elsewhere."""
    path = Path(path)
    if (path / PAIRS_DIR).is_dir():
        return path
    return path.parent if path.name == PAIRS_DIR else None


def crop_rows(crops_dir: Path, crop_ids: pa.Array | Iterable[str | None], columns: Sequence[str]) -> pa.Table:
    """The `columns` (those the table has) of the crops `crop_ids` (nulls and repeats ignored) in a
    run's crops folder: a pushed-down filter, so only the rows asked for are read. A table with
    just `crop_id` and no row when there is no such folder or no id."""
    ids = crop_ids if isinstance(crop_ids, pa.Array) else pa.array(list(crop_ids), pa.string())
    wanted = pc.unique(ids.drop_null())
    if not len(wanted) or not crops_dir.is_dir():
        return pa.table({"crop_id": pa.array([], pa.string())})
    dataset = ds.dataset(crops_dir, format="parquet", partitioning=None)
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present, filter=pc.field("crop_id").isin(wanted))


def read_run(path: str | Path) -> Run:
    """The run at `path`: an output folder, its pairs/ folder, or one pairs Parquet file."""
    path = Path(path)
    run_dir = run_folder(path)
    pairs = pq.read_table(run_dir / PAIRS_DIR if run_dir else path, partitioning=None)
    crops = cfg = None
    if run_dir and (run_dir / CROPS_DIR).is_dir():
        crops = pq.read_table(run_dir / CROPS_DIR, columns=CROP_COLUMNS, partitioning=None)
    if run_dir and (run_dir / "config.yaml").is_file():
        cfg = load_config([str(run_dir / "config.yaml")])
    return Run(run_dir or path.parent, pairs, crops, cfg)


def read_split(split_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """(truth, garments) tables of a benchmark split folder."""
    split = Path(split_dir)
    return pq.read_table(split / "truth.parquet"), pq.read_table(split / "garments.parquet")


def write_curve(pairs: pa.Table, truth: pa.Table, path: Path) -> None:
    """The precision-vs-coverage curve of `pairs` as Parquet: rank, score, true, precision, coverage."""
    true = evaluation.is_true_pair(pairs["garment_id"].combine_chunks(), pairs["image_id"].combine_chunks(), truth)
    scores = pairs["score"].combine_chunks().fill_null(float("nan")).to_numpy(zero_copy_only=False)
    pq.write_table(pa.table(evaluation.precision_coverage(scores, true)), path)
