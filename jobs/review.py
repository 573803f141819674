"""Review a run's pairs in the browser, or export them with the review's labels.

python -m jobs.review RUN [--db PATH] [--host 127.0.0.1] [--port 8765] [--order stratified|uncertain-high]
                          [--per-stratum N] [--bands N] [--seed 0] [--limit N]
                          [--uncertain-by tier_key|score|margin|crop_margin|confidence]
                          [--reviewer NAME] [--allow-local-root DIR ...]
python -m jobs.review RUN --export OUT_DIR [--db PATH] [--no-promote]

RUN is a mining output folder (pairs/, optionally crops/ and config.yaml). Decisions go to the SQLite
file --db (default RUN/review.sqlite). Images are read within the run's own storage allow-list
(its config.yaml), plus --allow-local-root folders. The app has no login: it binds 127.0.0.1 unless
told otherwise; reach it from another machine through an SSH tunnel. --export writes
OUT_DIR/pairs/part-00000.parquet (every pair with `verified`; accepted pairs promoted to high and
rejected ones set to unmatched unless --no-promote), OUT_DIR/export.json and the data card
OUT_DIR/README.md (the mined tiers' precision estimated on the review's stratified sample; give the
--per-stratum, --bands and --seed the review ran with), then exits.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from core.data_card import CARD, data_card
from core.storage import local_path
from review.app import create_app
from review.export import export
from review.pairs import run_limits
from review.queue import UNCERTAIN_BY, ReviewQueue, ReviewSettings
from review.sampling import ORDERS
from review.store import ReviewStore

ANY_ADDRESS = ("0.0.0.0", "::")


def write_card(run: str, queue: ReviewQueue, out: Path) -> None:
    """The export's data card: the mined tiers with their precision estimated on the review's
    stratified sample (95 % interval; review.sampling)."""
    summary = json.loads(Path(run, "summary.json").read_text())
    progress = queue.progress()
    precision = {
        e["tier"]: {"precision": e["value"], "interval": [e["low"], e["high"]], "labelled": e["labels"]}
        for e in progress["estimates"]
    }
    how = f"of the mined tiers, on the review's stratified sample: {progress['sample_reviewed']} labels, 95 % interval"
    card = data_card(summary["tiers"], summary["models"], summary["config_hash"], precision, how)
    (out / CARD).write_text(card)


def main(argv: Sequence[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run's output folder")
    parser.add_argument("--db", help="the review database (default RUN/review.sqlite)")
    parser.add_argument("--export", metavar="OUT_DIR", help="write the labelled pairs there and exit")
    parser.add_argument("--no-promote", dest="promote", action="store_false", help="export: keep the mined tiers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--order", choices=ORDERS, default=ORDERS[0], help="which pairs come first")
    parser.add_argument("--per-stratum", type=int, default=25, help="random pairs per tier x score band")
    parser.add_argument("--bands", type=int, default=4, help="equal-count score bands per tier")
    parser.add_argument("--seed", type=int, default=0, help="the random sample's seed")
    parser.add_argument("--limit", type=int, default=200, help="uncertain-high: how many high-tier pairs")
    parser.add_argument("--uncertain-by", choices=UNCERTAIN_BY, default="tier_key", help="uncertain-high's key")
    parser.add_argument("--reviewer", default="", help="the name the page starts with (else ?reviewer=NAME)")
    parser.add_argument("--allow-local-root", action="append", default=[], help="also read images under DIR")
    args = parser.parse_args(argv)
    db = Path(args.db) if args.db else Path(args.run) / "review.sqlite"

    settings = ReviewSettings(per_stratum=args.per_stratum, bands=args.bands, seed=args.seed)
    if args.export:
        summary = export(args.run, db, args.export, promote=args.promote)
        write_card(args.run, ReviewQueue(args.run, ReviewStore(db), settings), Path(args.export))
        print(json.dumps(summary))
        print(f"wrote {args.export}/pairs/part-00000.parquet, export.json and {CARD}")
        return summary

    import uvicorn

    storage, decode = run_limits(args.run)
    roots = [*storage.allowed_local_roots, *(str(local_path(root)) for root in args.allow_local_root)]
    hosts = ["*"] if args.host in ANY_ADDRESS else sorted({"127.0.0.1", "localhost", args.host})
    settings = replace(
        settings,
        order=args.order,
        limit=args.limit,
        uncertain_by=args.uncertain_by,
        storage=replace(storage, allowed_local_roots=roots),
        decode=decode,
        reviewer=args.reviewer,
        allowed_hosts=hosts,
    )
    app = create_app(args.run, db, settings)
    progress = app.state.queue.progress()
    query = f"?reviewer={quote(args.reviewer)}" if args.reviewer else ""
    print(
        f"reviewing {progress['population']} pairs of {args.run}: {progress['order']} queue of {progress['queue_size']}"
    )
    print(f"decisions in {db}; open http://{args.host}:{args.port}/{query}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return None


if __name__ == "__main__":
    main()
