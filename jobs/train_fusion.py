"""Train the sketch+text fusion for a SigLIP (InfoNCE between the fused sketch+caption and the
garment's shot, the SigLIP frozen), then print held-out recall of each query kind.

    python -m jobs.train_fusion conf/train_fusion.yaml train=BENCH/train test=BENCH/test \\
        embedder=models/siglip-fashion out=models/fusion-fashion

Settings: TrainFusionConfig (training/fusion.py), conf/train_fusion.yaml, then key=value overrides.
Writes OUT/fusion.safetensors (set `search.fusion` to it) and OUT/training.json: the settings, the
training record, and on the test split's garments (never trained on) recall@1 and @10 with 95 %
Wilson intervals of image, sketch, text and sketch+text queries (the weighted mean it started
from and the trained projection) against the split's scene crops, light garments' sketches with
and without equalisation apart.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from actors.embedder import SiglipModelWrapper
from core.config import EmbedderConfig, ModelSpec
from core.fusion import PROBE_TEXT, Fusion
from core.storage import StorageConfig
from quality.evaluation import Proportion
from quality.tables import markdown, proportion_text
from training.data import load_split
from training.fusion import RECALL_KS, crop_gallery, embed_garments, load_config, query_recalls, train_fusion
from training.siglip_loop import resizer

FUSION_FILE = "fusion.safetensors"


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    began = time.monotonic()
    siglip = SiglipModelWrapper(EmbedderConfig(model=ModelSpec(spec=cfg.embedder), device=cfg.device), StorageConfig())
    views = embed_garments(cfg.train, siglip, cfg.sketches)
    fusion, training = train_fusion(views, cfg)
    fusion = replace(fusion, probe=siglip.embed_texts([PROBE_TEXT])[0])
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    fusion.save(out / FUSION_FILE, {"embedder": cfg.embedder, "vision_weight": str(cfg.vision_weight)})
    test = embed_garments(cfg.test, siglip, cfg.sketches)
    gallery = crop_gallery(
        load_split(cfg.test, resizer(siglip.processor), cfg.box_padding, cfg.max_eval_scenes), siglip
    )
    fusions = {"mean": Fusion.weighted_mean(siglip.dim, cfg.vision_weight), "trained": fusion}
    recalls = {
        kind: {f"@{k}": Proportion(r[f"hits@{k}"], r["queries"]).as_dict() for k in RECALL_KS}
        for kind, r in query_recalls(test, gallery, fusions).items()
    }
    record = {
        "config": asdict(cfg),
        "training": training,
        "test_recall": recalls,
        "gallery_crops": len(gallery.garment_ids),
        "minutes": round((time.monotonic() - began) / 60, 2),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = [
        {
            "query": kind,
            "queries": str(r["@1"]["total"]),
            **{f"recall{k}": proportion_text(p, ci=True) for k, p in r.items()},
        }
        for kind, r in recalls.items()
    ]
    print(markdown(rows))
    print(f"kept epoch {training['kept_epoch']}; wrote {out / FUSION_FILE} ({record['minutes']} min)")
    return record


if __name__ == "__main__":
    main()
