"""Chaos on a real two-node Ray cluster while a submitted job runs: an embedding actor is killed,
a worker node is killed (a spot preemption) and another one joins. Each job must still succeed
with every input row in exactly one of output and quarantine."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from jobs import mine
from jobs.submit import TERMINAL, submission_id
from miner import commits
from miner.config import StorageConfig

from .test_submit import submit

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]  # a job takes about 4 minutes here, more under load
SHARDS = 4
START_TIMEOUT = 300  # seconds until the job's models run (its first stage, validate, took 130 s under load)
JOB_TIMEOUT = 480  # seconds until it ends; both under the timeout: a slow job fails here, with its log


def wait_for(what: str, found: Callable[[], object], timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stage_processes(processes: list[psutil.Process], stage: str) -> list[psutil.Process]:
    """The Ray Data workers running `stage` (their process title names it) among `processes`."""
    found = []
    for proc in processes:
        try:
            if f"MapBatches({stage})" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def ids(path, column: str) -> list[str]:
    return pq.read_table(path, columns=[column], partitioning=None)[column].to_pylist()


def assert_every_row_once(output, sample) -> None:
    """Lookbook and garment ids: each in exactly one of output and quarantine, no duplicates."""
    crops = pq.read_table(output / mine.CROPS, columns=["image_id", "crop_id"], partitioning=None)
    assert len(set(crops["crop_id"].to_pylist())) == crops.num_rows
    garments = ids(output / mine.PAIRS, "garment_id")
    assert len(set(garments)) == len(garments)
    for manifest, id_column, kept, stage in (
        (sample.lookbook_path, "image_id", set(crops["image_id"].to_pylist()), "lookbook"),
        (sample.garments_path, "garment_id", set(garments), "garments"),
    ):
        quarantine = output / mine.QUARANTINE / stage
        rejected = ids(quarantine, "id") if quarantine.exists() else []
        assert len(set(rejected)) == len(rejected) and not kept & set(rejected)
        assert sorted([*kept, *rejected]) == sorted(ids(manifest, id_column))


@pytest.fixture
def job(ray_cluster, sample, model_overrides, tmp_path):
    """Submits the mining job (4 work shards, one execution per stage) without waiting; yields
    (client, job id, output folder). A job still running at teardown (a failed test) is stopped,
    so that it does not load the cluster and the machine for the tests after it."""
    output = tmp_path / "out"
    args = [*model_overrides, f"lookbook={sample.lookbook_path}", f"garments={sample.garments_path}"]
    args += [f"output={output}", f"work.shards={SHARDS}"]
    done = submit(ray_cluster, *args)
    assert done.returncode == 0, done.stderr[-4000:]
    client, job_id = ray_cluster.jobs_client(), submission_id(args)
    yield client, job_id, output
    if client.get_job_status(job_id) not in TERMINAL:
        client.stop_job(job_id)
        wait_for("the stopped job to end", lambda: client.get_job_status(job_id) in TERMINAL, 60)


def finish(client: JobSubmissionClient, job_id: str) -> None:
    status = wait_for("the job to end", lambda: (s := client.get_job_status(job_id)) in TERMINAL and s, JOB_TIMEOUT)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-6000:]


def committed(output) -> int:
    """Lookbook work shards committed so far."""
    return len(commits.committed(str(output), "lookbook", SHARDS, StorageConfig()))


def test_killed_embedding_actor_is_replaced(ray_cluster, job, sample):
    client, job_id, output = job
    processes = lambda: [p for node in ray_cluster.nodes for p in node.processes()]  # noqa: E731
    victim = wait_for("a busy embedding actor", lambda: [
        p for p in stage_processes(processes(), "CropEmbedder") if p.cpu_times().user > 1.0
    ])[0]  # fmt: skip
    assert committed(output) < SHARDS  # the lookbook stage is still running
    victim.kill()
    finish(client, job_id)
    assert_every_row_once(output, sample)


def test_preempted_worker_node_is_survived(ray_cluster, job, sample):
    client, job_id, output = job
    worker = ray_cluster.nodes[-1]
    wait_for("job work on the worker node", lambda: stage_processes(worker.processes(), "CropEmbedder"))
    assert committed(output) < SHARDS
    worker.kill()
    ray_cluster.add_worker(num_cpus=2, wait=False)
    finish(client, job_id)
    assert_every_row_once(output, sample)
