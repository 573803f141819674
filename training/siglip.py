"""Pure pieces of SigLIP training: training texts from known attributes, the multi-positive sigmoid
loss, and the hold-out metrics (zero-shot accuracy, retrieval recall@k).

Texts are built from the same templates the zero-shot tagger and the caption use
(`captioner.prompts`, `captioner.caption_template` in conf/mine.yaml), so the text tower learns the
strings the job embeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from core.vocab import ATTRIBUTES, prompts

# Attributes that name the garment in a short caption, in caption word order ("a red striped dress").
SHORT_CAPTION_ORDER = ("colour", "pattern", "category")

Claim = frozenset[tuple[str, str]]  # (attribute, value) pairs a text asserts


def known(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attributes with a value: "" (unknown to the data set) is left out."""
    return {attr: value for attr, value in attributes.items() if attr in ATTRIBUTES and value}


def short_caption(attributes: Mapping[str, str]) -> str:
    """ "a red striped dress": the known values of `SHORT_CAPTION_ORDER`, after "a"."""
    return " ".join(["a", *(attributes[a] for a in SHORT_CAPTION_ORDER if attributes.get(a))])


def text_options(
    attributes: Mapping[str, str],
    templates: Mapping[str, str],
    caption_template: str,
    vocab: Mapping[str, Sequence[str]],
    rng: np.random.Generator,
    catalogue_text: str = "",
) -> list[tuple[str, Claim]]:
    """Texts true of a garment with `attributes`, each with the (attribute, value) pairs it asserts.

    In order: the short caption (all known attributes of `SHORT_CAPTION_ORDER`); `caption_template`
    filled with the known values and, for unknown attributes, a value drawn from `vocab` with `rng`
    (asserting only the known ones); `catalogue_text` if not empty (asserting every known attribute);
    one zero-shot prompt `templates[attr]` per known attribute.
    """
    facts = known(attributes)
    filled = {attr: facts.get(attr) or str(rng.choice(vocab[attr])) for attr in ATTRIBUTES}
    everything = frozenset(facts.items())
    options = [
        (short_caption(facts), frozenset((a, facts[a]) for a in SHORT_CAPTION_ORDER if a in facts)),
        (caption_template.format(**filled), everything),
    ]
    if catalogue_text.strip():
        options.append((catalogue_text, everything))
    options += [(templates[attr].format(value), frozenset({(attr, value)})) for attr, value in facts.items()]
    return options


def vocabulary_prompts(
    templates: Mapping[str, str], vocab: Mapping[str, Sequence[str]], attributes: Sequence[str]
) -> list[tuple[str, Claim]]:
    """The zero-shot prompt of every vocabulary value of each of `attributes` (`core.vocab.prompts`:
    the texts the tagger ranks, values that never occur in the data included), with its claim."""
    ranked = prompts(vocab, templates)
    return [(text, frozenset({(attr, value)})) for attr in attributes for value, text in zip(vocab[attr], ranked[attr])]


def decided(claims: Sequence[Claim], attributes: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(n_images, n_texts) bool: image i's known attributes decide text j (each attribute j claims
    has a value for image i), so the pair can count as a positive or a negative."""
    facts = [set(known(a)) for a in attributes]
    names = [{attr for attr, _ in claim} for claim in claims]
    return np.array([[claimed <= fact for claimed in names] for fact in facts], dtype=bool)


def positives(claims: Sequence[Claim], attributes: Sequence[Mapping[str, str]]) -> np.ndarray:
    """(n_images, n_texts) bool: text j is true of image i when every pair it claims is among
    image i's known attributes."""
    facts = [frozenset(known(a).items()) for a in attributes]
    return np.array([[claim <= fact for claim in claims] for fact in facts], dtype=bool)


def sigmoid_loss(logits: torch.Tensor, positive: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss with any number of positives per row.

    logits: (n, m) scaled and biased similarities; positive: (n, m) bool; counted: (n, m) bool or
    float, the pairs in the sum and their weights (None: all, weight 1). Returns
    -sum(w * log sigmoid(z * logits)) / n over the counted pairs, w their weight, z = +1 on
    positives, -1 elsewhere; with `positive` the identity and every pair counted this is
    what `SiglipModel(..., return_loss=True)` computes.
    """
    signs = positive.to(logits.dtype) * 2 - 1
    terms = torch.nn.functional.logsigmoid(signs * logits)
    if counted is not None:
        terms = terms * counted.to(logits.dtype)
    return -terms.sum() / logits.shape[0]


def same_id_positives(ids: Sequence[str]) -> np.ndarray:
    """(n, n) bool: images i != j that show the same garment id; id "" (a distractor) matches nothing."""
    ids = np.asarray(ids)
    same = (ids[:, None] == ids[None, :]) & (ids != "")[:, None]
    np.fill_diagonal(same, False)
    return same


def learning_rate_factor(step: int, progress: float, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate: linear warm-up over `warmup_steps` steps, then a cosine
    from 1 to 0 as `progress` (fraction of the run done, by steps or by time, 0..1) goes from 0 to 1."""
    warmup = min(1.0, (step + 1) / max(1, warmup_steps))
    return warmup * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def recall_at_k(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """`recall_any_at_k` with one true match per query: `targets` (q,) int, its gallery row."""
    positive = np.zeros((len(queries), len(gallery)), bool)
    positive[np.arange(len(targets)), targets] = True
    return recall_any_at_k(queries, gallery, positive, ks)


def recall_any_at_k(
    queries: np.ndarray, gallery: np.ndarray, positive: np.ndarray, ks: Sequence[int]
) -> dict[int, float]:
    """Fraction of queries with a true match among their k nearest gallery rows by inner product.

    queries: (q, d) and gallery: (g, d) unit vectors; positive: (q, g) bool, the true matches of
    each query (a query with none never hits). Ties rank the lower gallery row first.
    """
    scores = queries @ gallery.T
    best = np.where(positive, scores, -np.inf).argmax(axis=1)  # the first of the highest-scored matches
    best_scores = scores[np.arange(len(best)), best][:, None]
    ahead = (scores > best_scores) | ((scores == best_scores) & (np.arange(len(gallery)) < best[:, None]))
    rank = np.where(positive.any(axis=1), ahead.sum(axis=1), len(gallery))  # 0: a true match is first
    return {k: float((rank < k).mean()) if len(rank) else 0.0 for k in ks}


def attribute_accuracy(
    predicted: Sequence[Mapping[str, str]], truth: Sequence[Mapping[str, str]], attributes: Sequence[str]
) -> dict[str, tuple[float, int]]:
    """Per attribute: (fraction of rows predicted right, rows counted); a row counts when its true
    value is known (not "")."""
    out = {}
    for attr in attributes:
        pairs = [(p[attr], t[attr]) for p, t in zip(predicted, truth) if t.get(attr)]
        out[attr] = (sum(p == t for p, t in pairs) / len(pairs) if pairs else 0.0, len(pairs))
    return out
