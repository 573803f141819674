"""The Ray plumbing (pipeline/) on a local Ray instance: manifests in any format, exact count-mode tiering,
bounded attempts at rows that kill their worker, decode tasks of bounded size."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from core.config import PoolConfig, ScoringConfig, TierConfig, load_config
from core.images import WORKER_CRASH
from core.schemas import ERROR, REASON, SHARD
from core.storage import StorageConfig
from core.tiering import TIERS, UNMATCHED
from jobs.mine import decode
from pipeline import tier_passes
from pipeline.commits import shard_of
from pipeline.manifests import ManifestError, check_unique_ids, read_manifest, shard_rows, split_shards
from pipeline.sink import ShardTables, SplitParquetSink
from pipeline.stage import AttemptGuard, attempt_ledger, map_actors

pytestmark = pytest.mark.ray
STORAGE = StorageConfig()


def test_jsonl_manifest_is_read_and_optional_columns_filled(local_ray, tmp_path):
    path = tmp_path / "garments.jsonl"
    path.write_text("".join(json.dumps({"garment_id": f"g{i}", "uri": f"/x/{i}.png"}) + "\n" for i in range(5)))
    ds = read_manifest(str(path), "garment_id", ("text",), 4, STORAGE)
    rows = sorted(ds.take_all(), key=lambda r: r["image_id"])
    assert rows[0] == {"image_id": "g0", "uri": "/x/0.png", "text": "", "shard": shard_of(np.array(["g0"]), 4)[0]}
    assert {r["shard"] for r in rows} <= set(range(4))
    assert check_unique_ids(ds, "garments") == 5


def test_manifest_errors_name_the_problem(local_ray, tmp_path):
    (tmp_path / "m.csv").write_text("id,path\na,/x\n")
    with pytest.raises(ManifestError, match=r"lacks columns \['image_id', 'uri'\]"):
        read_manifest(str(tmp_path / "m.csv"), "image_id", (), 1, STORAGE)
    with pytest.raises(ManifestError, match="unknown format '.txt'"):
        read_manifest(str(tmp_path / "m.txt"), "image_id", (), 1, STORAGE)
    (tmp_path / "d.csv").write_text("image_id,uri\na,/1\nb,/2\na,/3\n")
    with pytest.raises(ManifestError, match=r"duplicate ids: 'a' \(x2\)"):
        check_unique_ids(read_manifest(str(tmp_path / "d.csv"), "image_id", (), 1, STORAGE), "lookbook")


def test_ids_stay_text_in_every_format(local_ray, tmp_path):
    """#13, item 7: CSV type inference made `00123` into 123 and `001`, `1` into a false duplicate."""
    (tmp_path / "m.csv").write_text("image_id,uri\n00123,/a\n001,/b\n1,/c\nsku-9,/d\n")
    (tmp_path / "m.jsonl").write_text('{"image_id": 7, "uri": "/a"}\n\n{"image_id": "sku-9", "uri": "/b"}\n')
    for name, expected in (("m.csv", ["00123", "001", "1", "sku-9"]), ("m.jsonl", ["7", "sku-9"])):
        ds = read_manifest(str(tmp_path / name), "image_id", (), 1, STORAGE)
        assert check_unique_ids(ds, "lookbook") == len(expected)
        assert sorted(r["image_id"] for r in ds.take_all()) == sorted(expected)


def test_a_bad_jsonl_line_is_named_and_an_empty_manifest_flows(local_ray, tmp_path):
    """#13, item 8: one bad line failed the read with ArrowInvalid; an empty manifest crashed."""
    (tmp_path / "bad.jsonl").write_text('{"image_id": "a", "uri": "/a"}\n{"image_id": "b", uri\n')
    with pytest.raises(ManifestError, match=r"bad.jsonl: a line is not JSON .*'\{\"image_id\": \"b\", uri'"):
        check_unique_ids(read_manifest(str(tmp_path / "bad.jsonl"), "image_id", (), 1, STORAGE), "lookbook")
    (tmp_path / "empty.jsonl").write_text("")
    pq.write_table(
        pa.table({"image_id": pa.array([], pa.string()), "uri": pa.array([], pa.string())}), tmp_path / "e.parquet"
    )
    for name in ("empty.jsonl", "e.parquet"):
        assert check_unique_ids(read_manifest(str(tmp_path / name), "image_id", (), 4, STORAGE), "lookbook") == 0


def test_split_shards_gives_back_every_row_once_in_the_order_asked(local_ray, tmp_path):
    """The stage's input (#16: the split replaced a sort of the manifest): rows per work shard, read
    back in the order given; a rerun rewrites the same files; an earlier run's file is not read; a
    digest changes only for the shard whose rows changed."""
    ids = [f"img-{i}" for i in range(300)]
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_id": ids, "uri": [f"/x/{i}.jpg" for i in ids]}), path)
    manifest = read_manifest(str(path), "image_id", (), 4, STORAGE).repartition(3)  # parts from 3 batches a shard
    work = tmp_path / "work"
    (work / "shard=00001").mkdir(parents=True)
    pq.write_table(
        pa.table({"image_id": ["stale"], "uri": ["/x/stale.jpg"], SHARD: [1]}), work / "shard=00001/old.parquet"
    )
    inputs = split_shards(manifest, 4, str(work), STORAGE)
    assert split_shards(manifest, 4, str(work), STORAGE) == inputs
    shard = dict(zip(ids, shard_of(np.array(ids, dtype=object), 4).tolist()))
    assert inputs.rows == np.bincount(list(shard.values()), minlength=4).tolist()
    order = [3, 0, 1]
    ds = shard_rows(str(work), order, STORAGE)
    ds.context.execution_options.preserve_order = True
    rows = ds.take_all()
    assert [r[SHARD] for r in rows] == sorted((r[SHARD] for r in rows), key=order.index)
    assert sorted(r["image_id"] for r in rows) == sorted(i for i in ids if shard[i] in order)
    assert all(r["uri"] == f"/x/{r['image_id']}.jpg" and r[SHARD] == shard[r["image_id"]] for r in rows)
    edited = [f"/x/{i}.jpg" if i != "img-7" else "/x/edited.jpg" for i in ids]
    pq.write_table(pa.table({"image_id": ids, "uri": edited}), path)
    changed = split_shards(read_manifest(str(path), "image_id", (), 4, STORAGE), 4, str(work), STORAGE)
    assert [a != b for a, b in zip(changed.digests, inputs.digests)] == [k == shard["img-7"] for k in range(4)]


@pytest.mark.parametrize("rows_per_partition", [100_000, 30], ids=["one-task", "group-by"])
def test_duplicate_ids_are_named_by_both_counting_paths(local_ray, rows_per_partition):
    unique = [f"i{k:03d}" for k in range(60)]
    ds = lambda ids: ray.data.from_items([{"image_id": i} for i in ids]).repartition(4)  # noqa: E731
    assert check_unique_ids(ds(unique), "lookbook", rows_per_partition=rows_per_partition) == 60
    with pytest.raises(ManifestError, match="lookbook manifest has duplicate ids") as error:
        check_unique_ids(ds([*unique, "i042", "i007", "i042"]), "lookbook", rows_per_partition=rows_per_partition)
    assert "'i007' (x2)" in str(error.value) and "'i042' (x3)" in str(error.value)


@pytest.mark.parametrize("key", ["score", "score_plus_crop_margin"])
@pytest.mark.parametrize("bins", [1, 16, 4096])
def test_count_mode_tiers_exactly_by_key_then_id(local_ray, bins, key):
    rng = np.random.default_rng(bins)
    n = 3000
    scores = np.round(rng.uniform(-1, 1, n), 2).astype(np.float32)  # many exact ties
    scores[rng.choice(n, 100, replace=False)] = np.nan  # garments without a candidate
    crop_margins = np.round(rng.uniform(-2, 2, n), 1).astype(np.float32)
    crop_margins[rng.choice(n, 100, replace=False)] = np.nan  # no other garment claims the crop: counts 0
    ids = np.array([f"g{i:05d}" for i in rng.permutation(n)], dtype=object)
    table = pa.table({"garment_id": ids, "score": scores, "crop_margin": crop_margins})
    ds = ray.data.from_arrow(table).repartition(7)
    cfg = TierConfig(mode="count", key=key, counts={"high": 50, "mid": 400, "low": 5000}, histogram_bins=bins)
    cutoffs = tier_passes.count_cutoffs(ds, cfg, ScoringConfig(lambda_vlm=0.5, lambda_siglip=0.5))
    assert cutoffs[2] is None  # fewer scored garments than high + mid + low
    tiered = {}
    kwargs = {"cfg": cfg, "cutoffs": cutoffs}
    for batch in ds.map_batches(tier_passes.assign, fn_kwargs=kwargs, batch_format="pyarrow").iter_batches():
        tiered.update(zip(batch["garment_id"], batch["tier"]))
    keys = scores + (np.nan_to_num(crop_margins) if key != "score" else 0)
    scored = ~np.isnan(scores)
    order = [i for i in np.lexsort((ids, -np.where(scored, keys, -np.inf))) if scored[i]]
    expected = dict.fromkeys(ids[~scored], UNMATCHED)
    for rank, i in enumerate(order):
        expected[ids[i]] = TIERS[0] if rank < 50 else TIERS[1] if rank < 450 else TIERS[2]
    assert tiered == expected


RUNNING_BESIDE = threading.Event()  # set while a good call of PoisonStage runs in this process


class PoisonStage:
    """Test stage: logs the ids of the good rows of each call to `log`, then kills its own
    process (as a segfault or an OOM kill would) when one of them is in `poison`. With `beside_s`,
    other calls take that long and a poisoned call first waits up to as long for one of them to
    be running beside it, so that a crash in an actor running several calls hits another."""

    def __init__(self, poison: list[str], log: str, beside_s: float = 0.0):
        self.poison, self.log, self.beside_s = set(poison), log, beside_s

    def __call__(self, batch: dict) -> dict:
        n = len(batch["image_id"])
        good = batch.get(REASON, np.full(n, "")) == ""
        ids = batch["image_id"][good].tolist()
        with open(self.log, "a") as f:
            f.write(" ".join(ids) + "\n")
        if self.poison & set(ids):
            RUNNING_BESIDE.wait(self.beside_s)
            os._exit(1)
        RUNNING_BESIDE.set()
        time.sleep(self.beside_s)
        RUNNING_BESIDE.clear()
        return {**batch, "seen": np.full(n, os.getpid())}


@pytest.mark.parametrize(
    ("reason_columns", "calls"), [(True, 1), (False, 1), (True, 2)], ids=["stage-rows", "manifest-rows", "2-calls"]
)
def test_rows_that_kill_the_worker_are_quarantined_after_max_attempts(local_ray, tmp_path, reason_columns, calls):
    """Also for rows without `reason` / `error` (manifest rows into a stage that decodes them), and
    for an actor running two batches at once: a crash kills both, and the other batch's rows must
    not be blamed (they run alone next time, with no other batch beside them)."""
    ids = [f"r{i:02d}" for i in range(24)]
    poison, max_attempts = ["r05", "r06"], 2  # both in the first batch of 8
    blank = {REASON: "", ERROR: ""} if reason_columns else {}
    rows = [{"image_id": i, "uri": f"/x/{i}.jpg", **blank, SHARD: 0} for i in ids]
    pool = PoolConfig(batch_size=8, num_cpus=0.25, calls_per_actor=calls)
    log = tmp_path / "calls.log"
    schema = pa.schema([("image_id", pa.string()), ("uri", pa.string())])
    sink = SplitParquetSink(ShardTables(str(tmp_path), "out", lambda b: schema, "test", "image_id", "uri", STORAGE))
    with attempt_ledger() as ledger:
        guard = AttemptGuard(ledger, "test", max_attempts)
        kwargs = {"poison": poison, "log": str(log), "beside_s": 0.5 * (calls > 1)}
        ds = map_actors(ray.data.from_items(rows), PoisonStage, pool, guard, **kwargs)
        ds.write_datasink(sink)
    out = pq.read_table(tmp_path / "out", partitioning=None)["image_id"].to_pylist()
    quarantine = pq.read_table(tmp_path / "quarantine" / "test", partitioning=None).to_pylist()
    assert sorted(out) == sorted(set(ids) - set(poison))  # every other row exactly once
    assert sorted(q["id"] for q in quarantine) == poison
    assert {q["reason"] for q in quarantine} == {WORKER_CRASH}
    assert all(f"'{q['id']}'" in q["error"] and f"after {max_attempts} attempts" in q["error"] for q in quarantine)
    logged = [line.split() for line in log.read_text().splitlines()]  # the good rows of each call
    assert [sum(p in c for c in logged) for p in poison] == [max_attempts] * 2  # then never run again


def test_decode_tasks_read_at_most_rows_per_task_manifest_rows(local_ray, tmp_path):
    """A work shard's manifest rows arrive as one block; decoding splits them so that no task
    holds more than `decode.rows_per_task` decoded images."""
    ids = [f"l{i:03d}" for i in range(100)]
    pq.write_table(pa.table({"image_id": ids, "uri": [f"/nonexistent/{i}.jpg" for i in ids]}), tmp_path / "m.parquet")
    overrides = [f"lookbook={tmp_path / 'm.parquet'}", "garments=g.parquet", "output=o", "decode.rows_per_task=16"]
    cfg = load_config(overrides)
    manifest = read_manifest(cfg.lookbook, "image_id", (), 1, STORAGE).repartition(1).materialize()  # as sorted
    assert manifest.num_blocks() == 1
    guard = AttemptGuard(None, "lookbook", 1)  # decode tasks run outside the guard
    blocks = ray.get(decode(manifest, cfg, guard).materialize().to_arrow_refs())
    assert max(b.num_rows for b in blocks) <= 16 and len(blocks) >= 7
    assert sorted(i for b in blocks for i in b["image_id"].to_pylist()) == ids


class ThreadCount:
    """Reports the torch threads of the actor process that runs it."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        return {**batch, "threads": np.full(len(batch["image_id"]), torch.get_num_threads())}


@pytest.mark.parametrize(("threads", "expected"), [(2, 2), (None, 1)])
def test_pool_threads_set_the_actors_torch_threads(local_ray, threads, expected):
    rows = [{"image_id": f"r{i}", REASON: ""} for i in range(4)]
    pool = PoolConfig(batch_size=4, num_cpus=0.25, threads=threads)
    with attempt_ledger() as ledger:
        ds = map_actors(ray.data.from_items(rows), ThreadCount, pool, AttemptGuard(ledger, "test", 2))
        assert {r["threads"] for r in ds.take_all()} == {expected}  # None: Ray's default for 0.25 CPU


def test_the_attempt_ledger_is_killed_when_a_stage_raises(local_ray):
    """#13, item 11: `ray.kill(ledger)` was not in a `finally`."""
    with pytest.raises(RuntimeError, match="a stage failed"), attempt_ledger() as ledger:
        assert ray.get(ledger.counts.remote("s", ["a"])) == [0]
        raise RuntimeError("a stage failed")
    deadline = time.monotonic() + 60
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:  # ray.kill is asynchronous: a call sent just after it may still be served
            ray.get(ledger.counts.remote("s", ["a"]), timeout=60)
            time.sleep(0.1)
