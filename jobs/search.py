"""Search a mined run's index by an image, a text, a sketch, or a sketch plus a text.

python -m jobs.search RUN [--image URI] [--sketch URI] [--text TEXT] [--out DIR] [key=value ...]

RUN: a run's output folder (its config.yaml; the run's embedder embeds the query). key=value
overrides that config: `search.k` (crops returned), `search.vision_weight` (image or sketch plus
text: the image embedding's weight), `storage.*` (where query images may be read from). Prints
the top-k crops (score: cosine with the query; s_vlm: the text against the crop's caption; the
garment the run paired with the crop and its tier) and writes DIR/results.parquet and the contact
sheet DIR/index.html (default RUN/search). No Ray: the index shards are memory-mapped one by one.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.config import run_config
from quality.search import Query, QueryError, RunSearcher
from quality.search_page import contact_sheet

SEARCH_DIR = "search"


def main(argv: Sequence[str] | None = None) -> pa.Table:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run's output folder")
    parser.add_argument("--image", help="a query image (product shot or photo)")
    parser.add_argument("--sketch", help="a query sketch (black lines on white, as jobs.make_sketches draws)")
    parser.add_argument("--text", help="a query text, alone or with the image or sketch")
    parser.add_argument("--out", type=Path, help="folder for results.parquet and index.html (default RUN/search)")
    args, overrides = parser.parse_known_args(argv)
    cfg = run_config(args.run, overrides)
    query = Query(image=args.image, sketch=args.sketch, text=args.text)
    try:
        results = RunSearcher(cfg, cfg.search.k).search(query, cfg.search.k)
    except QueryError as exc:
        raise SystemExit(f"jobs.search: {exc}") from exc
    out = args.out or Path(args.run) / SEARCH_DIR
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(results, out / "results.parquet")
    (out / "index.html").write_text(contact_sheet(results, query, cfg, out / "thumbs"))
    print(results.drop_columns(["image_uri", "garment_uri", "box"]).to_pandas().to_string(index=False))
    print(f"wrote {out / 'results.parquet'} and {out / 'index.html'}")
    return results


if __name__ == "__main__":
    main()
