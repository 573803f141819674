"""The job on a real two-node Ray cluster (`ray start --head` with no CPU, as in cluster.yaml, plus
one 2-CPU worker node), through the Jobs API with token auth, in the order the cluster allows:

1. `python -m jobs.submit --follow`: the job succeeds, its log and outputs are checked, and a
   second submit of the same configuration is harmless;
2. the metrics of that job, scraped from every node's Prometheus endpoint, match its summary;
3. a failed job is resubmitted only when asked;
4. chaos while a second job runs: an embedding actor is killed, then the worker node (a spot
   preemption) while another joins; the job still succeeds with every input row in exactly one
   of output and quarantine.

One cluster for the module, torn down when it ends: an idle cluster's services (dashboard, log
monitors) would take a share of the 2 cores for the rest of the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable

import psutil
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ray.job_submission import JobStatus, JobSubmissionClient

from core import schemas
from core.storage import StorageConfig
from jobs.submit import TERMINAL, submission_id
from pipeline import commits, metrics

from .conftest import REPO
from .ray_cluster import LocalCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
SHARDS = 4
START_TIMEOUT = 300  # seconds until a job's models run (its first stage, validate, took 130 s under load)
JOB_TIMEOUT = 480  # seconds until it ends; both under the test timeout: a slow job fails here, with its log
EXPORTED = "ray_" + metrics.PREFIX  # Ray prefixes every application metric with `ray_`


@pytest.fixture(scope="module")
def cluster():
    cluster = LocalCluster(head_cpus=0)
    try:
        cluster.add_worker(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.leftover_processes()


@pytest.fixture(scope="module")
def client(cluster) -> JobSubmissionClient:
    return cluster.jobs_client()


def submit(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jobs.submit", f"--address={cluster.dashboard_url}", *args]
    return subprocess.run(command, cwd=REPO, env=cluster.process_env(), capture_output=True, text=True, timeout=600)


def job_args(sample, model_overrides, output, *extra: str) -> list[str]:
    inputs = [f"lookbook={sample.lookbook_path}", f"garments={sample.garments_path}", f"output={output}"]
    return [*model_overrides, *inputs, f"work.shards={SHARDS}", *extra]


def wait_for(what: str, found: Callable[[], object], timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def submitted(cluster, sample, model_overrides, tmp_path_factory):
    """The job submitted with `--follow` (progress lines every second): its output folder, id and
    what `jobs.submit` printed."""
    output = tmp_path_factory.mktemp("submitted") / "out"
    args = job_args(sample, model_overrides, output, "progress_interval_s=1")
    done = submit(cluster, "--follow", *args)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return {"output": output, "args": args, "job_id": submission_id(args), "stdout": done.stdout}


def test_submitted_job_succeeds_once_per_config(cluster, client, submitted, sample):
    job_id, output = submitted["job_id"], submitted["output"]
    assert f"submitted {job_id}" in submitted["stdout"] and f"{job_id} SUCCEEDED" in submitted["stdout"]
    log = client.get_job_logs(job_id)
    assert "[lookbook-miner] stage tiering done" in log and f"outputs in {output}" in log
    summary = json.loads((output / "summary.json").read_text())
    assert summary["counts"]["lookbook_images"] == pq.read_metadata(sample.lookbook_path).num_rows
    assert summary["counts"]["garments"] == summary["counts"]["garments_scored"] > 0
    pairs = pq.read_table(output / schemas.PAIRS_DIR, partitioning=None)
    assert pairs.num_rows == summary["counts"]["garments_scored"]
    again = submit(cluster, *submitted["args"])
    assert again.returncode == 0 and f"{job_id} is already SUCCEEDED: not submitted again" in again.stdout
    assert [job.submission_id for job in client.list_jobs()].count(job_id) == 1


def test_job_log_has_progress_lines(client, submitted):
    log = client.get_job_logs(submitted["job_id"])
    assert "[lookbook-miner] progress lookbook: " in log, log[-2000:]


def scrape(urls: list[str]) -> dict[str, dict[tuple, float]]:
    """Every lookbook-miner sample at `urls`: exported name -> {sorted job tags: value summed over
    the per-worker series of every node}."""
    found: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
    for url in urls:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(EXPORTED):
                    keys = ("stage", "operator", "step", "reason", "tier", "table", "le")
                    tags = tuple(sorted((k, v) for k, v in sample.labels.items() if k in keys))
                    found[sample.name][tags] += sample.value
    return found


def total(found: dict[str, dict[tuple, float]], name: str, **tags: str) -> float:
    """Sum of `name` over the series whose tags include `tags`."""
    return sum(v for key, v in found.get(name, {}).items() if set(tags.items()) <= set(key))


@pytest.fixture(scope="module")
def scraped(cluster, submitted):
    """The submitted job's metrics, once its last write task's counts are exported (the agents
    receive metrics periodically)."""
    expected = json.loads((submitted["output"] / "summary.json").read_text())["counts"]["garments_scored"]
    urls = [node.metrics_url for node in cluster.nodes]
    deadline = time.monotonic() + 30
    while True:
        found = scrape(urls)
        if total(found, EXPORTED + "pairs_total") == expected or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_stage_counters_match_the_summary(scraped, submitted, sample):
    summary = json.loads((submitted["output"] / "summary.json").read_text())
    counts, name = summary["counts"], lambda metric: f"{EXPORTED}{metric}_total"
    assert total(scraped, name(metrics.IMAGES_READ), stage="lookbook") == pq.read_table(sample.lookbook_path).num_rows
    assert total(scraped, name(metrics.IMAGES_READ), stage="garments") == counts["garments"]
    crops_and_scenes = counts["crops"] + counts["scenes"]  # the detector passes each image on as a scene row too
    assert total(scraped, name(metrics.CROPS_DETECTED), stage="lookbook") == crops_and_scenes > counts["crops"] > 0
    assert total(scraped, name(metrics.CROPS_EMBEDDED), stage="lookbook") == crops_and_scenes
    assert total(scraped, name(metrics.CROPS_EMBEDDED), stage="garments") == counts["garments_scored"]
    assert total(scraped, name(metrics.GARMENTS_SCORED), stage="garments") == counts["garments_scored"] > 0
    assert total(scraped, name(metrics.ROWS_WRITTEN), stage="lookbook", table="crops") == counts["crops"]
    assert total(scraped, name(metrics.ROWS_WRITTEN), stage="lookbook", table="scenes") == counts["scenes"]
    for stage, reasons in summary["quarantine"].items():
        for reason, n in reasons.items():
            assert total(scraped, name(metrics.QUARANTINED), stage=stage, reason=reason) == n
    assert summary["quarantine"]["lookbook"]  # the sample's zero-byte and truncated files
    for tier, n in summary["tiers"].items():
        assert total(scraped, name(metrics.PAIRS), tier=tier) == n


def test_every_operator_reports_rows_and_its_steps_seconds(scraped):
    steps = {  # job stage: {operator: the steps it times}
        "lookbook": {
            "decode_images": {"decode"},
            "CropDetector": {"preprocess", "forward", "postprocess", "ledger"},
            "CropEmbedder": {"preprocess", "forward", "postprocess", "ledger"},
            "CropDescriber": {"preprocess", "forward", "postprocess", "ledger"},
            "SplitParquetSink": {"write"},
        },
        "garments": {
            "decode_images": {"decode"},
            "whole_image_crops": {"preprocess"},
            "CropEmbedder": {"preprocess", "forward", "postprocess", "ledger"},
            "IndexShard000": {"forward", "postprocess", "ledger"},  # one pool per index shard
            "IndexShard001": {"forward", "postprocess", "ledger"},
            "best_match": {"postprocess"},
        },
    }
    seconds = f"{EXPORTED}{metrics.STEP_SECONDS}_count"
    for stage, operators in steps.items():
        for operator, timed in operators.items():
            if operator != "SplitParquetSink":
                assert total(scraped, f"{EXPORTED}{metrics.OPERATOR_ROWS}_total", stage=stage, operator=operator) > 0
            for step in timed:
                assert total(scraped, seconds, stage=stage, operator=operator, step=step) > 0, (operator, step)


def test_failed_job_is_resubmitted_only_when_asked(cluster, client, model_overrides, tmp_path):
    args = [*model_overrides, f"lookbook={tmp_path / 'missing.parquet'}", "garments=x.parquet", f"output={tmp_path}"]
    job_id = submission_id(args)
    first = submit(cluster, "--follow", *args)
    assert first.returncode == 1 and client.get_job_status(job_id) == JobStatus.FAILED
    refused = submit(cluster, *args)
    assert refused.returncode == 1 and "rerun with --resubmit" in refused.stderr
    replaced = submit(cluster, "--resubmit", *args)
    assert replaced.returncode == 0 and f"submitted {job_id}" in replaced.stdout
    assert [job.submission_id for job in client.list_jobs()].count(job_id) == 1


def stage_processes(processes: list[psutil.Process], operator: str) -> list[psutil.Process]:
    """The Ray Data workers running `operator` (their process title names it) among `processes`."""
    found = []
    for proc in processes:
        try:
            if f"MapBatches({operator})" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def initialising(proc: psutil.Process) -> bool:
    """Whether the actor process is still in its constructor (Ray titles it `....__init__` meanwhile)."""
    try:
        return ".__init__" in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True


def ids(path, column: str) -> list[str]:
    return pq.read_table(path, columns=[column], partitioning=None)[column].to_pylist()


def assert_every_row_once(output, sample) -> None:
    """Lookbook and garment ids: each in exactly one of output and quarantine, no duplicates."""
    crops = pq.read_table(output / schemas.CROPS_DIR, columns=["image_id", "crop_id"], partitioning=None)
    assert len(set(crops["crop_id"].to_pylist())) == crops.num_rows
    garments = ids(output / schemas.PAIRS_DIR, "garment_id")
    assert len(set(garments)) == len(garments)
    for manifest, id_column, kept, stage in (
        (sample.lookbook_path, "image_id", set(crops["image_id"].to_pylist()), schemas.LOOKBOOK),
        (sample.garments_path, "garment_id", set(garments), schemas.GARMENTS),
    ):
        quarantine = output / schemas.QUARANTINE_DIR / stage
        rejected = ids(quarantine, "id") if quarantine.exists() else []
        assert len(set(rejected)) == len(rejected) and not kept & set(rejected)
        assert sorted([*kept, *rejected]) == sorted(ids(manifest, id_column))


def committed(output) -> int:
    """Lookbook work shards committed so far."""
    return len(commits.committed(str(output), schemas.LOOKBOOK, SHARDS, StorageConfig()))


@pytest.fixture
def running_job(cluster, client, sample, model_overrides, tmp_path):
    """Submits the job (one execution per stage) without waiting; yields (job id, output folder).
    A job still running at teardown (a failed test) is stopped, so that it does not load the
    machine for the tests after it."""
    output = tmp_path / "out"
    args = job_args(sample, model_overrides, output)
    done = submit(cluster, *args)
    assert done.returncode == 0, done.stderr[-4000:]
    job_id = submission_id(args)
    yield job_id, output
    if client.get_job_status(job_id) not in TERMINAL:
        client.stop_job(job_id)
        wait_for("the stopped job to end", lambda: client.get_job_status(job_id) in TERMINAL, 60)


def test_job_survives_a_killed_actor_then_a_preempted_node(cluster, client, running_job, sample):
    """Runs last: it replaces the worker node. The actor is killed once its model is loaded (its
    process title no longer names `__init__`) while lookbook shards remain uncommitted; the node is
    killed while the job still runs, in whichever stage that is."""
    job_id, output = running_job
    worker = cluster.nodes[-1]
    ready = lambda: [p for p in stage_processes(worker.processes(), "CropEmbedder") if not initialising(p)]  # noqa: E731
    ready_mid_stage = lambda: committed(output) < SHARDS and ready()  # noqa: E731
    victim = wait_for("a ready embedding actor, lookbook shards left", ready_mid_stage)[0]
    victim.kill()
    replaced = lambda: [p for p in ready() if p.pid != victim.pid]  # noqa: E731
    wait_for("its replacement, or the lookbook stage's end", lambda: replaced() or committed(output) == SHARDS)
    assert client.get_job_status(job_id) not in TERMINAL
    worker.kill()
    cluster.add_worker(num_cpus=2, wait=False)
    status = wait_for("the job to end", lambda: (s := client.get_job_status(job_id)) in TERMINAL and s, JOB_TIMEOUT)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-6000:]
    assert_every_row_once(output, sample)
