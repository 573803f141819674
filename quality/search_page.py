"""The contact sheet of a search (`quality.search`): the query's pictures and text, then one card
per crop found, with the lookbook image (box drawn) and the garment the run paired with it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from core.config import MineConfig
from quality import page
from quality.gallery import grid, picture
from quality.search import Query
from quality.thumbnails import ThumbnailCache, ThumbSpec


def result_card(row: dict, thumbs: dict) -> str:
    lookbook = ThumbSpec(row["image_uri"], tuple(row["box"]))
    garment = ThumbSpec(row["garment_uri"]) if row["garment_uri"] else None
    pictures = picture(lookbook, thumbs, "lookbook", "no uri") + picture(garment, thumbs, "garment", "no pair")
    lines = [
        page.tag(f"#{row['rank']}", row["tier"] or "unmatched"),
        f"<b>crop</b> {page.esc(row['crop_id'])} &middot; <b>score</b> {page.number(row['score'])}"
        f" &middot; <b>s_vlm</b> {page.number(row['s_vlm'])}",
        f"<b>paired garment</b> {page.esc(row['garment_id'] or 'none')} ({page.esc(row['tier'] or '-')})",
    ]
    caption = "<br>".join(lines)
    return f'<figure class="card"><div class="pics">{pictures}</div><figcaption>{caption}</figcaption></figure>'


def contact_sheet(results: pa.Table, query: Query, cfg: MineConfig, thumbs_folder: Path) -> str:
    """The whole page; thumbnails are cached under `thumbs_folder`."""
    rows = results.to_pylist()
    asked = [ThumbSpec(uri) for uri in (query.image, query.sketch) if uri]
    specs = asked + [ThumbSpec(r["image_uri"], tuple(r["box"])) for r in rows]
    specs += [ThumbSpec(r["garment_uri"]) for r in rows if r["garment_uri"]]
    thumbs = ThumbnailCache(thumbs_folder, cfg.storage, decode_limits=cfg.decode).get_many(specs)
    shown = "".join(picture(spec, thumbs, "query", "") for spec in asked)
    said = page.note(f"text: {query.text}") if query.text else ""
    body = page.section("query", f"Query ({query.kind})", f'<div class="row">{shown}</div>{said}')
    body += page.section("results", f"{len(rows)} crops", grid([result_card(r, thumbs) for r in rows]))
    meta = f"run {cfg.output} · {query.kind} · vision weight {cfg.search.vision_weight:g}"
    return page.document("lookbook-miner search", meta, [("query", "Query"), ("results", "Results")], body)
