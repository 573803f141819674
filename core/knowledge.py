"""Fashion-knowledge statistics from described crops: which garments an occasion's images hold,
which attribute values go together, and the garment combinations of each occasion.

Every count is split by `confident`: whether the occasion label it rests on (an image's, or a
crop's) has confidence >= `min_confidence`, so a table can be restricted to confident labels.
Counts are summed over batches (`*_counts` give one batch's partial counts), then `with_lift`
turns a contingency table into support and lift.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
import pandas as pd

from core.schemas import OCCASION_CONFIDENCE
from core.vocab import ATTRIBUTES, OCCASION, UNKNOWN

CONFIDENT = "confident"
COUNT = "count"
SCENE = "scene"  # input column of `image_labels`: the row is an image's scene row (schemas.SCENES)
CATEGORY = "category"
COMBINATION = "combination"  # an image's distinct known categories, sorted, joined by COMBINATION_SEPARATOR
COMBINATION_SEPARATOR = " + "
# Keys of the summed tables.
CATEGORY_OCCASION_KEYS = [CATEGORY, OCCASION, CONFIDENT]
ATTRIBUTE_PAIR_KEYS = ["attribute_a", "value_a", "attribute_b", "value_b", CONFIDENT]
COMBINATION_KEYS = [OCCASION, COMBINATION, CONFIDENT]


def image_labels(rows: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    """One row per image of `rows` (image_id, the attributes, occasion_confidence, and SCENE: whether
    the row is the image's scene row, its describe-stage label as a whole; every row of an image
    must be there): its occasion, that of its scene row where it has one, else that of its most
    confident crop with a known occasion (ties: the first), `occasion_confidence` (0 with none:
    UNKNOWN), `confident`, its crops' distinct known `categories` (sorted) and their `combination`."""
    rows = rows.reset_index(drop=True)
    scene = rows[SCENE].to_numpy(bool)
    described_whole = rows["image_id"].isin(rows.loc[scene, "image_id"]).to_numpy()
    labelled = rows[scene | ~described_whole]  # scene rows, and the crops of images without one
    known = labelled[labelled[OCCASION] != UNKNOWN]
    best = known.loc[known.groupby("image_id", sort=False)[OCCASION_CONFIDENCE].idxmax()]  # the first of ties
    crops = rows[~scene & (rows[CATEGORY] != UNKNOWN)].drop_duplicates(["image_id", CATEGORY])
    categories = crops.sort_values(CATEGORY, kind="stable").groupby("image_id", sort=False)[CATEGORY].agg(list)
    out = pd.DataFrame({"image_id": rows["image_id"].unique()})
    out = out.merge(best[["image_id", OCCASION, OCCASION_CONFIDENCE]], on="image_id", how="left")
    out[OCCASION] = out[OCCASION].fillna(UNKNOWN).astype(str)
    out[OCCASION_CONFIDENCE] = out[OCCASION_CONFIDENCE].fillna(0.0).astype(np.float32)
    out[CONFIDENT] = out[OCCASION_CONFIDENCE] >= min_confidence
    out["categories"] = [list(map(str, c)) if isinstance(c, list) else [] for c in out["image_id"].map(categories)]
    out[COMBINATION] = out["categories"].apply(COMBINATION_SEPARATOR.join)
    out["image_id"] = out["image_id"].astype(str)
    return out


def category_occasion_counts(images: pd.DataFrame) -> pd.DataFrame:
    """CATEGORY_OCCASION_KEYS + count: images of each occasion that hold the category (image rows
    of `image_labels`; images with an UNKNOWN occasion or no known category count nowhere)."""
    known = images[images[OCCASION] != UNKNOWN]
    pairs = pd.DataFrame(
        [(c, o, k) for cs, o, k in zip(known["categories"], known[OCCASION], known[CONFIDENT]) for c in cs],
        columns=CATEGORY_OCCASION_KEYS,
    )
    return pairs.groupby(CATEGORY_OCCASION_KEYS, as_index=False).size().rename(columns={"size": COUNT})


def label_counts(images: pd.DataFrame) -> pd.DataFrame:
    """[CONFIDENT, count]: image rows of `image_labels` by whether their label is confident."""
    return images.groupby(CONFIDENT, as_index=False).size().rename(columns={"size": COUNT})


def combination_counts(images: pd.DataFrame) -> pd.DataFrame:
    """COMBINATION_KEYS + count: images of each occasion per garment combination (images with an
    UNKNOWN occasion or no known category count nowhere)."""
    known = images[(images[OCCASION] != UNKNOWN) & (images[COMBINATION] != "")]
    return known.groupby(COMBINATION_KEYS, as_index=False).size().rename(columns={"size": COUNT})


def attribute_pair_counts(crops: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    """ATTRIBUTE_PAIR_KEYS + count: crops per pair of known values of two attributes (each pair of
    ATTRIBUTES once, in their order); `confident`: the crop's occasion_confidence >= min_confidence."""
    confident = crops[OCCASION_CONFIDENCE] >= min_confidence
    parts = []
    for a, b in combinations(ATTRIBUTES, 2):
        known = (crops[a] != UNKNOWN) & (crops[b] != UNKNOWN)
        part = pd.DataFrame(
            {"value_a": crops.loc[known, a], "value_b": crops.loc[known, b], CONFIDENT: confident[known]}
        )
        part = part.groupby(["value_a", "value_b", CONFIDENT], as_index=False).size()
        parts.append(part.assign(attribute_a=a, attribute_b=b))
    counts = pd.concat(parts, ignore_index=True).rename(columns={"size": COUNT})
    return counts[[*ATTRIBUTE_PAIR_KEYS, COUNT]]


def with_lift(counts: pd.DataFrame, a: str, b: str, within: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """`counts` (one row per seen (a, b) value pair, its `count` n_ab) with `support` = n_ab / N and
    `lift` = n_ab * N / (n_a * n_b): n_a and n_b are the value totals and N the total count, all
    within each group of the `within` columns. Lift 1 is independence, above 1 the values go together."""
    groups = list(within)
    out = counts.copy()

    def total(keys: list[str]) -> pd.Series:
        return out.groupby(keys)[COUNT].transform("sum") if keys else pd.Series(out[COUNT].sum(), index=out.index)

    n = total(groups)
    out["support"] = out[COUNT] / n
    out["lift"] = out[COUNT] * n / (total([*groups, a]) * total([*groups, b]))
    return out


def restricted(counts: pd.DataFrame, keys: list[str], confident_only: bool) -> pd.DataFrame:
    """The `keys` + count table over confident labels only, or over all labels (confident and weak summed)."""
    rows = counts[counts[CONFIDENT]] if confident_only else counts
    return rows.groupby([k for k in keys if k != CONFIDENT], as_index=False)[COUNT].sum()


def top_combinations(counts: pd.DataFrame, per_occasion: int) -> pd.DataFrame:
    """The `per_occasion` most frequent combinations of each occasion (ties: by combination), with
    their share of the occasion's images."""
    ranked = counts.sort_values([OCCASION, COUNT, COMBINATION], ascending=[True, False, True])
    ranked["share"] = ranked[COUNT] / ranked.groupby(OCCASION)[COUNT].transform("sum")
    return ranked.groupby(OCCASION, sort=True).head(per_occasion).reset_index(drop=True)


LABELS = "labels"  # which labels a stacked table row counts: CONFIDENT_LABELS or ALL_LABELS
CONFIDENT_LABELS, ALL_LABELS = "confident", "all"


def by_labels(table: Callable[[bool], pd.DataFrame]) -> pd.DataFrame:
    """`table(confident_only)` over confident labels only and over all labels, stacked with a LABELS column."""
    parts = [table(only).assign(**{LABELS: name}) for name, only in ((CONFIDENT_LABELS, True), (ALL_LABELS, False))]
    return pd.concat(parts, ignore_index=True)


def lift_table(counts: pd.DataFrame, keys: list[str], a: str, b: str, within: tuple[str, ...] = ()) -> pd.DataFrame:
    """`with_lift` over confident labels only and over all labels (`by_labels`)."""
    return by_labels(lambda only: with_lift(restricted(counts, keys, only), a, b, within))


def combination_table(counts: pd.DataFrame, per_occasion: int) -> pd.DataFrame:
    """`top_combinations` over confident labels only and over all labels (`by_labels`)."""
    return by_labels(lambda only: top_combinations(restricted(counts, COMBINATION_KEYS, only), per_occasion))
