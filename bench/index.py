"""Benchmark of the index and scoring stages at the design scale: build, recall, speed, memory.

    python -m bench.index [--rows 10000000] [--dim 768] [--work-shards 64] [--queries 1000]
                          [--garments 10000] [--memory-budget-gb 8] [--nprobe 4 8 16 32 64 128]
                          [--workdir /tmp/lookbook-bench-index] [--lock FILE]
    python -m bench.index --plan     # the README's memory table (core.index_plan.memory_table)

Runs the job's own code on generated embeddings (no models), each step timed on its own:

1. **data**: a crops table as the lookbook stage commits it (one Parquet file per work shard,
   float16 `embedding` and `caption_embedding`, crop and image ids, boxes), unit vectors from a
   mixture of --centres Gaussian clusters with Zipf-like sizes and spreads (centres grouped in
   families of 16), generated in chunks from fixed seeds and cached under --workdir;
   --queries held-out queries and --garments garments from the same mixture. --noise: how a
   vector departs from its centre. `lowrank` (default), as learned embeddings do: mostly along
   RANK directions of its family, with variances falling as 1/i (a power-law spectrum), plus
   ISOTROPIC_SHARE of isotropic noise. `isotropic`: along all dimensions alike, the worst case
   for any index (nearest neighbours within a cluster are then random points of a 768-d sphere).
2. **truth**: the exact top-10 of each query by one chunked numpy pass over every crop file
   (float16 widened per block); its compute time (reads excluded) is the brute-force figure.
3. **build**: `pipeline.index_build.build` on a local Ray with the machine's CPUs: the picker's
   type and shard count for --memory-budget-gb, the template trained once, one task per shard
   (which also measures that shard's recall to choose nprobe).
4. **search**: each shard searched as a scorer actor does (`actors.scorer.IndexShardSearcher`,
   files memory-mapped) in a fresh process, at the manifest's nprobe and at each --nprobe; the
   per-shard top-10 merged exactly. `qps` = queries / the summed seconds of all shards (one
   process after another; on a cluster the shards' pools search in parallel).
5. **scoring**: the job's garment scoring steps (`jobs.mine.search` then `jobs.mine.score`: one
   actor pool per index shard, then the best match) over the --garments garments as one
   streaming Ray Data job (its scorer actors share half the CPUs), with each actor's peak memory.

Memory is sampled from /proc every --interval seconds: per process its peak RSS (resident,
including mapped index pages in the page cache, shared between processes), USS (private memory:
what the process alone holds) and PSS. The last line is `index: key=value ...`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.memory import TreeMonitor, exclusive
from core.index import index_ids, merge_topk
from core.index_plan import memory_table

CHUNK = 1 << 15  # rows generated from one random stream; fixes the data whatever the file layout
SEARCH_CHUNK = 1 << 16  # rows per brute-force matmul block (1,000 queries -> 256 MiB of scores)
SPREAD = (0.8, 1.6)  # noise norm relative to the centre (cosine to the centre 0.53 .. 0.78)
FAMILY_SPREAD = 0.6  # centres of one family: centre = family + 0.6 * random direction
FAMILY_SIZE = 16
RANK = 64  # directions a family's vectors vary along (lowrank noise)
ISOTROPIC_SHARE = 0.1  # amplitude of the isotropic part of lowrank noise
K = 10
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Mixture:
    centres: np.ndarray  # (c, dim) unit vectors
    spread: np.ndarray  # (c,) noise norm per centre
    weights: np.ndarray  # (c,) probabilities, ~ 1/sqrt(rank)
    family: np.ndarray  # (c,) family of each centre
    bases: np.ndarray | None  # (families, dim, RANK) orthonormal directions scaled by the spectrum; None: isotropic


def mixture(dim: int, count: int, seed: int, noise_kind: str = "lowrank") -> Mixture:
    rng = np.random.default_rng([seed, 0])
    families = _unit(rng.standard_normal((max(1, count // FAMILY_SIZE), dim), dtype=np.float32))
    noise = _unit(rng.standard_normal((count, dim), dtype=np.float32))
    family = rng.integers(len(families), size=count)
    centres = _unit(families[family] + FAMILY_SPREAD * noise)
    spread = rng.uniform(*SPREAD, size=count).astype(np.float32)
    weights = 1.0 / np.sqrt(np.arange(1, count + 1))
    bases = None
    if noise_kind == "lowrank":
        spectrum = np.arange(1, RANK + 1, dtype=np.float32) ** -0.5  # standard deviations: variances ~ 1/i
        spectrum /= np.linalg.norm(spectrum)
        gaussian = rng.standard_normal((len(families), dim, RANK), dtype=np.float32)
        bases = np.stack([np.linalg.qr(g)[0] for g in gaussian]) * spectrum
    return Mixture(centres, spread, weights / weights.sum(), family, bases)


def draw(mix: Mixture, key: tuple[int, ...], rows: int, seed: int) -> np.ndarray:
    """`rows` unit vectors rounded to float16 (as the job stores them), a pure function of (seed, key)."""
    rng = np.random.default_rng([seed, *key])
    label = rng.choice(len(mix.centres), size=rows, p=mix.weights)
    dim = mix.centres.shape[1]
    x = rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
    if mix.bases is not None:
        coefficients = rng.standard_normal((rows, RANK), dtype=np.float32)
        x *= ISOTROPIC_SHARE
        family = mix.family[label]
        for f in np.unique(family):
            mine = family == f
            x[mine] += (1 - ISOTROPIC_SHARE) * coefficients[mine] @ mix.bases[f].T
    x *= mix.spread[label][:, None]
    x += mix.centres[label]
    return _unit(x).astype(np.float16)


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass(frozen=True)
class Data:
    rows: int
    dim: int
    work_shards: int
    centres: int
    seed: int
    workdir: Path
    noise: str = "lowrank"

    @property
    def output(self) -> Path:
        name = f"n{self.rows}-d{self.dim}-w{self.work_shards}-c{self.centres}-s{self.seed}-{self.noise}"
        return self.workdir / name

    def mixture(self) -> Mixture:
        return mixture(self.dim, self.centres, self.seed, self.noise)

    def file(self, work_shard: int) -> str:
        return f"crops/shard={work_shard:05d}/part-00000.parquet"

    def shard_rows(self, work_shard: int) -> tuple[int, int]:
        """(first global row, rows) of a work shard: equal contiguous slices of the rows."""
        bounds = [self.rows * w // self.work_shards for w in range(self.work_shards + 1)]
        return bounds[work_shard], bounds[work_shard + 1] - bounds[work_shard]


def write_work_shard(data: Data, work_shard: int) -> None:
    """The crop file of one work shard (image stream 1, caption stream 3), skipped when present."""
    path = data.output / data.file(work_shard)
    if path.exists():
        return
    mix = data.mixture()
    rows = data.shard_rows(work_shard)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    half = pa.list_(pa.float16(), data.dim)
    with pq.ParquetWriter(f"{path}.tmp", _crops_schema(data.dim), compression="none") as out:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            ids = index_ids(work_shard, n, start)
            image = draw(mix, (1, work_shard, start // CHUNK), n, data.seed)
            caption = draw(mix, (3, work_shard, start // CHUNK), n, data.seed)
            out.write_table(
                pa.table(
                    {
                        "crop_id": pa.array([f"c{i}" for i in ids.tolist()]),
                        "image_id": pa.array([f"i{i >> 2}" for i in ids.tolist()]),
                        "uri": pa.array([f"s3://lookbook/images/i{i >> 2}.jpg" for i in ids.tolist()]),
                        "box": pa.FixedSizeListArray.from_arrays(
                            pa.array(np.tile([0.0, 0.0, 1.0, 1.0], n), pa.float32()), 4
                        ),
                        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(image.ravel()), data.dim).cast(half),
                        "caption_embedding": pa.FixedSizeListArray.from_arrays(
                            pa.array(caption.ravel()), data.dim
                        ).cast(half),
                    },
                    schema=_crops_schema(data.dim),
                )
            )
    os.replace(f"{path}.tmp", path)


def _crops_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("crop_id", pa.string()),
            ("image_id", pa.string()),
            ("uri", pa.string()),
            ("box", pa.list_(pa.float32(), 4)),
            ("embedding", pa.list_(pa.float16(), dim)),
            ("caption_embedding", pa.list_(pa.float16(), dim)),
        ]
    )


def make_data(data: Data) -> None:
    """Every work shard's crop file, two processes at a time."""
    with concurrent.futures.ProcessPoolExecutor(
        os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        list(pool.map(write_work_shard, [data] * data.work_shards, range(data.work_shards)))


def commits(data: Data) -> dict:
    """The lookbook stage's commits of the generated work shards (what `index_build.build` reads)."""
    from pipeline.commits import ShardCommit

    done = {}
    for w in range(data.work_shards):
        name = data.file(w)
        size = (data.output / name).stat().st_size
        done[w] = ShardCommit(rows=data.shard_rows(w)[1], files=[name], sizes=[size], inputs=f"bench-{w}")
    return done


def queries_and_garments(data: Data, queries: int, garments: int) -> tuple[np.ndarray, Path]:
    """(held-out queries (q, dim) float32, a garments Parquet file as the garment stage has them before `search`)."""
    mix = data.mixture()
    held_out = draw(mix, (2,), queries, data.seed).astype(np.float32)
    path = data.output / f"garments-{garments}.parquet"
    if not path.exists():
        image, caption = draw(mix, (4,), garments, data.seed), draw(mix, (5,), garments, data.seed)
        table = pa.table(
            {
                "image_id": [f"g{i}" for i in range(garments)],
                "uri": [f"garments/g{i}.jpg" for i in range(garments)],
                "caption": [""] * garments,
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(image.astype(np.float32).ravel()), data.dim),
                "caption_embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(caption.astype(np.float32).ravel()), data.dim
                ),
                "reason": [""] * garments,
                "error": [""] * garments,
                "shard": pa.array(np.arange(garments) % data.work_shards, pa.int32()),
            }
        )
        pq.write_table(table, path)
    return held_out, path


# ---------------------------------------------------------------------------------------------
# Ground truth


def brute_force(data: Data, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """(exact top-K index ids (q, K) by inner product, ties by lower id; seconds of numpy compute)."""
    cache = data.output / f"truth-q{len(queries)}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["ids"], float(saved["seconds"])
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.full((len(queries), K), -1, np.int64)
    seconds = 0.0
    for w in range(data.work_shards):
        column = pq.read_table(data.output / data.file(w), columns=["embedding"])["embedding"]
        first = 0
        for batch in column.chunks:
            values = batch.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), data.dim)
            for start in range(0, len(values), SEARCH_CHUNK):
                block = values[start : start + SEARCH_CHUNK].astype(np.float32)
                t = time.perf_counter()
                scores = queries @ block.T
                top = np.argpartition(scores, scores.shape[1] - K, axis=1)[:, -K:] if scores.shape[1] > K else None
                ids = index_ids(w, len(block), first + start)
                if top is not None:
                    scores, ids = np.take_along_axis(scores, top, axis=1), ids[top]
                else:
                    ids = np.broadcast_to(ids, scores.shape)
                best_scores, best_ids = merge_topk([best_scores, scores], [best_ids, ids], K)
                seconds += time.perf_counter() - t
            first += len(values)
    np.savez(cache, ids=best_ids, seconds=seconds)
    return best_ids, seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / K (ids -1 never count)."""
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth)])) / K


# ---------------------------------------------------------------------------------------------
# Search, one shard per fresh process


def search_shard(index_dir: str, shard: int, queries: np.ndarray, nprobes: list[int]) -> dict:
    """One shard loaded as a scorer actor loads it, searched at each nprobe; its memory."""
    from actors.scorer import IndexShardSearcher
    from core.config import IndexConfig
    from core.storage import StorageConfig

    def status(field: str) -> int:
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))

    start = time.perf_counter()
    searcher = IndexShardSearcher(index_dir, shard, IndexConfig(use_gpu="off"), StorageConfig(), K)
    load_s = time.perf_counter() - start
    searcher.shard.search(queries[:16], K, nprobes[0])  # warm-up: faiss threads, first pages
    results = {}
    for nprobe in nprobes:
        t = time.perf_counter()
        scores, ids = searcher.shard.search(queries, K, nprobe)
        results[nprobe] = (time.perf_counter() - t, scores, ids)
    return {
        "load_s": load_s,
        "results": results,
        "peak_rss": status("VmHWM:"),
        "anon": status("RssAnon:"),
        "file": status("RssFile:"),
    }


def isolated(fn, *args):
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# ---------------------------------------------------------------------------------------------
# The scoring stage


def run_scoring(data: Data, garments: Path, index_cfg, cpus: float, interval: float) -> dict:
    """The job's `search` and `score` steps over the garments file as one streaming Ray Data job,
    its scorer actors sharing `cpus` (the rest is for the read and best-match tasks)."""
    import ray

    from core.config import load_config
    from jobs import mine
    from pipeline.stage import AttemptGuard, attempt_ledger

    cfg = load_config(
        [
            f"lookbook={garments}",
            f"garments={garments}",
            f"output={data.output}",
            "scoring.pool.batch_size=1024",
            f"scoring.pool.num_cpus={cpus}",
        ]
    )
    cfg.index = index_cfg
    rows = candidates = 0
    with TreeMonitor(interval) as monitor:
        start = time.perf_counter()
        with attempt_ledger() as ledger:
            guard = AttemptGuard(ledger, "garments", cfg.work.max_attempts)
            embedded = ray.data.read_parquet(str(garments)).map_batches(_as_matrices)  # as the embedder hands them on
            ds = mine.score(mine.search(embedded, cfg, guard), cfg, guard)
            for batch in ds.select_columns(["n_candidates"]).iter_batches(batch_size=None):
                rows, candidates = rows + len(batch["n_candidates"]), candidates + int(batch["n_candidates"].sum())
        seconds = time.perf_counter() - start
    actors = {p: v for p, v in monitor.process_peaks.items() if v["kind"].startswith("IndexShard")}
    log(f"scoring: {rows} garments in {seconds:.0f} s, {len(actors)} scorer actors")
    return {"seconds": seconds, "actors": actors, "rows": rows, "candidates": candidates, "peak_tree": monitor.peak}


def _as_matrices(batch: dict) -> dict:
    return {**batch, **{c: np.stack(batch[c]).astype(np.float32) for c in ("embedding", "caption_embedding")}}


# ---------------------------------------------------------------------------------------------
# Driver


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--work-shards", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--garments", type=int, default=10_000)
    parser.add_argument("--memory-budget-gb", type=float, default=8.0)
    parser.add_argument("--train-sample", type=int, default=100_000)
    parser.add_argument("--nprobe", type=int, nargs="*", default=[8, 16, 32, 64, 128])
    parser.add_argument("--scoring-nprobe", type=int, help="nprobe of the scoring run (default: the manifest's)")
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--noise", choices=["lowrank", "isotropic"], default="lowrank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lookbook-bench-index"))
    parser.add_argument("--lock", type=Path, help="hold an exclusive flock on this file while measuring")
    parser.add_argument("--plan", action="store_true", help="print the README's memory table and stop")
    args = parser.parse_args(argv)
    if args.plan:
        print(memory_table())
        return
    data = Data(args.rows, args.dim, args.work_shards, args.centres, args.seed, args.workdir, args.noise)
    figures: dict = {"rows": args.rows, "dim": args.dim}
    started = time.perf_counter()

    t = time.perf_counter()
    make_data(data)
    queries, garments = queries_and_garments(data, args.queries, args.garments)
    log(f"data: {data.output} ({time.perf_counter() - t:.0f} s)")
    with exclusive(args.lock):
        figures.update(measure(args, data, queries, garments))
    figures["elapsed_s"] = round(time.perf_counter() - started)
    print("index: " + " ".join(f"{k}={v}" for k, v in figures.items()))


def measure(args: argparse.Namespace, data: Data, queries: np.ndarray, garments: Path) -> dict:
    import ray

    from core.config import IndexConfig
    from core.schemas import INDEX_DIR
    from core.storage import StorageConfig
    from pipeline.index_build import build

    truth, brute_s = brute_force(data, queries)
    log(f"truth: {len(queries)} queries, numpy brute force {brute_s:.1f} s of compute")
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    index_cfg = IndexConfig(  # each build task gets the machine's cores, as a node's would
        memory_budget_gb=args.memory_budget_gb, train_sample=args.train_sample, use_gpu="off", num_cpus=cpus
    )
    with TreeMonitor(args.interval) as monitor:
        t = time.perf_counter()
        manifest = build(str(data.output), commits(data), data.work_shards, index_cfg, StorageConfig())
        build_s = time.perf_counter() - t
    build_peak = max((v["pss"] for v in monitor.process_peaks.values() if v["kind"].startswith("_fill")), default=0)
    index_dir = str(data.output / INDEX_DIR)
    sizes = {s.index_file: os.path.getsize(Path(index_dir) / s.index_file) for s in manifest.shards}
    payload = sum(os.path.getsize(Path(index_dir) / s.payload_file) for s in manifest.shards)
    log(f"build: {manifest.index_type} x {len(manifest.shards)} shards, nprobe {manifest.nprobe} in {build_s:.0f} s")
    for factory, measured in manifest.params["type_measurements"].items():
        log(f"type choice on the training sample, {factory}: {measured}")

    nprobes = sorted({manifest.nprobe or 1, *args.nprobe}) if "IVF" in manifest.index_type else [0]
    shards = [isolated(search_shard, index_dir, s, queries, nprobes) for s in range(len(manifest.shards))]
    rows = []
    for nprobe in nprobes:
        seconds = sum(shard["results"][nprobe][0] for shard in shards)
        _, ids = merge_topk([s["results"][nprobe][1] for s in shards], [s["results"][nprobe][2] for s in shards], K)
        rows.append((nprobe, recall(ids, truth), len(queries) / seconds, brute_s / seconds))
    print_search(manifest, rows, len(queries) / brute_s)
    searched = replace(index_cfg, nprobe=args.scoring_nprobe)  # None: the manifest's
    scoring = run_scoring(data, garments, searched, cpus / 2 / len(manifest.shards), args.interval)
    ray.shutdown()
    print_memory(shards, scoring)
    chosen = next(r for r in rows if r[0] == (manifest.nprobe or 0) or len(rows) == 1)
    return {
        "type": manifest.index_type,
        "shards": len(manifest.shards),
        "nprobe": chosen[0],
        "recall@10": f"{chosen[1]:.4f}",
        "build_recall@10": f"{manifest.params['measured_recall']:.4f}",
        "qps": f"{chosen[2]:.0f}",
        "speedup_vs_bruteforce": f"{chosen[3]:.1f}",
        "bruteforce_qps": f"{len(queries) / brute_s:.1f}",
        "build_s": f"{build_s:.0f}",
        "train_rows": manifest.train_rows,
        "index_gb": f"{sum(sizes.values()) / GIB:.2f}",
        "payload_gb": f"{payload / GIB:.2f}",
        "build_task_peak_pss_gb": f"{build_peak / GIB:.2f}",
        "searcher_peak_rss_gb": f"{max(s['peak_rss'] for s in shards) / GIB:.2f}",
        "searcher_anon_gb": f"{max(s['anon'] for s in shards) / GIB:.2f}",
        "scoring_nprobe": args.scoring_nprobe or manifest.nprobe,
        "scoring_s": f"{scoring['seconds']:.0f}",
        "scored_garments": scoring["rows"],
        "scorer_actor_peak_uss_gb": f"{max(a['uss'] for a in scoring['actors'].values()) / GIB:.2f}",
        "scorer_actor_peak_rss_gb": f"{max(a['rss'] for a in scoring['actors'].values()) / GIB:.2f}",
        "scorer_actor_peak_pss_gb": f"{max(a['pss'] for a in scoring['actors'].values()) / GIB:.2f}",
    }


def print_search(manifest, rows: list[tuple], brute_qps: float) -> None:
    print(f"{'type':<26} {'shards':>6} {'nprobe':>6} {'recall@10':>9} {'qps':>8} {'speedup':>8}")
    print(f"{'numpy-bruteforce':<26} {'':>6} {'':>6} {1.0:>9.4f} {brute_qps:>8.1f} {1.0:>8.1f}")
    for nprobe, found, qps, speedup in rows:
        mark = "*" if nprobe == manifest.nprobe else " "
        shards = len(manifest.shards)
        print(f"{manifest.index_type:<26} {shards:>6} {nprobe:>5}{mark} {found:>9.4f} {qps:>8.0f} {speedup:>8.1f}")


def print_memory(shards: list[dict], scoring: dict) -> None:
    print(f"{'process':<28} {'peak_rss_gb':>11} {'private_gb':>10} {'pss_gb':>7}")
    for n, shard in enumerate(shards):
        print(f"{f'searcher shard {n}':<28} {shard['peak_rss'] / GIB:>11.2f} {shard['anon'] / GIB:>10.2f} {'':>7}")
    for pid, actor in sorted(scoring["actors"].items(), key=lambda kv: kv[1]["kind"]):
        name = f"{actor['kind']} ({pid})"
        print(f"{name:<28} {actor['rss'] / GIB:>11.2f} {actor['uss'] / GIB:>10.2f} {actor['pss'] / GIB:>7.2f}")


def log(message: str) -> None:
    print(f"[bench.index] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
