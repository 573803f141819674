"""Write the labelled Fashion-MNIST benchmark (see datagen.fashion_benchmark) and print its counts.

    python -m jobs.make_benchmark --out data/bench --scenes 4000 --test-scenes 2000 --seed 0

writes <out>/train/, <out>/test/ (garments.parquet, lookbook.parquet, truth.parquet and images) and
<out>/DATASET.md. Needs Debian's dataset-fashion-mnist (`make env`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import replace

from core.config import VOCAB_PATH
from core.vocab import load_vocab
from datagen.fashion_benchmark import BenchmarkSpec, make_benchmark


def main(argv: Sequence[str] | None = None) -> None:
    defaults = BenchmarkSpec()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory, created if absent")
    parser.add_argument("--scenes", type=int, required=True, help="train scenes")
    parser.add_argument("--test-scenes", type=int, help="held-out scenes (default: scenes // 2)")
    parser.add_argument("--garments", type=int, help="train catalogue size (default: min(scenes, items) // 2)")
    parser.add_argument("--test-garments", type=int, help="test catalogue size (default: as --garments)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab", default=str(VOCAB_PATH), help="attribute vocabulary YAML")
    parser.add_argument("--empty-fraction", type=float, default=defaults.empty_fraction,
                        help="scenes holding no catalogue garment")  # fmt: skip
    parser.add_argument("--distractor-fraction", type=float, default=defaults.distractor_fraction,
                        help="placed garments that are not in the catalogue")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (output does not depend on it)")
    args = parser.parse_args(argv)
    spec = replace(defaults, empty_fraction=args.empty_fraction, distractor_fraction=args.distractor_fraction)
    test_scenes = args.scenes // 2 if args.test_scenes is None else args.test_scenes
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    infos = make_benchmark(args.out, args.scenes, test_scenes, args.seed, load_vocab(args.vocab), args.garments,
                           args.test_garments, spec, args.workers)  # fmt: skip
    for split, info in infos.items():
        print(
            f"{split}: garments={info.garments_path} lookbook={info.lookbook_path} truth={info.truth_path} "
            f"n_garments={info.n_garments} n_scenes={info.n_scenes} n_placements={info.n_placements} "
            f"n_distractors={info.n_distractors} n_empty_scenes={info.n_empty_scenes} n_unplaced={info.n_unplaced}"
        )
    scenes, garments = sum(i.n_scenes for i in infos.values()), sum(i.n_garments for i in infos.values())
    print(f"wrote {scenes} scenes and {garments} garments in {time.perf_counter() - start:.1f} s "
          f"({_cpu_seconds() - cpu_start:.1f} CPU s, workers included)")  # fmt: skip


def _cpu_seconds() -> float:
    """User and system CPU time of this process and its finished child processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


if __name__ == "__main__":
    main()
