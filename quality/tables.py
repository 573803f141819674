"""Evaluation reports as text: one run's metrics table, and the ablation table in Markdown."""

from __future__ import annotations

from core.tiering import TIERS


def proportion_text(p: dict | None, ci: bool = False) -> str:
    """`0.512` or `0.512 [0.401, 0.622]` (95 % Wilson interval); `-` where undefined."""
    if p is None or p["value"] is None:
        return "-"
    text = f"{p['value']:.3f}"
    return f"{text} [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}]" if ci else text


def format_report(report: dict) -> str:
    """The metrics of one run as a readable plain-text table."""
    counts = report["counts"]
    lines = [
        "pairs {pairs} ({scored_pairs} scored), true pairs found {true_pairs_found}; "
        "truth: {matchable_garments} matchable garments, {true_pairs} true pairs, {truth_boxes} boxes; "
        "top_k {top_k}".format(**counts),
        "",
        f"{'tier':6s} {'precision [95% CI]':28s} {'cum. precision':16s} {'cum. recall [95% CI]':28s} {'pairs':>6s}",
    ]
    for tier in TIERS:
        m = report["tiers"][tier]
        lines.append(
            f"{tier:6s} {proportion_text(m['precision'], True):28s} "
            f"{proportion_text(m['cumulative_precision']):16s} "
            f"{proportion_text(m['cumulative_recall'], True):28s} {m['precision']['total']:6d}"
        )
    lines.append("")
    for k, p in report["retrieval_recall"].items():
        lines.append(f"retrieval recall@{k:<3s} {proportion_text(p, True)}")
    threshold = report["precision_threshold"]
    reached = "none" if threshold["score"] is None else f"{threshold['score']:.4f}"
    lines.append(
        f"score threshold for precision >= {threshold['target']}: {reached} (coverage {threshold['coverage']:.3f})"
    )
    lines.append(f"detection recall (IoU >= {report['min_iou']}): {proportion_text(report['detection_recall'], True)}")
    for name, p in (report["attribute_accuracy"] or {}).items():
        if p["total"]:
            lines.append(f"attribute accuracy {name:9s} {proportion_text(p, True)} of {p['total']}")
    return "\n".join(lines)


def table_row(crops: str, setting: str, lambdas: tuple[float, float], report: dict) -> dict[str, str]:
    """One line of the ablation table: high-tier precision with its CI, precision per tier,
    recall@k (recall@10 with its CI), detection recall, accuracy of each attribute the truth knows."""
    row = {"crops": crops, "score": setting, "λ_vlm, λ_siglip": f"{lambdas[0]:g}, {lambdas[1]:g}"}
    row["high P [95% CI]"] = proportion_text(report["tiers"]["high"]["precision"], ci=True)
    row.update({f"{tier} P": proportion_text(report["tiers"][tier]["precision"]) for tier in TIERS[1:]})
    for k, p in report["retrieval_recall"].items():
        row[f"R@{k}" + (" [95% CI]" if k == "10" else "")] = proportion_text(p, ci=k == "10")
    row["det. recall"] = proportion_text(report["detection_recall"])
    for name, p in (report["attribute_accuracy"] or {}).items():
        if p["total"]:
            row[f"{name} acc."] = proportion_text(p)
    return row


def markdown(rows: list[dict[str, str]]) -> str:
    columns = list(dict.fromkeys(c for row in rows for c in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "-") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_calibration(settings: dict, counts: dict[str, int]) -> str:
    """A calibration (jobs.calibrate's calibration.json) as text: the lambdas, each tier's certified
    cut-off with its labelled pairs and precision lower bound, the pairs per tier after re-tiering,
    and the precision per tier on the evaluation labels when there are any."""
    scoring, fitted = settings["scoring"], settings["fitted_on"]
    lines = [
        f"fitted on {fitted['labelled']} labelled pairs ({fitted['source']}: {fitted['labels']})",
        f"lambda_vlm {scoring['lambda_vlm']:g}, lambda_siglip {scoring['lambda_siglip']:g}; "
        f"delta {settings['delta']:g} (each tier's precision >= target with probability >= 1 - delta)",
        "",
        f"{'tier':6s} {'target':>6s} {'cut-off':>8s} {'labelled':>8s} {'errors':>6s} {'precision':>9s} "
        f"{'lower bd':>8s} {'pairs':>7s}",
    ]
    for cut in settings["tiers"]:
        lines.append(
            f"{cut['tier']:6s} {cut['target']:6.2f} {_number(cut['cutoff'], 4):>8s} {cut['labelled']:8d} "
            f"{cut['errors']:6d} {_number(cut['precision']):>9s} {_number(cut['lower_bound']):>8s} "
            f"{counts[cut['tier']]:7d}"
        )
    evaluation = settings.get("evaluation")
    if evaluation:
        kind = "held-out" if evaluation["held_out"] else "fitting"
        lines += ["", f"precision on the {kind} labels ({evaluation['labels']}):"]
        for tier, values in evaluation["tiers"].items():
            low, high = values["interval"]
            interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
            lines.append(f"  {tier:6s} {_number(values['precision'])}{interval} of {values['labelled']}")
    return "\n".join(lines)
