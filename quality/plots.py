"""The report's figures as PNG bytes: histograms per tier (counted with numpy, drawn as steps) and
the precision-vs-coverage curve. matplotlib's object API with the Agg canvas: no pyplot state, no
display needed."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.tiering import TIER_ORDER

TIER_COLOURS = {"high": "#1b9e77", "mid": "#386cb0", "low": "#e6820e", "unmatched": "#8c8c8c"}
MAX_CURVE_POINTS = 2000  # the curve is drawn through at most this many of its ranks
DPI = 100


def png(figure: Figure) -> bytes:
    """The figure rendered by the Agg canvas as PNG."""
    FigureCanvasAgg(figure)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, bbox_inches="tight")
    return out.getvalue()


def tier_histograms(values: np.ndarray, codes: np.ndarray, bins: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(edges, per tier of `TIER_ORDER` its counts) over the finite `values`, with edges shared by
    all tiers: `bins` bins, fewer (sqrt of the values, at least 10) for few values; (empty, {})
    when no value is finite."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(0), {}
    bins = min(bins, max(10, int(np.sqrt(finite.sum()))))
    edges = np.histogram_bin_edges(values[finite], bins=bins)
    counts = {}
    for code, tier in enumerate(TIER_ORDER):
        inside = values[finite & (codes == code)]
        if len(inside):
            counts[tier] = np.histogram(inside, bins=edges)[0]
    return edges, counts


def log_scale(counts: Iterable[np.ndarray], ratio: float = 30.0) -> bool:
    """Whether counts need a log axis: the tiers' peaks differ by more than `ratio`."""
    peaks = [int(c.max()) for c in counts if c.max() > 0]
    return bool(peaks) and max(peaks) > ratio * min(peaks)


def histograms_png(columns: Mapping[str, np.ndarray], codes: np.ndarray, bins: int = 50) -> bytes:
    """One panel per named column: step histograms of its finite values, one per tier; the count
    axis is logarithmic where tiers differ in size by orders of magnitude (`log_scale`)."""
    names = [name for name in columns if np.isfinite(columns[name]).any()]
    cols = min(4, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    figure = Figure(figsize=(4.0 * cols, 2.9 * rows))
    for i, name in enumerate(names):
        axes = figure.add_subplot(rows, cols, i + 1)
        edges, counts = tier_histograms(columns[name], codes, bins)
        for tier, count in counts.items():
            axes.stairs(count, edges, label=f"{tier} ({int(count.sum()):,})", color=TIER_COLOURS[tier], linewidth=1.6)
        if log_scale(counts.values()):
            axes.set_yscale("log")
        else:
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(name, fontsize=10)
        axes.set_ylabel("pairs", fontsize=8)
        axes.tick_params(labelsize=8)
        axes.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return png(figure)


def thinned(n: int, most: int = MAX_CURVE_POINTS) -> np.ndarray:
    """At most `most` positions of 0..n-1, evenly spread, the first and last included."""
    return np.unique(np.linspace(0, n - 1, min(n, most)).round().astype(np.int64)) if n else np.zeros(0, np.int64)


def curve_png(curve: Mapping[str, np.ndarray], marks: Sequence[tuple[str, float]], ranked_by: str) -> bytes:
    """Precision against coverage (evaluation.precision_coverage's arrays); `marks`: (tier,
    coverage) where each tier ends, drawn as dotted lines."""
    figure = Figure(figsize=(6.4, 3.6))
    axes = figure.add_subplot(1, 1, 1)
    keep = thinned(len(curve["coverage"]))
    axes.plot(curve["coverage"][keep], curve["precision"][keep], color="#333333", linewidth=1.6)
    for tier, coverage in marks:
        axes.axvline(coverage, color=TIER_COLOURS.get(tier, "#999999"), linestyle=":", linewidth=1.4)
        axes.annotate(f"end of {tier}", (coverage, 0.02), rotation=90, fontsize=7, color=TIER_COLOURS.get(tier))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(f"coverage (pairs ranked by {ranked_by}, best first)", fontsize=9)
    axes.set_ylabel("precision of the pairs kept", fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return png(figure)
