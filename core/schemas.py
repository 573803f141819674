"""Column names and Arrow schemas of every table the job writes."""

from __future__ import annotations

import pyarrow as pa

from core.vocab import ATTRIBUTES

REASON = "reason"  # internal column: "" for a good row, else a quarantine reason code
ERROR = "error"  # internal column: the error message behind `reason`
SHARD = "shard"  # internal column: the row's work shard (see pipeline.commits)
ROW_IDS = ("crop_id", "image_id")  # a row is identified by the first of these it has
OCCASION_CONFIDENCE = "occasion_confidence"  # a crop's probability of its occasion (actors.captioner)

# A run's output folder: one folder per table, and the job stages that name commit markers,
# quarantine folders (quarantine/<stage>) and metrics.
CROPS_DIR, INDEX_DIR, SCORED_DIR, PAIRS_DIR, QUARANTINE_DIR = "crops", "index", "scored", "pairs", "quarantine"
SCENES_DIR = "scenes"  # one row per lookbook image with crops: the describe stage's labels of the whole image
LOOKBOOK, GARMENTS, TIERING = "lookbook", "garments", "tiering"
GARMENT_IDS = ("garment_id", "garment_uri")  # id and uri columns of scored garment rows

BOX = pa.list_(pa.float32(), 4)  # [x0, y0, x1, y1] in pixels of the original image, upright (EXIF applied)

QUARANTINE = pa.schema(
    [
        ("id", pa.string()),
        ("uri", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("error", pa.string()),
    ]
)


EMBEDDING_TYPES = {"float32": pa.float32(), "float16": pa.float16()}


def embedding(dim: int, dtype: str = "float32") -> pa.DataType:
    """A unit vector of `dim` values stored as `dtype` ("float32", or "float16" to halve I/O)."""
    return pa.list_(EMBEDDING_TYPES[dtype], dim)


def crops(dim: int, dtype: str = "float32") -> pa.Schema:
    """One row per detected crop of a lookbook image; embeddings stored as `dtype`."""
    return pa.schema(
        [
            ("crop_id", pa.string()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("box", BOX),
            ("det_score", pa.float32()),
            ("det_class", pa.int32()),
            ("caption", pa.string()),
            *((name, pa.string()) for name in ATTRIBUTES),
            (OCCASION_CONFIDENCE, pa.float32()),
            ("embedding", embedding(dim, dtype)),
            ("caption_embedding", embedding(dim, dtype)),
        ]
    )


SCENE_CLASS = -2  # det_class of a scene row: the whole lookbook image, labelled beside its crops

# One row per lookbook image that has crops: the describe stage's caption and attributes of the
# whole image (its `occasion`, with OCCASION_CONFIDENCE, is the image's label).
SCENES = pa.schema(
    [
        ("image_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
        *((name, pa.string()) for name in ATTRIBUTES),
        (OCCASION_CONFIDENCE, pa.float32()),
    ]
)


def crops_of(batch: dict, dtype: str) -> pa.Schema:
    """The crops schema of a batch with an (n, dim) `embedding` column, stored as `dtype`."""
    return crops(batch["embedding"].shape[1], dtype)


SCORED = pa.schema(
    [
        ("garment_id", pa.string()),
        ("garment_uri", pa.string()),
        ("garment_caption", pa.string()),
        ("image_id", pa.string()),
        ("image_uri", pa.string()),  # the lookbook image's uri, as in its manifest
        ("crop_id", pa.string()),
        ("box", BOX),
        ("s_vlm", pa.float32()),
        ("s_siglip", pa.float32()),
        ("score", pa.float32()),
        ("margin", pa.float32()),
        ("n_candidates", pa.int32()),
        # The garment's index candidates in search order (image cosine descending), n_candidates of each:
        # what retrieval recall@k and re-scoring with other lambdas read (quality.evaluation).
        ("candidate_crop_ids", pa.list_(pa.string())),
        ("candidate_image_ids", pa.list_(pa.string())),
        ("candidate_s_vlm", pa.list_(pa.float32())),
        ("candidate_s_siglip", pa.list_(pa.float32())),
    ]
)

# `crop_margin`: score minus the best score of the same crop with any other garment holding it among its
# candidates, NaN when none does (core.crop_rivals); `confidence`: the calibrated probability that the
# pair is true (tiers.mode calibrated), else NaN.
PAIRS = pa.schema([*SCORED, ("crop_margin", pa.float32()), ("tier", pa.string()), ("confidence", pa.float32())])
