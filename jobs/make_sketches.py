"""Garment product shots as sketch-like edge maps: the sketches of sketch queries and of the
sketch+text fusion training.

python -m jobs.make_sketches GARMENTS OUT [overlay.yaml ...] [key=value ...]

GARMENTS: a garment manifest (Parquet, CSV or JSONL: garment_id, uri, optional text and colour).
OUT: a folder, local or s3://. Settings: `sketches.*`, `decode.*` and `storage.*` (the allow-list
the shots are read under) of conf/mine.yaml. Ray Data tasks read, decode and sketch the shots
(`actors.sketcher`), writing OUT/images/sketch-<digest of the id>.png; OUT/manifest/ holds one row
per garment: garment_id, uri, text, colour, sketch_uri, light (equalised first), reason and error
(a shot that could not be read or decoded keeps its reason and gets no sketch).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import ray

from actors.sketcher import sketch_images
from core.config import load_config
from core.storage import filesystem, join
from pipeline.driver import connect
from pipeline.manifests import read_manifest

OPTIONAL_COLUMNS = ("text", "colour")


def main(argv: Sequence[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or "=" in args[0] or "=" in args[1]:
        raise SystemExit(__doc__)
    garments, out = args[:2]
    cfg = load_config([*args[2:], f"garments={garments}", f"lookbook={garments}", f"output={out}"])
    connect(cfg)
    manifest = read_manifest(garments, "garment_id", OPTIONAL_COLUMNS, 1, cfg.storage)
    sketched = manifest.map_batches(
        sketch_images,
        fn_kwargs={
            "cfg": cfg.sketches,
            "decode_cfg": cfg.decode,
            "storage": cfg.storage,
            "folder": join(out, "images"),
        },
        batch_size=cfg.decode.rows_per_task,
        num_cpus=cfg.decode.num_cpus,
    )
    fs, path = filesystem(join(out, "manifest"), cfg.storage)
    sketched.rename_columns({"image_id": "garment_id"}).drop_columns(["shard"]).write_parquet(
        path, filesystem=fs, mode="overwrite"
    )
    written = ray.data.read_parquet(path, filesystem=fs)
    reasons = {r["reason"]: r["count()"] for r in written.groupby("reason").count().take_all()}  # a few reasons
    summary = {
        "garments": sum(reasons.values()),
        "sketched": reasons.pop("", 0),
        "light": int(written.sum("light") or 0),
        "quarantined": reasons,
        "manifest": join(out, "manifest"),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
