"""Write the deterministic synthetic demo sample (see datagen.synthetic) and print its manifest paths."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from core.config import VOCAB_PATH
from core.vocab import load_vocab
from datagen.synthetic import make_sample


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="output directory, created if absent")
    parser.add_argument("--garments", type=int, default=40)
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", default=str(VOCAB_PATH), help="attribute vocabulary YAML")
    parser.add_argument("--no-bad-files", dest="bad_files", action="store_false", help="omit the 2 unreadable images")
    args = parser.parse_args(argv)
    info = make_sample(args.out, args.garments, args.scenes, args.seed, load_vocab(args.vocab), args.bad_files)
    print(
        f"garments={info.garments_path} lookbook={info.lookbook_path} truth={info.truth_path} "
        f"n_garments={info.n_garments} n_images={info.n_images} n_placements={info.n_placements} "
        f"bad_ids={','.join(info.bad_ids) or '-'}"
    )


if __name__ == "__main__":
    main()
