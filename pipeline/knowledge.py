"""Fashion knowledge of a run with Ray Data: image labels over the run's crops and scene rows, hash-
partitioned by image and written by the workers; partial counts per batch (`core.knowledge`) from
the workers, summed as they stream in. Only running totals live on the driver: their rows are
bounded by the vocabulary, not by the run's size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import ray
from pyarrow.fs import FileType
from ray.data import Dataset
from ray.data.expressions import lit

from core import knowledge as kn
from core.config import KnowledgeConfig
from core.schemas import CROPS_DIR, OCCASION_CONFIDENCE, SCENES_DIR
from core.storage import StorageConfig, filesystem, join
from core.vocab import ATTRIBUTES

KNOWLEDGE_DIR = "knowledge"  # in the run's output folder
IMAGES_DIR = "images"  # in KNOWLEDGE_DIR: one row per lookbook image (kn.image_labels)
LABEL_COLUMNS = ["image_id", *ATTRIBUTES, OCCASION_CONFIDENCE]  # of crops and scene rows


@dataclass(frozen=True)
class KnowledgeTables:
    """The summed tables (`core.knowledge` keys + count), the images labelled and how many of them
    have a confident occasion."""

    category_occasion: pd.DataFrame
    attribute_pairs: pd.DataFrame
    combinations: pd.DataFrame
    images: int
    confident_images: int


def read(uri: str, storage: StorageConfig, columns: list[str] | None = None) -> Dataset:
    fs, path = filesystem(uri, storage)
    return ray.data.read_parquet(path, filesystem=fs, columns=columns, partitioning=None)


def summed(ds: Dataset, counts: Callable[[pd.DataFrame], pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """The per-batch `counts` of `ds` (keys + count, computed by the workers), summed per `keys` as
    they stream in: the driver holds one vocabulary-sized running total, never the rows. No
    shuffle: a groupby would start its aggregators for tables this small."""
    total: pd.Series | None = None
    for part in ds.map_batches(counts, batch_format="pandas").iter_batches(batch_size=None, batch_format="pandas"):
        part = part.groupby(keys)[kn.COUNT].sum()
        total = part if total is None else total.add(part, fill_value=0)
    if total is None or not len(total):
        return pd.DataFrame(columns=[*keys, kn.COUNT])
    return total.astype(np.int64).reset_index().sort_values(keys, ignore_index=True)


def labelled_rows(crops: Dataset, output: str, storage: StorageConfig) -> Dataset:
    """The run's `crops` (LABEL_COLUMNS), and its scene rows where it has them (a run before
    SCENES_DIR has none), as the input of `core.knowledge.image_labels`."""
    rows = crops.with_column(kn.SCENE, lit(False))
    fs, scenes = filesystem(join(output, SCENES_DIR), storage)
    if fs.get_file_info(scenes).type == FileType.Directory:
        rows = rows.union(read(join(output, SCENES_DIR), storage, LABEL_COLUMNS).with_column(kn.SCENE, lit(True)))
    return rows


def run_knowledge(output: str, storage: StorageConfig, cfg: KnowledgeConfig) -> KnowledgeTables:
    """Label every image of the run at `output` (written to KNOWLEDGE_DIR/IMAGES_DIR, replacing an
    earlier one) and sum the co-occurrence tables."""
    crops = read(join(output, CROPS_DIR), storage, LABEL_COLUMNS)
    images_uri = join(output, KNOWLEDGE_DIR, IMAGES_DIR)
    labels = partial(kn.image_labels, min_confidence=cfg.min_confidence)
    fs, images_path = filesystem(images_uri, storage)
    by_image = labelled_rows(crops, output, storage).repartition(cfg.partitions, keys=["image_id"])
    # A whole block per call: the hash partitions hold every row of their images (as map_groups relies on)
    by_image.map_batches(labels, batch_size=None, batch_format="pandas").write_parquet(
        images_path, filesystem=fs, mode="overwrite"
    )
    images = read(images_uri, storage)
    pairs = partial(kn.attribute_pair_counts, min_confidence=cfg.min_confidence)
    labelled = summed(images, kn.label_counts, [kn.CONFIDENT]).set_index(kn.CONFIDENT)[kn.COUNT]
    return KnowledgeTables(
        category_occasion=summed(images, kn.category_occasion_counts, kn.CATEGORY_OCCASION_KEYS),
        attribute_pairs=summed(crops, pairs, kn.ATTRIBUTE_PAIR_KEYS),
        combinations=summed(images, kn.combination_counts, kn.COMBINATION_KEYS),
        images=int(labelled.sum()),
        confident_images=int(labelled.get(True, 0)),
    )
