"""Fashion knowledge of a mined run: each lookbook image's occasion, occasion x category and
attribute-pair co-occurrence (counts, support, lift), and the most frequent garment combinations
per occasion.

python -m jobs.knowledge RUN [key=value ...]

RUN: a run's output folder (its config.yaml), or a run's config.yaml (its `output`, local or
s3://, is read). key=value overrides that config: `knowledge.min_confidence`,
`knowledge.top_combinations`, `knowledge.partitions`, `ray_address`, `storage.*`. Runs on Ray
Data: images are labelled from the crops and scene rows (scenes/: each image's own label),
hash-partitioned by image, and written by the workers; the tables are per-batch counts summed as
they stream in, so nothing of the crops is collected on the driver. Writes into RUN/knowledge/:
images/ (one row per image: occasion, occasion_confidence, confident, categories, combination),
category_occasion.parquet and attribute_pairs.parquet (count, support, lift), combinations.parquet
(top per occasion, with its share), each over confident labels and over all (column `labels`), and
index.html (lift heatmaps and the combinations).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import pyarrow as pa

from core import knowledge as kn
from core.config import run_config
from core.storage import join, write_bytes, write_table
from core.vocab import OCCASION
from pipeline.driver import connect
from pipeline.knowledge import KNOWLEDGE_DIR, run_knowledge
from quality.knowledge_page import knowledge_html


def main(argv: Sequence[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or "=" in args[0]:
        raise SystemExit(__doc__)
    cfg = run_config(args[0], args[1:])
    connect(cfg)
    found = run_knowledge(cfg.output, cfg.storage, cfg.knowledge)
    tables = {
        "category_occasion": kn.lift_table(found.category_occasion, kn.CATEGORY_OCCASION_KEYS, "category", OCCASION),
        "attribute_pairs": kn.lift_table(
            found.attribute_pairs, kn.ATTRIBUTE_PAIR_KEYS, "value_a", "value_b", within=("attribute_a", "attribute_b")
        ),
        "combinations": kn.combination_table(found.combinations, cfg.knowledge.top_combinations),
    }
    folder = join(cfg.output, KNOWLEDGE_DIR)
    for name, table in tables.items():
        write_table(pa.Table.from_pandas(table, preserve_index=False), join(folder, f"{name}.parquet"), cfg.storage)
    html = knowledge_html(cfg.output, **tables, images=found.images)
    write_bytes(join(folder, "index.html"), html.encode(), cfg.storage)
    summary = {
        "images": found.images,
        "confident_images": found.confident_images,
        "rows": {name: len(table) for name, table in tables.items()},
        "folder": folder,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
