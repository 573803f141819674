"""Gallery cards of the report: a pair as its garment image beside the lookbook image with the
matched box drawn, with scores, margin, caption and attributes; a crop chosen by several garments.

A card's data is a `dict` with the pairs' columns (`PAIR_COLUMNS`) plus `crop` (its crops row:
caption and attributes, {} if unknown) and `judged` (True / False / None: label or truth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.vocab import ATTRIBUTES
from quality.page import esc, image, note, number, tag
from quality.selection import Boundary
from quality.thumbnails import Thumb, ThumbSpec

# What a card reads of a pair (never the candidate lists).
PAIR_COLUMNS = (
    "garment_id", "garment_uri", "garment_caption", "image_id", "image_uri", "crop_id", "box",
    "s_vlm", "s_siglip", "score", "margin", "crop_margin", "n_candidates", "tier", "confidence",
)  # fmt: skip


def garment_spec(row: Mapping) -> ThumbSpec | None:
    return ThumbSpec(row["garment_uri"]) if row.get("garment_uri") else None


def lookbook_spec(row: Mapping) -> ThumbSpec | None:
    """The lookbook image with the matched box; its uri from the pair, else from its crop row."""
    uri = row.get("image_uri") or row.get("crop", {}).get("uri")
    if not uri:
        return None
    box = row.get("box")
    return ThumbSpec(uri, tuple(box) if box is not None else None)


def picture(spec: ThumbSpec | None, thumbs: Mapping[ThumbSpec, Thumb], alt: str, absent: str) -> str:
    """The thumbnail as an <img>, or a grey box saying why there is none (`absent`: no spec)."""
    if spec is None:
        return f'<div class="missing">{esc(alt)}: {esc(absent)}</div>'
    thumb = thumbs.get(spec, Thumb(error="not made"))
    if not thumb.jpeg:
        return f'<div class="missing">{esc(alt)}: {esc(thumb.error)}</div>'
    return image(thumb.jpeg, "image/jpeg", f"{alt} {spec.uri}")


def _line(label: str, value: object) -> str:
    return f"<b>{esc(label)}</b> {esc(number(value))}"


def attributes_text(crop: Mapping) -> str:
    """`category=dress, colour=red, ...` of the crop's known attributes."""
    return ", ".join(f"{name}={crop[name]}" for name in ATTRIBUTES if crop.get(name))


def pair_card(row: Mapping, thumbs: Mapping[ThumbSpec, Thumb], badges: Sequence[tuple[str, str]] = ()) -> str:
    """One pair: tags (tier, `badges` as (text, kind), the judgement), both pictures, ids, the
    scores and the captions."""
    tags = [tag(row.get("tier") or "?", row.get("tier") or "unmatched"), *(tag(t, k) for t, k in badges)]
    if row.get("judged") is not None:
        tags.append(tag("true pair" if row["judged"] else "false pair", "true" if row["judged"] else "false"))
    crop = row.get("crop") or {}
    scores = [_line(k, row.get(k)) for k in ("score", "margin", "crop_margin", "s_vlm", "s_siglip")]
    confidence = row.get("confidence")
    if confidence is not None and confidence == confidence:
        scores.append(_line("confidence", confidence))
    lines = [
        "".join(tags),
        f"<b>garment</b> {esc(row['garment_id'])} &rarr; <b>crop</b> {esc(number(row.get('crop_id')))}",
        " &middot; ".join(scores) + f" &middot; {_line('candidates', row.get('n_candidates'))}",
        f"<b>garment caption</b> {esc(row.get('garment_caption') or '')}",
    ]
    if crop:
        lines.append(f"<b>crop caption</b> {esc(crop.get('caption') or '')}")
        lines.append(f"<b>attributes</b> {esc(attributes_text(crop))}")
    pics = picture(garment_spec(row), thumbs, "garment", "no uri") + picture(
        lookbook_spec(row), thumbs, "lookbook", "no candidate"
    )
    return f'<figure class="card"><div class="pics">{pics}</div><figcaption>{"<br>".join(lines)}</figcaption></figure>'


def crop_card(row: Mapping, garments: int, thumbs: Mapping[ThumbSpec, Thumb]) -> str:
    """A crop that is the best match of `garments` garments: its lookbook picture and attributes."""
    crop = row.get("crop") or {}
    lines = [
        tag(f"best match of {garments:,} garments", "edge"),
        f"<b>crop</b> {esc(row['crop_id'])} &middot; <b>image</b> {esc(number(row.get('image_id')))}",
        f"<b>caption</b> {esc(crop.get('caption') or '')}",
        f"<b>attributes</b> {esc(attributes_text(crop))}",
    ]
    pics = picture(lookbook_spec(row), thumbs, "lookbook", "no uri")
    return f'<figure class="card"><div class="pics">{pics}</div><figcaption>{"<br>".join(lines)}</figcaption></figure>'


def grid(cards: Sequence[str]) -> str:
    return f'<div class="grid">{"".join(cards)}</div>'


def divider(text: str) -> str:
    """A full-width line inside a grid, e.g. where a tier boundary falls."""
    return f'<div class="divider">{esc(text)}</div>'


def tier_gallery(
    tier: str, rows: Sequence[Mapping], total: int, how: str, thumbs: Mapping[ThumbSpec, Thumb], boundary: bool
) -> str:
    """A tier's sampled pairs (`rows` of its `total`); `how` says how they were drawn; with
    `boundary`, a link to the pairs nearest its lower boundary."""
    link = f' &middot; <a href="#boundary-{esc(tier)}">pairs nearest its lower boundary</a>' if boundary else ""
    head = f'<h3 id="tier-{esc(tier)}">{esc(tier)}: {len(rows):,} of {total:,} pairs{link}</h3>{note(how)}'
    return head + (grid([pair_card(r, thumbs) for r in rows]) if rows else note("no pair"))


def boundary_gallery(bound: Boundary, rows: Mapping[int, Mapping], key: str, thumbs: Mapping[ThumbSpec, Thumb]) -> str:
    """The lowest pairs of a tier by `key`, a divider where the boundary falls, then the highest
    pairs of the tier below; each card tagged with its side."""
    inside = [pair_card(rows[i], thumbs, [(f"lowest in {bound.tier}", "edge")]) for i in bound.inside.tolist()]
    below = [pair_card(rows[i], thumbs, [(f"highest below {bound.tier}", "edge")]) for i in bound.below.tolist()]
    lowest = number(rows[int(bound.inside[-1])].get(key))
    line = f"boundary: {bound.tier} above ({key} >= {lowest}), {bound.below_tier} below"
    head = f'<h3 id="boundary-{esc(bound.tier)}">{esc(bound.tier)} / {esc(bound.below_tier)}</h3>'
    text = (
        f"the {len(inside)} lowest pairs of {bound.tier} by {key}, then the {len(below)} highest of {bound.below_tier}"
    )
    return head + note(text) + grid([*inside, divider(line), *below])


def crops_gallery(
    top: Sequence[tuple[int, int]], rows: Mapping[int, Mapping], thumbs: Mapping[ThumbSpec, Thumb]
) -> str:
    """The most chosen crops: `top` holds (row of one of its pairs, garments that chose it)."""
    if not top:
        return note("no crop is the best match of more than one garment")
    return grid([crop_card(rows[row], garments, thumbs) for row, garments in top])
