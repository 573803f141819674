"""HTML building blocks of the report: one self-contained page (inline CSS, images as data: URIs).

Every function that takes text escapes it (`esc`); arguments named `html` / `body` are markup made
by these functions and are inserted as they are.
"""

from __future__ import annotations

import base64
import html as html_lib
import math
from collections.abc import Iterable, Sequence

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#20252b;color:#eee;padding:14px 24px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{font-size:12px;color:#bbb}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:6px 24px;z-index:2;font-size:13px}
nav a{margin-right:14px;color:#386cb0;text-decoration:none}
main{padding:8px 24px 40px}
section{margin:18px 0 28px}
h2{font-size:17px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
h3 a{font-weight:400;font-size:13px;color:#386cb0}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.note{color:#666;font-size:12px}
.warn{color:#a33}
pre{background:#fff;border:1px solid #ddd;padding:8px;max-height:420px;overflow:auto;font-size:12px}
img.plot{max-width:100%;background:#fff;border:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:4px;padding:6px;font-size:12px;margin:0}
.card .pics{display:flex;gap:4px;align-items:flex-start}
.card .pics img{width:160px;height:auto;background:#eee}
.card .missing{width:160px;min-height:60px;background:#eee;color:#a33;font-size:11px;padding:4px;overflow-wrap:anywhere}
.card figcaption{margin-top:4px;overflow-wrap:anywhere}
.tag{display:inline-block;border-radius:3px;padding:0 5px;color:#fff;font-size:11px;margin-right:4px}
.tag.high{background:#1b9e77}.tag.mid{background:#386cb0}.tag.low{background:#e6820e}.tag.unmatched{background:#8c8c8c}
.tag.edge{background:#6a3d9a}.tag.true{background:#1b9e77}.tag.false{background:#c0392b}
.divider{grid-column:1/-1;border-top:3px dashed #6a3d9a;color:#6a3d9a;font-weight:600;padding-top:2px}
"""


def esc(text: object) -> str:
    """`text` as HTML text (quotes escaped too, so it is safe inside attributes)."""
    return html_lib.escape(str(text), quote=True)


def number(value: object, digits: int = 4) -> str:
    """A number for a table cell: ints with thousands separators, floats to at most `digits`
    decimals (trailing zeros dropped), "–" for None and NaN, anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        text = f"{value:,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return str(value)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image(data: bytes, mime: str, alt: str, css_class: str = "") -> str:
    """An <img> whose source is the bytes themselves."""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return f'<img{cls} src="{data_uri(data, mime)}" alt="{esc(alt)}">'


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """A table of text cells (escaped; numbers formatted by `number`); columns in `numeric` align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = (
            f'<td class="num">{esc(number(v))}</td>' if i in numeric else f"<td>{esc(number(v))}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"note warn" if warn else "note"}">{esc(text)}</p>'


def tag(text: str, kind: str) -> str:
    return f'<span class="tag {esc(kind)}">{esc(text)}</span>'


def document(title: str, meta: str, links: Sequence[tuple[str, str]], body: str) -> str:
    """The whole page: header (title, meta line), a sticky navigation bar of (anchor, label) links, body."""
    nav = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in links)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f'<body><header><h1>{esc(title)}</h1><div class="meta">{esc(meta)}</div></header>'
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
