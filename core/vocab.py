"""Structured garment attributes: prompts for zero-shot tagging, captions, and parsing captions back."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

ATTRIBUTES = ("category", "colour", "pattern", "sleeve", "length", "occasion")
OCCASION = "occasion"  # the attribute that labels a whole lookbook image too (jobs.knowledge)
UNKNOWN = "unknown"
# Words of the zero-shot prompts, the caption template and typical generated captions: what a
# tokenizer built for the vocabulary must know beside its values (see `vocabulary_words`).
CAPTION_WORDS = (
    "a", "an", "the", "photo", "picture", "of", "with", "without", "sleeves", "for", "garment",
    "in", "on", "and", "person", "man", "woman", "model", "wearing", "unknown", ",", ".",
)  # fmt: skip


def load_vocab(path: str | Path) -> dict[str, list[str]]:
    """Attribute name -> allowed values, in file order (the format of conf/vocab.yaml)."""
    vocab = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return {str(name): [str(value) for value in values] for name, values in vocab.items()}


def vocabulary_words(vocab: Mapping[str, Sequence[str]]) -> list[str]:
    """Every value of `vocab` (attribute -> values), the parts of hyphenated values, then `CAPTION_WORDS`."""
    values = [value for values in vocab.values() for value in values]
    parts = [part for value in values for part in value.split("-") if part]
    return list(dict.fromkeys([*values, *parts, *CAPTION_WORDS]))


def prompts(vocab: Mapping[str, Sequence[str]], templates: Mapping[str, str]) -> dict[str, list[str]]:
    """Per attribute, one prompt per vocabulary value: `templates[attr]` with `{}` replaced by the value."""
    return {attr: [templates[attr].format(value) for value in vocab[attr]] for attr in ATTRIBUTES}


def caption(template: str, attributes: Mapping[str, str]) -> str:
    """The caption text for a set of attribute values, e.g. "a red striped dress, long-sleeved sleeves, ..."."""
    return template.format(**attributes)


def attributes_from_text(text: str, vocab: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Attribute values named in free text (a generated caption); `UNKNOWN` where none is named.

    Matches whole words, case-insensitively, with " - " read as "-" (BERT-style tokenizers detach
    hyphens: "t - shirt"); where several values of one attribute occur, the longest one wins
    ("long-sleeved" over "sleeved"), then the earliest in the text.
    """
    lowered = re.sub(r"\s*-\s*", "-", text.lower())
    found = {}
    for attr in ATTRIBUTES:
        hits = []
        for value in vocab[attr]:
            match = re.search(rf"(?<![\w-]){re.escape(value.lower())}(?![\w-])", lowered)
            if match:
                hits.append((-len(value), match.start(), value))
        found[attr] = min(hits)[2] if hits else UNKNOWN
    return found
