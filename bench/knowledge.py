"""`jobs.knowledge` at scale: seconds and memory on a generated run of `--crops` crops.

python -m bench.knowledge [--crops 1000000 10000000] [--per-image 3] [--cpus 2] [--workdir DIR] [--lock FILE]

For each size, a run folder is generated under `--workdir` (cached): crops/ with the columns the
job reads (image_id, the attributes drawn from conf/vocab.yaml with skewed frequencies,
occasion_confidence), `--per-image` crops an image, one scenes/ row per image, and a config.yaml.
Then `jobs.knowledge` runs on it in a fresh process on a fresh local Ray with `--cpus` CPUs,
sampled every second (`bench.memory.TreeMonitor`). Prints one key=value line per size: crops,
images, seconds, the driver's peak PSS and the peak summed over the driver and all Ray processes;
then, with two sizes or more, how the driver's peak grew (`driver_peak_ratio`, largest / smallest
size): near 1 when nothing of the crops reaches the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.memory import TreeMonitor, exclusive
from core.config import CONF_DIR, VOCAB_PATH, load_config, to_yaml
from core.schemas import CROPS_DIR, OCCASION_CONFIDENCE, SCENES_DIR
from core.vocab import ATTRIBUTES, UNKNOWN, load_vocab

ROWS_PER_FILE = 1_000_000
RESULT = "RESULT "  # the prefix of the child's result line
GB = 1024**3


def skewed(rng: np.random.Generator, values: list[str], n: int) -> pa.DictionaryArray:
    """`n` draws of `values` and UNKNOWN with Zipf-like frequencies (the k-th value ~ 1/k)."""
    choices = [*values, UNKNOWN]
    weights = 1.0 / np.arange(1, len(choices) + 1)
    indices = rng.choice(len(choices), size=n, p=weights / weights.sum()).astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(choices))


def label_table(rng: np.random.Generator, image_ids: np.ndarray, vocab: dict[str, list[str]]) -> pa.Table:
    """Rows with the columns `pipeline.knowledge` reads, for `image_ids` (one row each)."""
    columns = {"image_id": pa.array(image_ids)}
    for attribute in ATTRIBUTES:
        columns[attribute] = skewed(rng, vocab[attribute], len(image_ids)).cast(pa.string())
    columns[OCCASION_CONFIDENCE] = pa.array(rng.uniform(0.1, 0.9, len(image_ids)).astype(np.float32))
    return pa.table(columns)


def make_run(folder: Path, crops: int, per_image: int, seed: int) -> int:
    """Write the generated run (see the module docstring) unless it is there; returns its images."""
    images = -(-crops // per_image)
    if (folder / "config.yaml").exists():
        return images
    vocab = load_vocab(VOCAB_PATH)
    rng = np.random.default_rng(seed)
    for start in range(0, crops, ROWS_PER_FILE):
        rows = np.arange(start, min(start + ROWS_PER_FILE, crops))
        ids = np.char.add("img", (rows // per_image).astype(str))
        (folder / CROPS_DIR).mkdir(parents=True, exist_ok=True)
        pq.write_table(label_table(rng, ids, vocab), folder / CROPS_DIR / f"part-{start // ROWS_PER_FILE:05d}.parquet")
    for start in range(0, images, ROWS_PER_FILE):
        ids = np.char.add("img", np.arange(start, min(start + ROWS_PER_FILE, images)).astype(str))
        (folder / SCENES_DIR).mkdir(parents=True, exist_ok=True)
        pq.write_table(label_table(rng, ids, vocab), folder / SCENES_DIR / f"part-{start // ROWS_PER_FILE:05d}.parquet")
    cfg = load_config([str(CONF_DIR / "demo.yaml"), "lookbook=x", "garments=x", f"output={folder}"])
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return images


def measure(folder: Path, cpus: int) -> dict:
    """jobs.knowledge on `folder` on a fresh local Ray, in this process; its seconds and peak memory."""
    import ray

    from jobs import knowledge

    with TreeMonitor(1.0) as monitor:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        start = time.perf_counter()
        summary = knowledge.main([str(folder), "progress=false"])
        seconds = time.perf_counter() - start
        ray.shutdown()
    driver = monitor.process_peaks[os.getpid()]["pss"]
    return {
        "seconds": seconds,
        "images": summary["images"],
        "peak_gb": monitor.peak / GB,
        "driver_peak_gb": driver / GB,
    }


def measured(folder: Path, cpus: int) -> dict:
    """`measure` in a fresh interpreter (clean memory accounting)."""
    command = [sys.executable, "-m", "bench.knowledge", "--measure", str(folder), "--cpus", str(cpus)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"jobs.knowledge failed on {folder}:\n{done.stderr[-4000:]}")
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith(RESULT))[len(RESULT) :])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--per-image", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lookbook-bench-knowledge"))
    parser.add_argument("--lock", type=Path, help="hold an exclusive flock on this file while measuring")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process of `measured`
    args = parser.parse_args(argv)
    if args.measure:
        print(RESULT + json.dumps(measure(args.measure, args.cpus)), flush=True)
        return
    drivers = []
    for crops in args.crops:
        folder = args.workdir / f"run-{crops}"
        images = make_run(folder, crops, args.per_image, args.seed)
        with exclusive(args.lock):
            result = measured(folder, args.cpus)
        if result["images"] != images:
            raise RuntimeError(f"{result['images']} images labelled, {images} generated")
        drivers.append(result["driver_peak_gb"])
        print(
            f"knowledge: crops={crops} images={images} seconds={result['seconds']:.1f} "
            f"driver_peak_gb={result['driver_peak_gb']:.2f} peak_gb={result['peak_gb']:.2f}",
            flush=True,
        )
    if len(drivers) > 1:
        print(f"knowledge: driver_peak_ratio={drivers[-1] / drivers[0]:.2f}")


if __name__ == "__main__":
    main()
