"""The data card a run writes beside its pairs (README.md, Hugging Face style: a YAML header, then
prose): sizes per tier, models, config hash, each tier's precision and how it was estimated, limits."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from core.schemas import PAIRS_DIR
from core.tiering import TIER_ORDER, UNMATCHED

CARD = "README.md"
LIMITS = (
    "Pairs are mined, not drawn by people: a tier's precision is only what the estimate below says.",
    "A garment has at most one pair (its best candidate); a lookbook crop can be the best match of several.",
    "Boxes come from the detector and are in pixels of the upright original image.",
)


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((name for bound, name in bounds if n < bound), "1M<n<10M")


def _interval(values: Mapping) -> str:
    low, high = values.get("interval") or (None, None)
    if values.get("precision") is None:
        return f"too few labels ({values.get('labelled', 0)})"
    bounds = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
    return f"{values['precision']:.3f}{bounds} ({values['labelled']} labelled)"


def data_card(
    tiers: Mapping[str, int],
    models: Mapping[str, Mapping[str, str]],
    config_hash: str,
    precision: Mapping[str, Mapping] | None = None,
    estimated_by: str = "not estimated",
    pairs_dir: str = PAIRS_DIR,
) -> str:
    """The card's text. tiers: pairs per tier (unmatched included); models: role -> {spec, note};
    precision: per tier {precision, interval, labelled} (None: not estimated); estimated_by: how."""
    total = sum(tiers.values())
    header = {
        "pretty_name": "lookbook-miner garment-lookbook pairs",
        "tags": ["fashion", "image-retrieval", "virtual-photoshoot"],
        "size_categories": [_size_category(total)],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": f"{pairs_dir}/**/*.parquet"}]}
        ],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "", "# Garment-lookbook pairs", ""]
    lines += [
        "One row per catalogue garment: its best lookbook crop, the scores, the tier, and the candidates it was",
        'chosen from. Load with `datasets.load_dataset("parquet", data_files="' + pairs_dir + '/**/*.parquet")`.',
        "",
        f"Config hash `{config_hash}`. Models:",
        "",
    ]
    lines += [f"- {role}: `{m['spec']}`" + (f" ({m['note']})" if m.get("note") else "") for role, m in models.items()]
    lines += [
        "",
        f"## Tiers (precision {estimated_by})",
        "",
        "| tier | pairs | precision [interval] |",
        "|---|---|---|",
    ]
    for tier in TIER_ORDER:
        estimate = _interval(precision[tier]) if precision and tier in precision else "not estimated"
        lines.append(f"| {tier} | {tiers.get(tier, 0)} | {estimate if tier != UNMATCHED else '-'} |")
    lines += ["", "## Known limits", "", *(f"- {limit}" for limit in LIMITS), ""]
    return "\n".join(lines)
