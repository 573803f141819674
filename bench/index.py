"""Index benchmark: build time, peak memory, queries/s and recall@10 against exact search for each
index type on synthetic clustered unit vectors, next to a brute-force numpy search of the same
queries in the same run.

    python -m bench.index [--sizes 10000 100000 1000000] [--dim 768] [--queries 1000]
                          [--types auto Flat IVF,Flat IVF,PQ96] [--nprobe 16 32 64]

Each index is built the way the job builds it (pipeline/index_build.py, without Ray): the template is
trained on a sample of at most --train-sample rows drawn across the whole set, --shards shards are
filled from it one after another, serialized with their checksums, loaded back, and searched by
fanning out to every shard and merging the per-shard top-k exactly. `IVF,` in a type gets the
list count the picker would use for that size. Each type runs in a fresh process so its peak
resident memory (getrusage ru_maxrss) is its own: `build_peak_gb` once the template is trained
and every shard is written to disk, `peak_gb` once all shards are loaded and searched (what one
searcher holds). Search time is one batch of all queries; `speedup` is brute-force seconds over it.

The data (float32 rows in a raw file under --workdir, reused by later runs) is a mixture of
--centres Gaussian clusters with Zipf-like sizes and spreads, the centres themselves grouped in
families of 16; queries are held-out draws from the same mixture. Exact ground truth and the
brute-force timing come from one chunked numpy matmul + argpartition pass over all rows (timed
without the file reads). The last line is `index: key=value ...` for the auto-picked type at the
largest size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import index as shard_index

CHUNK = 1 << 15  # rows generated from one random stream; fixes the data whatever the read size
SEARCH_CHUNK = 1 << 16  # rows per brute-force matmul block (1,000 queries -> 256 MiB of scores)
SPREAD = (0.8, 1.6)  # noise norm relative to the centre (cosine to the centre 0.53 .. 0.78)
FAMILY_SPREAD = 0.6  # centres of one family: centre = family + 0.6 * random direction
FAMILY_SIZE = 16


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Mixture:
    centres: np.ndarray  # (c, dim) unit vectors
    spread: np.ndarray  # (c,) noise norm per centre
    weights: np.ndarray  # (c,) probabilities, ~ 1/sqrt(rank)


def mixture(dim: int, count: int, seed: int) -> Mixture:
    rng = np.random.default_rng([seed, 0])
    families = _unit(rng.standard_normal((max(1, count // FAMILY_SIZE), dim), dtype=np.float32))
    noise = _unit(rng.standard_normal((count, dim), dtype=np.float32))
    centres = _unit(families[rng.integers(len(families), size=count)] + FAMILY_SPREAD * noise)
    spread = rng.uniform(*SPREAD, size=count).astype(np.float32)
    weights = 1.0 / np.sqrt(np.arange(1, count + 1))
    return Mixture(centres, spread, weights / weights.sum())


def draw(mix: Mixture, stream: int, chunk: int, rows: int, seed: int) -> np.ndarray:
    """`rows` unit vectors, a pure function of (seed, stream, chunk)."""
    rng = np.random.default_rng([seed, stream, chunk])
    label = rng.choice(len(mix.centres), size=rows, p=mix.weights)
    x = rng.standard_normal((rows, mix.centres.shape[1]), dtype=np.float32)
    x *= (mix.spread[label] / np.sqrt(x.shape[1]))[:, None]
    x += mix.centres[label]
    return _unit(x)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(workdir: Path, n: int, dim: int, queries: int, centres: int, seed: int) -> tuple[Path, np.ndarray]:
    """(raw float32 file of n rows, (queries, dim) held-out queries); the file is reused when present."""
    workdir.mkdir(parents=True, exist_ok=True)
    mix = mixture(dim, centres, seed)
    path = workdir / f"base-n{n}-d{dim}-c{centres}-s{seed}.f32"
    if not path.exists() or path.stat().st_size != n * dim * 4:
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            for chunk, start in enumerate(range(0, n, CHUNK)):
                draw(mix, 1, chunk, min(CHUNK, n - start), seed).tofile(f)
        tmp.rename(path)
    held_out = np.concatenate(
        [draw(mix, 2, chunk, min(CHUNK, queries - start), seed) for chunk, start in enumerate(range(0, queries, CHUNK))]
    )
    return path, held_out


def read_rows(path: Path, start: int, stop: int, dim: int) -> np.ndarray:
    return np.fromfile(path, np.float32, count=(stop - start) * dim, offset=start * dim * 4).reshape(-1, dim)


def brute_force(path: Path, n: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """(exact top-k ids (q, k) by inner product, seconds of numpy compute) over all n rows."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    seconds = 0.0
    for start in range(0, n, SEARCH_CHUNK):
        block = read_rows(path, start, min(n, start + SEARCH_CHUNK), queries.shape[1])
        t = time.perf_counter()
        scores = queries @ block.T
        kk = min(k, scores.shape[1])
        top = np.argpartition(scores, scores.shape[1] - kk, axis=1)[:, -kk:]
        all_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        all_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(all_scores, order, axis=1)
        best_ids = np.take_along_axis(all_ids, order, axis=1)
        seconds += time.perf_counter() - t
    return best_ids, seconds


# ---------------------------------------------------------------------------------------------
# One index type, in its own process


@dataclass(frozen=True)
class Job:
    path: str
    n: int
    dim: int
    factory: str
    shards: int
    train_sample: int
    nprobes: tuple[int, ...]  # searched besides the type's default
    k: int


@dataclass(frozen=True)
class Measured:
    factory: str
    nlist: int
    train_rows: int
    train_s: float
    build_s: float
    index_gb: float
    build_peak_gb: float
    peak_gb: float
    searches: list[tuple[int, float, np.ndarray]]  # (nprobe, seconds, ids)


def run_type(job: Job, queries: np.ndarray) -> Measured:
    path = Path(job.path)
    spec = shard_index.index_spec(job.factory, job.dim)
    nprobe = shard_index.default_nprobe(spec.nlist) if spec.nlist else 0
    start = time.perf_counter()
    template, train_rows = None, 0
    if not shard_index.new_index(job.factory, job.dim).is_trained:
        ((_, rows),) = shard_index.sample_rows([job.n], job.train_sample)
        sample = read_sample(path, rows, job.dim)
        template = shard_index.train_template(sample, job.factory, "off", nprobe)
        train_rows = len(sample)
        del sample
    train_s = time.perf_counter() - start
    shard_dir = Path(tempfile.mkdtemp(prefix="shards-", dir=path.parent))
    try:
        entries = []
        for shard, (first, slices) in enumerate(shard_index.partition([job.n], job.shards)):
            (piece,) = slices
            vectors = read_rows(path, piece.start, piece.stop, job.dim)
            data = shard_index.serialize(shard_index.build_shard(vectors, first, job.factory, template, "off"))
            name = f"shard-{shard:05d}.faiss"
            (shard_dir / name).write_bytes(data)
            entries.append((name, shard_index.sha256(data), len(data)))
            del vectors, data
        build_s = time.perf_counter() - start
        build_peak_gb = _peak_gb()
        # load as the scorer does: read, check the checksum, deserialize
        indexes = [
            shard_index.deserialize((shard_dir / name).read_bytes(), digest, name) for name, digest, _ in entries
        ]
    finally:
        shutil.rmtree(shard_dir)
    shard_index.search_shards(indexes, queries[:16], job.k, nprobe or None)  # warm-up
    searches = []
    for probe in sorted({*job.nprobes, nprobe}) if spec.nlist else (0,):  # the default nprobe always
        t = time.perf_counter()
        _, ids = shard_index.search_shards(indexes, queries, job.k, probe or None)
        searches.append((probe if spec.nlist else 0, time.perf_counter() - t, ids))
    index_gb = sum(size for _, _, size in entries) / 2**30
    return Measured(
        job.factory, spec.nlist, train_rows, train_s, build_s, index_gb, build_peak_gb, _peak_gb(), searches
    )


def read_sample(path: Path, rows: np.ndarray, dim: int) -> np.ndarray:
    """The given (sorted) rows, read one by one: only the sample itself becomes resident."""
    out = np.empty((len(rows), dim), np.float32)
    with path.open("rb") as f:
        for i, row in enumerate(rows.tolist()):
            f.seek(row * dim * 4)
            f.readinto(memoryview(out[i]).cast("B"))
    return out


def _peak_gb() -> float:
    """Peak resident set size of this process so far (getrusage ru_maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


def isolated(job: Job, queries: np.ndarray) -> Measured:
    """`run_type` in a fresh process, so that ru_maxrss is this type's peak alone."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(run_type, job, queries).result()


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class Row:
    n: int
    type: str
    auto: str
    nlist: int
    nprobe: int
    train_rows: int
    build_s: float
    index_gb: float
    build_peak_gb: float
    peak_gb: float
    qps: float
    recall_at_k: float
    speedup: float


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k (ids -1 never count)."""
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / truth.shape[1]


def resolve_types(tokens: list[str], n: int, dim: int, budget: int) -> tuple[list[str], str]:
    """(distinct factory strings for size n, always including the auto-picked one, and that one);
    `IVF,` gets `ivf_lists(n)`."""
    auto = shard_index.pick_factory(n, dim, budget)
    factories = []
    for token in tokens:
        factory = auto if token == "auto" else re.sub(r"IVF,", f"IVF{shard_index.ivf_lists(n)},", token)
        if factory not in factories:
            factories.append(factory)
    return (factories if auto in factories else [auto, *factories]), auto


def machine_line(load_start: float, started: float) -> str:
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpus = shard_index._gpus_visible()
    return (
        f"machine: cpus={os.cpu_count()} ram_gb={ram_gb:.1f} gpus={gpus} faiss={shard_index.faiss.__version__}"
        f" numpy={np.__version__} loadavg_1min_start={load_start:.2f} loadavg_1min_end={os.getloadavg()[0]:.2f}"
        f" elapsed_s={time.perf_counter() - started:.0f}"
    )


def print_table(rows: list[Row], k: int) -> None:
    header = f"{'n':>8} {'type':<24} {'auto':<4} {'nlist':>5} {'nprobe':>6} {'train_n':>7} {'build_s':>8}"
    header += f" {'index_gb':>8} {'build_peak_gb':>13} {'peak_gb':>7} {'qps':>8} {f'recall@{k}':>9} {'speedup':>7}"
    print(header)
    for r in rows:
        print(
            f"{r.n:>8} {r.type:<24} {r.auto:<4} {r.nlist:>5} {r.nprobe:>6} {r.train_rows:>7} {r.build_s:>8.1f}"
            f" {r.index_gb:>8.3f} {r.build_peak_gb:>13.2f} {r.peak_gb:>7.2f} {r.qps:>8.0f}"
            f" {r.recall_at_k:>9.4f} {r.speedup:>7.1f}"
        )


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--types", nargs="+", default=["auto", "Flat", "IVF,Flat", "IVF,PQ96"])
    parser.add_argument(
        "--nprobe", type=int, nargs="*", default=[], help="IVF lists to visit besides the type's default"
    )
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--train-sample", type=int, default=100_000)
    parser.add_argument("--memory-budget-gb", type=float, default=8.0)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lookbook-bench-index"))
    args = parser.parse_args(argv)
    budget = int(args.memory_budget_gb * 2**30)

    load_start, started = os.getloadavg()[0], time.perf_counter()
    rows: list[Row] = []
    for n in args.sizes:
        path, queries = make_data(args.workdir, n, args.dim, args.queries, args.centres, args.seed)
        truth, brute_s = brute_force(path, n, queries, args.k)
        rows.append(Row(n, "numpy-bruteforce", "", 0, 0, 0, 0.0, 0.0, 0.0, 0.0, len(queries) / brute_s, 1.0, 1.0))
        factories, auto = resolve_types(args.types, n, args.dim, budget)
        for factory in factories:
            job = Job(str(path), n, args.dim, factory, args.shards, args.train_sample, tuple(args.nprobe), args.k)
            m = isolated(job, queries)
            for nprobe, seconds, ids in m.searches:
                found = recall(ids, truth)
                qps, speedup = len(queries) / seconds, brute_s / seconds
                flag = "*" if factory == auto else ""
                rows.append(
                    Row(
                        n, factory, flag, m.nlist, nprobe, m.train_rows, m.build_s,
                        m.index_gb, m.build_peak_gb, m.peak_gb, qps, found, speedup,
                    )
                )  # fmt: skip
            print(f"[bench.index] n={n} {factory}: build {m.build_s:.1f} s, search done", file=sys.stderr, flush=True)

    print(machine_line(load_start, started))
    print_table(rows, args.k)
    largest = max(args.sizes)
    final = next(
        r
        for r in rows
        if r.n == largest and r.auto == "*" and r.nprobe == (shard_index.default_nprobe(r.nlist) if r.nlist else 0)
    )
    print(
        f"index: type={final.type} n={final.n} dim={args.dim} nprobe={final.nprobe}"
        f" recall@{args.k}={final.recall_at_k:.4f} speedup_vs_bruteforce={final.speedup:.1f}"
        f" build_s={final.build_s:.1f} qps={final.qps:.0f} peak_gb={final.peak_gb:.2f}"
        f" bruteforce_qps={next(r.qps for r in rows if r.n == largest and r.type == 'numpy-bruteforce'):.0f}"
    )
    return rows


if __name__ == "__main__":
    main()
