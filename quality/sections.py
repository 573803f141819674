"""The report's sections that are tables and figures (the galleries are in quality.gallery): counts
per stage, tier and quarantine reason; models and config; distributions per tier; precision vs
coverage; the calibration table. Each returns HTML (quality.page), text escaped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from core.tiering import TIER_ORDER, TIERS
from quality import page, plots, run_files
from quality.evaluation import Proportion, precision_coverage
from quality.labels import Judged

HISTOGRAM_TITLES = {"s_vlm": "S_VLM (s_vlm)", "s_siglip": "S_SigLIP (s_siglip)"}
CALIBRATION_COLUMNS = ("tier", "target", "cutoff", "labelled", "errors", "precision", "lower_bound", "certified")


def stages_html(summary: dict | None) -> str:
    """Counts per stage, work shards and index (summary.json), beside the seconds per stage."""
    if summary is None:
        return page.note("no summary.json in the run folder: stage counts and timings are unknown", warn=True)
    rows = list(summary.get("counts", {}).items())
    rows += [(f"work shards: {k}", v) for k, v in summary.get("work_shards", {}).items()]
    rows += [(f"index: {k}", v) for k, v in summary.get("index", {}).items()]
    timing = list(summary.get("seconds", {}).items())
    stages = f"<div><h3>Stages</h3>{page.table(['count', 'value'], rows, numeric=[1])}</div>"
    if not timing:
        return stages
    return stages + f"<div><h3>Seconds per stage</h3>{page.table(['stage', 'seconds'], timing, numeric=[1])}</div>"


def tiers_html(counts: Mapping[str, int], summary: dict | None) -> str:
    """Pairs per tier as counted in the pairs files, their share, and summary.json's count."""
    recorded = (summary or {}).get("tiers", {})
    total = max(1, sum(counts.values()))
    rows = [(t, n, f"{100 * n / total:.1f} %", recorded.get(t)) for t, n in counts.items()]
    return "<h3>Tiers</h3>" + page.table(["tier", "pairs", "share", "summary.json"], rows, numeric=[1, 2, 3])


def quarantine_html(run: Path, summary: dict | None) -> str:
    """Quarantine reasons with their rows in quarantine/ and in summary.json, and a few examples."""
    counts, examples = run_files.quarantine_counts(run)
    found = {(s, r): n for s, r, n in zip(*(counts[c].to_pylist() for c in ("stage", "reason", "rows")))}
    recorded = {(s, r): n for s, reasons in (summary or {}).get("quarantine", {}).items() for r, n in reasons.items()}
    keys = sorted(set(found) | set(recorded), key=lambda k: (-(found.get(k) or recorded.get(k) or 0), k))
    if not keys:
        return "<h3>Quarantine</h3>" + page.note("no row was quarantined")
    rows = [(stage, reason, found.get((stage, reason)), recorded.get((stage, reason))) for stage, reason in keys]
    html = "<h3>Quarantine</h3>" + page.table(["stage", "reason", "rows in quarantine/", "summary.json"], rows, [2, 3])
    shown = [(s, r, e["id"], e["uri"], e["error"]) for (s, r), found_rows in examples.items() for e in found_rows]
    if shown:
        html += "<details><summary>examples</summary>"
        html += page.table(["stage", "reason", "id", "uri", "error"], shown) + "</details>"
    return html


def counts_section(where: str, counts: Mapping[str, int], run: Path, summary: dict | None) -> str:
    """`where`: a line saying which pairs files were read; `counts`: pairs per tier in them."""
    notes = "".join(page.note(n, warn=True) for n in (summary or {}).get("notes", []))
    tables = stages_html(summary) + f"<div>{tiers_html(counts, summary)}{quarantine_html(run, summary)}</div>"
    return page.note(where) + notes + f'<div class="row">{tables}</div>'


def models_section(run: Path, summary: dict | None) -> str:
    """The models of summary.json (spec, pinned sha256, note), the config hash and config.yaml."""
    models = (summary or {}).get("models", {})
    rows = [(role, m.get("spec"), (m.get("sha256") or "")[:16], m.get("note")) for role, m in models.items()]
    html = page.table(["role", "spec", "sha256 (first 16)", "note"], rows) if rows else page.note("models unknown")
    if summary and summary.get("config_hash"):
        html += page.note(f"config hash {summary['config_hash']}")
    text = run_files.read_config_text(run)
    if text is None:
        return html + page.note("no config.yaml in the run folder", warn=True)
    return html + f"<details><summary>config.yaml</summary><pre>{page.esc(text)}</pre></details>"


def distributions_section(numbers: Mapping[str, np.ndarray], codes: np.ndarray, bins: int) -> str:
    """Histograms per tier of each column of `numbers` that has a finite value."""
    named = {HISTOGRAM_TITLES.get(k, k): v for k, v in numbers.items()}
    picture = page.image(plots.histograms_png(named, codes, bins), "image/png", "histograms per tier", "plot")
    return picture + page.note("margin is NaN (left out) for pairs with fewer than two candidates")


def tier_precision_rows(judged: Judged, codes: np.ndarray) -> list[tuple]:
    """Per tier: judged pairs, true ones, precision, its 95 % Wilson interval, and the precision
    of the judged pairs of this tier and the ones above it."""
    rows = []
    for i, tier in enumerate(TIER_ORDER):
        inside, upto = judged.labelled & (codes == i), judged.labelled & (codes <= i) & (codes >= 0)
        p = Proportion(int(judged.true[inside].sum()), int(inside.sum()))
        down_to = Proportion(int(judged.true[upto].sum()), int(upto.sum()))
        low, high = p.interval
        rows.append((tier, p.total, p.hits, p.value, f"[{page.number(low, 3)}, {page.number(high, 3)}]", down_to.value))
    return rows


def precision_section(judged: Judged, key: np.ndarray, key_name: str, codes: np.ndarray) -> str:
    """The precision-vs-coverage curve over the judged pairs ranked by `key` (where each tier
    ends marked), beside each tier's precision."""
    keyed = judged.labelled & np.isfinite(key)
    if not keyed.any():
        return page.note(f"no pair with a {key_name} is judged by the {judged.source} labels", warn=True)
    curve = precision_coverage(key[keyed], judged.true[keyed])
    ends = [(t, float((keyed & (codes <= i) & (codes >= 0)).sum() / keyed.sum())) for i, t in enumerate(TIERS)]
    picture = page.image(plots.curve_png(curve, ends, key_name), "image/png", "precision vs coverage", "plot")
    header = ["tier", "judged pairs", "true", "precision", "95 % Wilson", "precision down to this tier"]
    table = page.table(header, tier_precision_rows(judged, codes), [1, 2, 3, 5])
    text = (
        f"{judged.count:,} pairs judged by {judged.source}; the curve ranks the {int(keyed.sum()):,} with a {key_name}"
    )
    return page.note(text) + f'<div class="row"><div>{picture}</div><div>{table}</div></div>'


def calibration_section(path: Path) -> str:
    """The tiers table of a calibration.json (jobs.calibrate) and its delta."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return page.note(f"{path}: {exc}", warn=True)
    rows = [tuple(entry.get(c) for c in CALIBRATION_COLUMNS) for entry in data.get("tiers") or []]
    delta = page.number(data.get("delta"), 3)
    html = page.note(f"{path}: delta {delta}; each tier's lower bound holds with probability >= 1 - delta")
    if fitted := data.get("fitted_on") or {}:
        html += page.note(f"fitted on {fitted.get('source')} labels: {page.number(fitted.get('labelled'))} pairs")
    return html + page.table(CALIBRATION_COLUMNS, rows, numeric=[1, 2, 3, 4, 5, 6])
