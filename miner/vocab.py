"""Structured garment attributes: prompts for zero-shot tagging, captions, and parsing captions back."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

ATTRIBUTES = ("category", "colour", "pattern", "sleeve", "length", "occasion")
UNKNOWN = "unknown"


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
