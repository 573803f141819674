"""The fashion-knowledge page of a run: lift heatmaps of occasion x category and of attribute
pairs, and the most frequent garment combinations per occasion (tables of `core.knowledge`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from core import knowledge as kn
from core.vocab import OCCASION
from quality import page
from quality.plots import png

MAX_LOG2_LIFT = 2.0  # the colour scale saturates at 4x (and 1/4x) the independent rate


def heatmap_png(table: pd.DataFrame, rows: str, columns: str, title: str) -> bytes:
    """log2(lift) of each (rows, columns) value pair, blue below independence and red above,
    each cell annotated with its count; pairs never seen are blank."""
    counts = table.pivot_table(index=rows, columns=columns, values=kn.COUNT, aggfunc="sum")
    lift = table.pivot_table(index=rows, columns=columns, values="lift", aggfunc="sum").reindex_like(counts)
    figure = Figure(figsize=(1.2 + 0.55 * len(counts.columns), 1.0 + 0.4 * len(counts.index)))
    axes = figure.add_subplot()
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-MAX_LOG2_LIFT, vmax=MAX_LOG2_LIFT)
    shown = axes.imshow(np.log2(lift.to_numpy(float, na_value=np.nan)), cmap="RdBu_r", norm=norm, aspect="auto")
    axes.set_xticks(range(len(counts.columns)), counts.columns, rotation=45, ha="right")
    axes.set_yticks(range(len(counts.index)), counts.index)
    axes.set_xlabel(columns)
    axes.set_ylabel(rows)
    axes.set_title(title, fontsize=10)
    strong = np.abs(np.log2(lift.to_numpy(float, na_value=np.nan))) > MAX_LOG2_LIFT / 2
    for (i, j), count in np.ndenumerate(counts.to_numpy(float, na_value=np.nan)):
        if not np.isnan(count):
            colour = "white" if strong[i, j] else "black"
            axes.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(shown, ax=axes, label="log2 lift")
    return png(figure)


def heatmaps(table: pd.DataFrame, rows: str, columns: str, title: str) -> str:
    """One heatmap per label set present in the stacked `table` (confident labels, then all)."""
    figures = []
    for labels in (kn.CONFIDENT_LABELS, kn.ALL_LABELS):
        part = table[table[kn.LABELS] == labels]
        if len(part):
            data = heatmap_png(part, rows, columns, f"{title} ({labels} labels)")
            figures.append(page.image(data, "image/png", f"{title}, {labels} labels"))
    return "".join(figures) or page.note("no counts: nothing was labelled", warn=True)


def knowledge_html(
    run: str, category_occasion: pd.DataFrame, attribute_pairs: pd.DataFrame, combinations: pd.DataFrame, images: int
) -> str:
    """The whole page from the stacked tables (`core.knowledge.lift_table`, `combination_table`)."""
    pair_sections = []
    for (a, b), table in attribute_pairs.groupby(["attribute_a", "attribute_b"], sort=False):
        pair_sections.append(heatmaps(table.rename(columns={"value_a": a, "value_b": b}), a, b, f"{a} x {b}"))
    combination_rows = [
        (r[kn.LABELS], r[OCCASION], r[kn.COMBINATION], r[kn.COUNT], f"{r['share']:.3f}")
        for _, r in combinations.iterrows()
    ]
    body = (
        page.section(
            "occasions",
            "Occasion x category",
            page.note(
                f"{images:,} images; an image's occasion is the describe stage's label of the whole image. "
                "Lift: how much more often than by chance an occasion's images hold the category (1: independent)."
            )
            + heatmaps(category_occasion, "category", OCCASION, "occasion x category"),
        )
        + page.section("attributes", "Attribute pairs (per crop)", "".join(pair_sections))
        + page.section(
            "combinations",
            "Garment combinations per occasion",
            page.table(["labels", "occasion", "combination", "images", "share"], combination_rows, numeric=(3, 4)),
        )
    )
    links = [("occasions", "Occasion x category"), ("attributes", "Attribute pairs"), ("combinations", "Combinations")]
    return page.document(f"Fashion knowledge: {run}", f"{images:,} images", links, body)
