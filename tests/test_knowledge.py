"""Pure tests for core/knowledge.py: image labels, co-occurrence counts and lift on hand-made data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import knowledge as kn
from core.vocab import ATTRIBUTES, UNKNOWN


def crop(image: str, category: str, occasion: str, confidence: float, colour: str = "red", scene: bool = False) -> dict:
    """A row of `image_labels`' input: a crop, or with `scene` the image's scene row."""
    attributes = dict.fromkeys(ATTRIBUTES, UNKNOWN)
    attributes.update(category=category, colour=colour, occasion=occasion)
    return {"image_id": image, **attributes, "occasion_confidence": confidence, kn.SCENE: scene}


CROPS = pd.DataFrame(
    [
        crop("a", "dress", "party", 0.9),
        crop("a", "bag", "casual", 0.4),
        crop("a", "dress", "party", 0.7),
        crop("b", "sneakers", "sport", 0.3, colour="white"),
        crop("b", "t-shirt", UNKNOWN, 0.0, colour="white"),
        crop("c", UNKNOWN, UNKNOWN, 0.0),
    ]
)


def test_an_image_takes_the_occasion_of_its_most_confident_crop() -> None:
    images = kn.image_labels(CROPS, min_confidence=0.5).set_index("image_id")
    assert images.loc["a", "occasion"] == "party" and images.loc["a", "occasion_confidence"] == pytest.approx(0.9)
    assert images.loc["b", "occasion"] == "sport" and not images.loc["b", kn.CONFIDENT]  # 0.3 < 0.5: weak
    assert images.loc["c", "occasion"] == UNKNOWN and images.loc["c", "occasion_confidence"] == 0.0
    assert images.loc["a", "categories"] == ["bag", "dress"] and images.loc["a", kn.COMBINATION] == "bag + dress"
    assert images.loc["b", kn.COMBINATION] == "sneakers + t-shirt" and images.loc["c", "categories"] == []


def test_an_image_with_a_scene_row_takes_its_occasion_and_its_crops_categories() -> None:
    """The scene row (the whole image, described) labels the image even where a crop is more
    confident; its own category (of the whole picture) is no garment of the image."""
    rows = pd.DataFrame(
        [
            crop("a", "dress", "party", 0.9),
            crop("a", "coat", "work", 0.6, scene=True),
            crop("b", "skirt", "party", 0.8),
            crop("b", "coat", UNKNOWN, 0.0, scene=True),  # a scene with no known occasion: UNKNOWN
        ]
    )
    images = kn.image_labels(rows, min_confidence=0.5).set_index("image_id")
    assert images.loc["a", "occasion"] == "work" and images.loc["a", "occasion_confidence"] == pytest.approx(0.6)
    assert images.loc["a", "categories"] == ["dress"] and images.loc["b", "categories"] == ["skirt"]
    assert images.loc["b", "occasion"] == UNKNOWN and not images.loc["b", kn.CONFIDENT]


def labels_one_image_at_a_time(rows: pd.DataFrame, min_confidence: float) -> dict[str, tuple]:
    """`image_labels` as its docstring says it, image by image (the reference)."""
    out = {}
    for image_id, group in rows.groupby("image_id", sort=False):
        scene, crops = group[group[kn.SCENE]], group[~group[kn.SCENE]]
        labelled = scene if len(scene) else crops
        known = labelled[labelled["occasion"] != UNKNOWN]
        best = known.iloc[int(np.argmax(known["occasion_confidence"].to_numpy()))] if len(known) else None
        occasion = UNKNOWN if best is None else best["occasion"]
        confidence = 0.0 if best is None else float(best["occasion_confidence"])
        categories = sorted(set(crops["category"]) - {UNKNOWN})
        out[image_id] = (occasion, confidence, confidence >= min_confidence, categories)
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["dress", "bag", UNKNOWN]),
            st.sampled_from(["party", "work", UNKNOWN]),
            st.sampled_from([0.2, 0.5, 0.8]),  # few values: ties
            st.booleans(),
        ),
        min_size=1,
        max_size=25,
    )
)
def test_image_labels_equal_the_image_by_image_reference(drawn) -> None:
    rows = pd.DataFrame([crop(i, c, o, p, scene=s) for i, c, o, p, s in drawn])
    rows = rows[~rows.duplicated(["image_id", kn.SCENE]) | ~rows[kn.SCENE]]  # at most one scene row an image
    got = kn.image_labels(rows, min_confidence=0.5)
    assert len(got) == rows["image_id"].nunique()
    expected = labels_one_image_at_a_time(rows, 0.5)
    for r in got.itertuples():
        occasion, confidence, confident, categories = expected[r.image_id]
        assert (r.occasion, r.confident, r.categories) == (occasion, confident, categories)
        assert r.occasion_confidence == pytest.approx(confidence)
        assert r.combination == " + ".join(categories)


def test_category_occasion_counts_count_images_not_crops() -> None:
    counts = kn.category_occasion_counts(kn.image_labels(CROPS, min_confidence=0.5))
    rows = {(r.category, r.occasion, r.confident): r.count for r in counts.itertuples()}
    assert rows == {
        ("bag", "party", True): 1,
        ("dress", "party", True): 1,  # two dress crops, one image
        ("sneakers", "sport", False): 1,
        ("t-shirt", "sport", False): 1,
    }


def test_lift_and_support_of_a_two_by_two_table() -> None:
    """N = 100; x: 40, y: 60; p: 50, q: 50. lift(x, p) = 30 * 100 / (40 * 50) = 1.5."""
    counts = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["p", "q", "p", "q"], "count": [30, 10, 20, 40]})
    out = kn.with_lift(counts, "a", "b")
    assert out["support"].tolist() == pytest.approx([0.3, 0.1, 0.2, 0.4])
    assert out["lift"].tolist() == pytest.approx([1.5, 0.5, 2 / 3, 4 / 3])
    assert (out["support"] * 100).sum() == pytest.approx(100)


def test_lift_within_groups_uses_each_groups_totals() -> None:
    """Two attribute pairs in one table: each pair's lift from its own totals (independent data: lift 1)."""
    one = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": ["p", "q", "p", "q"], "count": [1, 3, 2, 6]})
    two = one.assign(count=one["count"] * 10)
    counts = pd.concat([one.assign(pair=1), two.assign(pair=2)], ignore_index=True)
    out = kn.with_lift(counts, "a", "b", within=["pair"])
    assert out["lift"].tolist() == pytest.approx([1.0] * 8)
    assert out.groupby("pair")["support"].sum().tolist() == pytest.approx([1.0, 1.0])


def test_restricted_to_confident_labels_or_summed_over_both() -> None:
    counts = pd.DataFrame(
        {
            "category": ["dress", "dress", "bag"],
            "occasion": ["party"] * 3,
            "confident": [True, False, False],
            "count": [2, 5, 1],
        }
    )
    confident = kn.restricted(counts, kn.CATEGORY_OCCASION_KEYS, confident_only=True)
    assert confident.to_dict("records") == [{"category": "dress", "occasion": "party", "count": 2}]
    every = kn.restricted(counts, kn.CATEGORY_OCCASION_KEYS, confident_only=False)
    assert dict(zip(every["category"], every["count"])) == {"bag": 1, "dress": 7}


def test_attribute_pairs_count_known_values_of_each_pair_once() -> None:
    counts = kn.attribute_pair_counts(CROPS, min_confidence=0.5)
    colour_category = counts[(counts.attribute_a == "category") & (counts.attribute_b == "colour")]
    got = {(r.value_a, r.value_b, r.confident): r.count for r in colour_category.itertuples()}
    assert got == {
        ("dress", "red", True): 2,
        ("bag", "red", False): 1,
        ("sneakers", "white", False): 1,
        ("t-shirt", "white", False): 1,
    }
    assert set(zip(counts.attribute_a, counts.attribute_b)) == {
        ("category", "colour"),
        ("category", "occasion"),
        ("colour", "occasion"),
    }


def test_top_combinations_per_occasion_with_shares() -> None:
    counts = pd.DataFrame(
        {
            "occasion": ["party", "party", "party", "sport"],
            "combination": ["dress", "bag + dress", "coat", "sneakers"],
            "count": [5, 3, 3, 2],
        }
    )
    top = kn.top_combinations(counts, per_occasion=2)
    assert top[["occasion", "combination"]].values.tolist() == [
        ["party", "dress"],
        ["party", "bag + dress"],
        ["sport", "sneakers"],
    ]
    assert top["share"].tolist() == pytest.approx([5 / 11, 3 / 11, 1.0])


def test_stacked_tables_hold_confident_and_all_labels() -> None:
    counts = kn.category_occasion_counts(kn.image_labels(CROPS, min_confidence=0.5))
    table = kn.lift_table(counts, kn.CATEGORY_OCCASION_KEYS, "category", "occasion")
    confident = table[table[kn.LABELS] == kn.CONFIDENT_LABELS]
    assert sorted(confident["category"]) == ["bag", "dress"] and confident["lift"].tolist() == pytest.approx([1, 1])
    every = table[table[kn.LABELS] == kn.ALL_LABELS].set_index("category")
    assert every["count"].sum() == 4
    assert every.loc["dress", "lift"] == pytest.approx(1 * 4 / (1 * 2))  # party: 2 of 4 incidences, dress 1
