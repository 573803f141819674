"""Pure tests for core/vocab.py: prompts, captions, and parsing captions back into attributes."""

from pathlib import Path

import pytest
import yaml

from core.vocab import ATTRIBUTES, UNKNOWN, attributes_from_text, caption, prompts

VOCAB_PATH = Path(__file__).resolve().parents[1] / "conf" / "vocab.yaml"
TEMPLATE = "a {colour} {pattern} {category}, {sleeve} sleeves, {length}, for {occasion}"


@pytest.fixture(scope="module")
def vocab() -> dict[str, list[str]]:
    return yaml.safe_load(VOCAB_PATH.read_text())


def test_conf_vocab_covers_every_attribute(vocab: dict[str, list[str]]) -> None:
    assert set(vocab) == set(ATTRIBUTES)


def test_prompts() -> None:
    small = {attr: [f"{attr}1", f"{attr}2"] for attr in ATTRIBUTES}
    templates = {attr: f"<{attr}:{{}}>" for attr in ATTRIBUTES}
    got = prompts(small, templates)
    assert list(got) == list(ATTRIBUTES)
    assert got["colour"] == ["<colour:colour1>", "<colour:colour2>"]
    assert got["occasion"] == ["<occasion:occasion1>", "<occasion:occasion2>"]


def test_prompts_conf_vocab(vocab: dict[str, list[str]]) -> None:
    templates = {attr: "a photo of a {} garment" for attr in ATTRIBUTES}
    got = prompts(vocab, templates)
    assert got["category"][0] == f"a photo of a {vocab['category'][0]} garment"
    assert all(len(got[attr]) == len(vocab[attr]) for attr in ATTRIBUTES)


def test_caption() -> None:
    attrs = {
        "category": "dress",
        "colour": "red",
        "pattern": "striped",
        "sleeve": "long-sleeved",
        "length": "knee-length",
        "occasion": "party",
    }
    assert caption(TEMPLATE, attrs) == "a red striped dress, long-sleeved sleeves, knee-length, for party"


def test_caption_round_trips_through_parser(vocab: dict[str, list[str]]) -> None:
    for i in range(max(len(v) for v in vocab.values())):
        attrs = {attr: vocab[attr][i % len(vocab[attr])] for attr in ATTRIBUTES}
        assert attributes_from_text(caption(TEMPLATE, attrs), vocab) == attrs


def test_attributes_from_text_hyphen_normalisation_and_case(vocab: dict[str, list[str]]) -> None:
    got = attributes_from_text("A Navy T - Shirt with short - sleeved sleeves, hip -length , for Beach", vocab)
    assert got == {
        "category": "t-shirt",
        "colour": "navy",
        "pattern": UNKNOWN,
        "sleeve": "short-sleeved",
        "length": "hip-length",
        "occasion": "beach",
    }


def test_attributes_from_text_longest_then_earliest(vocab: dict[str, list[str]]) -> None:
    # "shirt" is named first, but the longer "t-shirt" wins; "blue" (4) beats the earlier "red" (3)
    got = attributes_from_text("a shirt under a t-shirt, red and blue", vocab)
    assert got["category"] == "t-shirt"
    assert got["colour"] == "blue"
    # equal lengths: the earliest in the text wins
    assert attributes_from_text("pink and blue", vocab)["colour"] == "pink"
    assert attributes_from_text("blue and pink", vocab)["colour"] == "blue"


def test_attributes_from_text_whole_words_only(vocab: dict[str, list[str]]) -> None:
    # "shirt" inside "t-shirt" and "sleeved" suffixes must not count as separate words
    got = attributes_from_text("reddish shirts, undressed, greyish", vocab)
    assert got["category"] == UNKNOWN and got["colour"] == UNKNOWN
    assert attributes_from_text("a t-shirt", vocab)["category"] == "t-shirt"
    assert attributes_from_text("a long-sleeved coat", vocab)["sleeve"] == "long-sleeved"


def test_attributes_from_text_unknown(vocab: dict[str, list[str]]) -> None:
    assert attributes_from_text("", vocab) == {attr: UNKNOWN for attr in ATTRIBUTES}
    assert attributes_from_text("a photo of a person standing outside", vocab) == {attr: UNKNOWN for attr in ATTRIBUTES}
