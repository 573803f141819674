"""Train (or fine-tune) a SigLIP on a benchmark split's garment shots and truth-box crops, with the
sigmoid loss over image-caption pairs, then print hold-out metrics of the start and the result.

    python -m jobs.train_siglip conf/train_siglip.yaml train=BENCH/train test=BENCH/test out=models/siglip-fashion
    python -m jobs.train_siglip conf/train_siglip.yaml train=... test=... out=... \\
        init=google/siglip-base-patch16-224 device=cuda batch_size=256 lr=1e-5

Settings: TrainSiglipConfig below, conf/train_siglip.yaml, then key=value overrides. The output folder
loads with the job's AutoModel / AutoTokenizer / AutoImageProcessor calls; `training.json` in it
records the settings, the time and the metrics.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from core.config import SketchConfig
from core.vocab import ATTRIBUTES, load_vocab
from training.data import load_split
from training.siglip import text_options, vocabulary_prompts
from training.siglip_loop import evaluate, load_config, resizer, starting_folder, train
from training.tiny_models import deepened, with_input_size


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    vocab = load_vocab(cfg.vocab)
    captioner = OmegaConf.load(cfg.captioner_conf).captioner
    templates, caption_template = OmegaConf.to_container(captioner.prompts), str(captioner.caption_template)
    init = starting_folder(cfg, vocab)
    model = AutoModel.from_pretrained(init)
    if cfg.deepen_to:
        model = deepened(model, cfg.deepen_to)
    tokenizer, processor = AutoTokenizer.from_pretrained(init), AutoImageProcessor.from_pretrained(init)
    if cfg.image_size:
        model = with_input_size(model, cfg.image_size)
        processor.size = {"height": cfg.image_size, "width": cfg.image_size}

    began = time.monotonic()
    sketches = SketchConfig() if cfg.sketches else None
    data = load_split(cfg.train, resizer(processor), cfg.box_padding, cfg.max_train_scenes, sketches=sketches)
    print(f"train: {int(data.is_shot.sum())} shots, {int((~data.is_shot).sum())} crops and sketches "
          f"({(time.monotonic() - began) / 60:.1f} min to load)")  # fmt: skip
    unknown = {(a, v) for attrs in data.attributes for a, v in attrs.items() if v and v not in vocab[a]}
    if unknown:
        print(f"attribute values not in {cfg.vocab} (never predicted by zero-shot tagging): {sorted(unknown)}")
    text_rng = np.random.default_rng([cfg.seed, 1])

    def texts_for(i: int) -> tuple[str, frozenset]:
        options = text_options(data.attributes[i], templates, caption_template, vocab, text_rng, data.texts[i])
        return options[int(text_rng.integers(len(options)))]

    test = load_split(cfg.test, resizer(processor), cfg.box_padding, cfg.max_eval_scenes) if cfg.test else None
    before = evaluate(init, test, vocab, templates, cfg.device) if test else None
    trained_attributes = [a for a in ATTRIBUTES if any(attrs.get(a) for attrs in data.attributes)]
    prompts = vocabulary_prompts(templates, vocab, trained_attributes) if cfg.vocabulary_prompts else []
    print(f"{len(prompts)} vocabulary prompts per step ({', '.join(trained_attributes)})")
    out = Path(cfg.out)
    run = train(cfg, model, tokenizer, processor, data, texts_for, out, prompts)
    after = evaluate(str(out), test, vocab, templates, cfg.device) if test else None
    record = {"config": asdict(cfg), "init": init, "training": run, "test_start": before, "test_trained": after}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("training", "test_start", "test_trained")}, indent=2))


if __name__ == "__main__":
    main()
