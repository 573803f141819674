"""Build the tiny random SigLIP and BLIP folders that tests and the offline demo load instead of the hub models.

    python -m jobs.make_tiny_models --out data/models --vocab conf/vocab.yaml --seed 0

writes `<out>/siglip-tiny` and `<out>/blip-tiny`, whose tokenizers know every vocabulary value,
its hyphen-separated parts and `CAPTION_WORDS`.
"""

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from miner.tiny_models import build_tiny_blip, build_tiny_siglip

SIGLIP_DIR = "siglip-tiny"
BLIP_DIR = "blip-tiny"
# Words of the zero-shot prompts, the caption template and typical generated captions.
CAPTION_WORDS = (
    "a", "an", "the", "photo", "picture", "of", "with", "without", "sleeves", "for", "garment",
    "in", "on", "and", "person", "man", "woman", "model", "wearing", "unknown", ",", ".",
)  # fmt: skip


def vocabulary_words(vocab: Mapping[str, Sequence[str]]) -> list[str]:
    """Every value of `vocab` (attribute -> values), the parts of hyphenated values, then `CAPTION_WORDS`."""
    values = [value for values in vocab.values() for value in values]
    parts = [part for value in values for part in value.split("-") if part]
    return list(dict.fromkeys([*values, *parts, *CAPTION_WORDS]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/models"))
    parser.add_argument("--vocab", type=Path, default=Path("conf/vocab.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    words = vocabulary_words(OmegaConf.to_container(OmegaConf.load(args.vocab)))
    for path in (
        build_tiny_siglip(args.out / SIGLIP_DIR, words, seed=args.seed),
        build_tiny_blip(args.out / BLIP_DIR, words, seed=args.seed),
    ):
        print(path)


if __name__ == "__main__":
    main()
