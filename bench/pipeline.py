"""Benchmark of the lookbook stage: the Ray Data job against a single-process compute floor.

    python -m bench.pipeline [--n 2000] [--scale 10] [--workdir /tmp/bench-pipeline] [key=value ...]

Generates `n` synthetic scenes with `datagen.synthetic.make_sample` (seeded, cached in `workdir`) and
the tiny SigLIP / BLIP folders, then runs, each in a fresh Python process:

- `floor`: the lookbook actors (`decode_images`, `CropDetector`, `CropEmbedder`, `CropDescriber`)
  called directly in a plain loop over the `n` images, with the configured batch sizes, torch
  on `--cpus` threads, writing the crops to Parquet like the job's sink. Timed: the loop only
  (model loading and a one-image warm-up are reported apart); each model's time is also split by
  step (preprocess, forward, postprocess: the actors' own `core.steps` timers, which the job
  records as metrics), beside the decode and write seconds.
- `ray n` and `ray 10n`: `jobs.mine.mine_lookbook(cfg)` on a local Ray instance with `--cpus`
  CPUs. Timed: from the call to its return, so actor start-up (worker processes, imports, model
  loading) is included and `ray.init` is not. The `scale * n` manifest repeats the `n` image files
  under new, unique image ids.

Peak memory is the maximum over the run of the summed PSS (proportional set size: shared pages,
such as the object store's /dev/shm mapping, counted once across processes) of the driver and all
its descendants (GCS, raylet with the object store, Ray Data workers and actors), sampled every
`--memory-interval` seconds from /proc (CPU times every `--interval`: reading the PSS of the Ray
run's 20 or so processes every second took a tenth of a core from the run it timed). Trailing
`key=value` arguments override the job configuration (`conf/demo.yaml` plus the tiny models);
`ray.*` arguments go to `ray.init` instead.

The Ray runs' CPU seconds are split between the stage's actors and every other process (Ray's
workers and services, Ray Data's own actors, the driver with this benchmark's sampling, and decode
tasks where the layout has them): where the actors do all the floor's work (`fusion.decode`) with
the floor's CPU seconds, at the floor's cores, ratio_vs_floor comes to about the actors' share.

The last line printed is `pipeline: n=... images_per_s=... floor_images_per_s=... ratio_vs_floor=...
actors_cpu_share=... peak_gb_n=... peak_gb_10n=... mem_ratio_10x=...`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from bench.memory import TreeMonitor, exclusive

REPO = Path(__file__).resolve().parent.parent
SEED = 0
N_GARMENTS = 40  # catalogue size of the generated sample; garments are not read by the lookbook stage
PHASES = ("floor", "ray")
RESULT_PREFIX = "bench-result: "


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="generated scenes (images) of the N run")
    parser.add_argument("--scale", type=int, default=10, help="the memory run reads scale * n images")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-pipeline"))
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray instance = torch threads of the floor")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between CPU samples")
    parser.add_argument("--memory-interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--skip", choices=("floor", "ray-n", "ray-10n"), action="append", default=[])
    parser.add_argument(
        "--lock", type=Path, help="hold an exclusive flock on this file during the timed runs (floor, ray n)"
    )
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # one measurement, in a child process
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if unknown := [a for a in rest if "=" not in a]:
        parser.error(f"unrecognised arguments: {unknown}")
    return args, rest


# --- inputs -------------------------------------------------------------------------------------


def prepare(workdir: Path, n: int, scale: int) -> dict[str, Path]:
    """Tiny models, the `n`-scene sample and the `n` / `scale * n` manifests under `workdir` (cached)."""
    from core.config import VOCAB_PATH
    from core.vocab import load_vocab, vocabulary_words
    from datagen.synthetic import make_sample
    from training.tiny_models import BLIP_DIR, SIGLIP_DIR, build_tiny_blip, build_tiny_siglip

    vocab = load_vocab(VOCAB_PATH)
    models = workdir / "models"
    if not (models / ".built").exists():
        words = vocabulary_words(vocab)
        build_tiny_siglip(models / SIGLIP_DIR, words, seed=SEED)
        build_tiny_blip(models / BLIP_DIR, words, seed=SEED)
        (models / ".built").touch()
    sample = workdir / f"sample-{n}"
    if not (sample / ".built").exists():
        started = time.perf_counter()
        make_sample(sample, N_GARMENTS, n, SEED, vocab, bad_files=False)
        (sample / ".built").touch()
        log(f"generated {n} scenes in {time.perf_counter() - started:.0f} s")
    lookbook = pq.read_table(sample / "lookbook.parquet")
    large = workdir / f"lookbook-{n}x{scale}.parquet"
    if not large.exists():
        ids = [f"{image_id}-r{k}" for k in range(scale) for image_id in lookbook["image_id"].to_pylist()]
        pq.write_table(pa.table({"image_id": ids, "uri": lookbook["uri"].to_pylist() * scale}), large)
    return {
        "siglip": models / SIGLIP_DIR,
        "blip": models / BLIP_DIR,
        "garments": sample / "garments.parquet",
        "lookbook_n": sample / "lookbook.parquet",
        "lookbook_10n": large,
    }


def job_config(workdir: Path, manifest: Path, output: Path, overrides: list[str]):
    from core.config import load_config

    models = workdir / "models"
    return load_config(
        [
            "conf/demo.yaml",
            f"embedder.model.spec={models / 'siglip-tiny'}",
            f"captioner.model.spec={models / 'blip-tiny'}",
            f"lookbook={manifest}",
            f"garments={manifest}",  # not read by the lookbook stage
            f"output={output}",
            "progress=false",
            f"storage.allowed_local_roots=[{workdir}]",  # the generated scenes
            *overrides,
        ]
    )


# --- the floor ----------------------------------------------------------------------------------


def slices(batch: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    rows = len(next(iter(batch.values())))
    for start in range(0, rows, size):
        yield {k: v[start : start + size] for k, v in batch.items()}


def run_floor(cfg, manifest: Path, output: Path, threads: int, intervals: tuple[float, float]) -> dict:
    """The lookbook actors in a plain loop, one process, torch on `threads` threads."""
    import torch

    from actors.captioner import CropDescriber
    from actors.decoder import decode_images
    from actors.detector import CropDetector
    from actors.embedder import CropEmbedder
    from core import arrow, schemas
    from core.batches import concat
    from core.schemas import REASON

    started = time.perf_counter()
    torch.set_num_threads(threads)  # the detector keeps them (ultralytics would set cores - 1)
    detector = CropDetector(cfg.detector, cfg.storage)
    embedder = CropEmbedder(cfg.embedder, cfg.storage)
    describer = CropDescriber(cfg.captioner, cfg.embedder, cfg.storage, cfg.vocab)
    table = pq.read_table(manifest)
    images = {c: np.asarray(table[c].to_pylist(), dtype=object) for c in ("image_id", "uri")}
    detector(decode_images(next(slices(images, 1)), cfg.decode, cfg.storage))  # sets up ultralytics' predictor
    models = {"detect": detector, "embed": embedder, "describe": describer}
    for model in models.values():
        model.timer.take()  # set-up and warm-up are not the loop's
    load_s = time.perf_counter() - started
    output.mkdir(parents=True, exist_ok=True)
    seconds = dict.fromkeys(("decode", "detect", "embed", "describe", "write"), 0.0)
    crops = quarantined = 0
    chunk = max(cfg.decode.batch_size, cfg.detector.pool.batch_size, cfg.embedder.pool.batch_size)
    with TreeMonitor(*intervals) as monitor:
        start = monitor.mark()
        for part, batch in enumerate(slices(images, chunk)):
            tick = time.perf_counter()
            batch = concat([decode_images(b, cfg.decode, cfg.storage) for b in slices(batch, cfg.decode.batch_size)])
            tick = _lap(seconds, "decode", tick)
            batch = concat([detector(b) for b in slices(batch, cfg.detector.pool.batch_size)])
            tick = _lap(seconds, "detect", tick)
            batch = concat([embedder(b) for b in slices(batch, cfg.embedder.pool.batch_size)])
            tick = _lap(seconds, "embed", tick)
            batch = concat([describer(b) for b in slices(batch, cfg.captioner.pool.batch_size)])
            tick = _lap(seconds, "describe", tick)
            good, scene = batch[REASON] == "", batch["det_class"] == schemas.SCENE_CLASS
            crops, quarantined = crops + int((good & ~scene).sum()), quarantined + int((~good).sum())
            for rows, schema, folder in (
                (good & ~scene, schemas.crops(batch["embedding"].shape[1], cfg.embedder.store_dtype), "crops"),
                (good & scene, schemas.SCENES, "scenes"),
            ):
                (output / folder).mkdir(exist_ok=True)
                columns = {k: v[rows] for k, v in batch.items() if k != "crop"}
                pq.write_table(arrow.table(columns, schema), output / folder / f"part-{part:06d}.parquet")
            _lap(seconds, "write", tick)
        end = monitor.mark()
    steps = {stage: model.timer.take() for stage, model in models.items()}
    return {
        "images": len(images["uri"]),
        "crops": crops,
        "quarantined": quarantined,
        "seconds": end[0] - start[0],
        "load_s": load_s,
        "stage_s": seconds,
        "step_s": steps,
        "threads": torch.get_num_threads(),
        **monitor.summary(start, end),
    }


def _lap(seconds: dict[str, float], stage: str, tick: float) -> float:
    now = time.perf_counter()
    seconds[stage] += now - tick
    return now


# --- the Ray job --------------------------------------------------------------------------------


class WrittenDatasets:
    """Remembers every dataset passed to `Dataset.write_datasink` while active, for its `stats()`."""

    def __enter__(self) -> list:
        import ray

        self.original, self.datasets = ray.data.Dataset.write_datasink, []
        original, datasets = self.original, self.datasets

        def write_datasink(ds, *args, **kwargs):
            datasets.append(ds)
            return original(ds, *args, **kwargs)

        ray.data.Dataset.write_datasink = write_datasink
        return self.datasets

    def __exit__(self, *exc) -> None:
        import ray

        ray.data.Dataset.write_datasink = self.original


def split_overrides(overrides: list[str]) -> tuple[list[str], dict, dict]:
    """Job config overrides; `ray.KEY=V` (a YAML value) and `env.NAME=V` (runtime_env env_vars) as
    ray.init kwargs; `data.KEY=V` as DataContext attributes."""
    job, ray_kwargs, data_attrs, env = [], {}, {}, {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key.startswith("ray."):
            ray_kwargs[key.removeprefix("ray.")] = yaml.safe_load(value)
        elif key.startswith("data."):
            data_attrs[key.removeprefix("data.")] = yaml.safe_load(value)
        elif key.startswith("env."):
            env[key.removeprefix("env.")] = value
        else:
            job.append(item)
    if env:
        ray_kwargs.setdefault("runtime_env", {}).setdefault("env_vars", {}).update(env)
    return job, ray_kwargs, data_attrs


def parquet_rows(folder: Path) -> int:
    """Rows in every Parquet file under `folder` (the job's output layout may nest shard folders)."""
    return sum(pq.read_metadata(path).num_rows for path in folder.rglob("*.parquet"))


def run_ray(cfg, cpus: int, intervals: tuple[float, float], ray_kwargs: dict, data_attrs: dict) -> dict:
    """`mine_lookbook(cfg)` on a fresh local Ray instance; times the call, samples memory throughout."""
    import ray

    from jobs.mine import mine_lookbook
    from pipeline.driver import configure_data
    from pipeline.stage import attempt_ledger

    kwargs = {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False, **ray_kwargs}
    with TreeMonitor(*intervals) as monitor:
        ray.init(**kwargs)
        configure_data(cfg)
        context = ray.data.DataContext.get_current()
        for name, value in data_attrs.items():
            setattr(context, name, value)
        with WrittenDatasets() as written:
            start = monitor.mark()
            with attempt_ledger() as ledger:
                mine_lookbook(cfg, ledger)
            end = monitor.mark()
        summary = "\n".join(f"-- execution {k + 1} of {len(written)}\n{ds.stats()}" for k, ds in enumerate(written))
        store = ray.available_resources().get("object_store_memory", 0)
        ray.shutdown()
    return {
        "images": pq.read_metadata(cfg.lookbook).num_rows,
        "crops": parquet_rows(Path(cfg.output) / "crops"),
        "quarantined": parquet_rows(Path(cfg.output) / "quarantine"),
        "executions": len(written),
        "seconds": end[0] - start[0],
        **monitor.summary(start, end),
        "object_store_bytes": store,
        "ray_init": {k: v for k, v in kwargs.items()},
        "data_context": data_attrs,
        "stats": summary,
    }


# --- driver -------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench.pipeline] {message}", file=sys.stderr, flush=True)


def run_child(args: argparse.Namespace, phase: str, manifest: Path, label: str, overrides: list[str]) -> dict:
    """One measurement in a fresh interpreter (clean memory accounting); its output goes to a log file."""
    output = args.workdir / "out" / label
    command = [sys.executable, "-m", "bench.pipeline", "--phase", phase, "--manifest", str(manifest)]
    command += ["--output", str(output), "--workdir", str(args.workdir), "--cpus", str(args.cpus)]
    command += ["--interval", str(args.interval), "--memory-interval", str(args.memory_interval), *overrides]
    log_path = args.workdir / "logs" / f"{label}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{label}: {' '.join(command[1:])} (log: {log_path})")
    with open(log_path, "w") as log_file:
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=log_file, text=True)
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"{label} failed (exit {done.returncode}); last lines of {log_path}:\n{tail}")
    return json.loads(results[-1].removeprefix(RESULT_PREFIX))


def child(args: argparse.Namespace, overrides: list[str]) -> None:
    job, ray_kwargs, data_attrs = split_overrides(overrides)
    shutil.rmtree(args.output, ignore_errors=True)  # a fresh output: the job skips work it finds done
    cfg = job_config(args.workdir, args.manifest, args.output, job)
    intervals = (args.interval, args.memory_interval)
    if args.phase == "floor":
        result = run_floor(cfg, args.manifest, args.output, args.cpus, intervals)
    else:
        result = run_ray(cfg, args.cpus, intervals, ray_kwargs, data_attrs)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def gb(value: float) -> str:
    return f"{value / 1e9:.2f}"


def actor_cpu_s(run: dict) -> tuple[float, float]:
    """CPU seconds of a Ray run's Ray Data actors (the processes `actor_ready_s` names) and of all its
    other processes: Ray's task workers, its services and Ray Data's own actors, and the driver."""
    actors = sum(cpu for kind, cpu in run["cpu_s_by_process"].items() if kind in run["actor_ready_s"])
    return actors, sum(run["cpu_s_by_process"].values()) - actors


def share(part: float, rest: float) -> float:
    return part / (part + rest)


def report(args: argparse.Namespace, runs: dict[str, dict], overrides: list[str]) -> str:
    print(f"overrides: {' '.join(overrides) or '(none)'}")
    print(
        f"{'run':8s} {'images':>7s} {'crops':>7s} {'seconds':>8s} {'images/s':>9s} {'cores':>6s} {'others':>7s}"
        f" {'peak GB':>8s}  peak GB by process"
    )
    for label, r in runs.items():
        parts = ", ".join(f"{k} {gb(v)}" for k, v in sorted(r["peak_parts"].items(), key=lambda kv: -kv[1]))
        print(
            f"{label:8s} {r['images']:7d} {r['crops']:7d} {r['seconds']:8.1f} {r['images'] / r['seconds']:9.2f}"
            f" {r['cores_used']:6.2f} {r['other_cores_used']:7.2f} {gb(r['peak_bytes']):>8s}  {parts}"
        )
    print("cores: CPU cores the run used on average; others: cores other processes on the machine used meanwhile")
    for label, r in runs.items():
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_s_by_process"].items() if v >= 0.5)
        print(f"{label}: CPU seconds by process: {cpu}")
    for label, r in runs.items():
        if r["actor_ready_s"]:
            ready = ", ".join(f"{k} {v:.1f}" for k, v in r["actor_ready_s"].items())
            print(f"{label}: seconds from the start of mine_lookbook until each actor was ready: {ready}")
            actors, others = actor_cpu_s(r)
            print(
                f"{label}: CPU seconds of the stage's actors {actors:.0f}, of every other process {others:.0f}"
                f" ({r['monitor_cpu_s']:.1f} of them this benchmark's sampling): the actors' share"
                f" {share(actors, others):.2f}"
            )
    if "floor" in runs:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in runs["floor"]["stage_s"].items())
        print(
            f"floor seconds by stage: {stages}; torch threads {runs['floor']['threads']};"
            f" model loading and warm-up {runs['floor']['load_s']:.1f} (not timed)"
        )
        for stage, steps in runs["floor"]["step_s"].items():
            print(f"floor {stage} seconds by step (core.steps): " + ", ".join(f"{k} {v:.1f}" for k, v in steps.items()))
    for label in ("ray n", "ray 10n"):
        if runs.get(label, {}).get("stats"):
            print(f"\nRay Data stats, {label}:\n{runs[label]['stats']}")
    fields = {"n": args.n}
    if "ray n" in runs:
        fields["images_per_s"] = f"{runs['ray n']['images'] / runs['ray n']['seconds']:.2f}"
    if "floor" in runs:
        fields["floor_images_per_s"] = f"{runs['floor']['images'] / runs['floor']['seconds']:.2f}"
    if "ray n" in runs and "floor" in runs:
        ratio = (runs["ray n"]["images"] / runs["ray n"]["seconds"]) / (
            runs["floor"]["images"] / runs["floor"]["seconds"]
        )
        fields["ratio_vs_floor"] = f"{ratio:.2f}"
    if runs.get("ray n", {}).get("actor_ready_s"):
        fields["actors_cpu_share"] = f"{share(*actor_cpu_s(runs['ray n'])):.2f}"
    if "ray n" in runs:
        fields["peak_gb_n"] = gb(runs["ray n"]["peak_bytes"])
    if "ray 10n" in runs:
        fields["peak_gb_10n"] = gb(runs["ray 10n"]["peak_bytes"])
    if "ray n" in runs and "ray 10n" in runs:
        fields["mem_ratio_10x"] = f"{runs['ray 10n']['peak_bytes'] / runs['ray n']['peak_bytes']:.2f}"
    return "pipeline: " + " ".join(f"{k}={v}" for k, v in fields.items())


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.phase:
        child(args, overrides)
        return
    paths = prepare(args.workdir, args.n, args.scale)
    plan = [  # (label, phase, manifest, timed: its images/s is reported)
        ("floor", "floor", paths["lookbook_n"], True),
        ("ray n", "ray", paths["lookbook_n"], True),
        ("ray 10n", "ray", paths["lookbook_10n"], False),
    ]
    runs = {}
    for label, phase, manifest, timed in plan:
        if label.replace(" ", "-") not in args.skip:
            with exclusive(args.lock if timed else None):
                runs[label] = run_child(args, phase, manifest, label.replace(" ", "-"), overrides)
    (args.workdir / "results.json").write_text(json.dumps({"argv": sys.argv, "runs": runs}, indent=2))
    print(report(args, runs, overrides), flush=True)


if __name__ == "__main__":
    main()
