"""Build the tiny random SigLIP and BLIP folders that tests and the offline demo load instead of the hub models.

    python -m jobs.make_tiny_models --out data/models --vocab conf/vocab.yaml --seed 0

writes `<out>/siglip-tiny` and `<out>/blip-tiny`, whose tokenizers know every vocabulary value,
its hyphen-separated parts and `core.vocab.CAPTION_WORDS`.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

from core.vocab import load_vocab, vocabulary_words
from training.tiny_models import BLIP_DIR, SIGLIP_DIR, build_tiny_blip, build_tiny_siglip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data/models"))
    parser.add_argument("--vocab", type=Path, default=Path("conf/vocab.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    words = vocabulary_words(load_vocab(args.vocab))
    for path in (
        build_tiny_siglip(args.out / SIGLIP_DIR, words, seed=args.seed),
        build_tiny_blip(args.out / BLIP_DIR, words, seed=args.seed),
    ):
        print(path)


if __name__ == "__main__":
    main()
