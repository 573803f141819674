"""`python -m jobs.submit` against a real two-node Ray cluster (`ray start --head` plus a worker):
the job runs through the Jobs API, its log and outputs are checked, and a double submit is harmless."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from jobs import mine
from jobs.submit import submission_id

from .conftest import REPO

pytestmark = pytest.mark.ray


def submit(cluster, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "jobs.submit", f"--address={cluster.dashboard_url}", *args]
    return subprocess.run(command, cwd=REPO, env=cluster.process_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture
def client(ray_cluster) -> JobSubmissionClient:
    return ray_cluster.jobs_client()


def test_submitted_job_succeeds_once_per_config(ray_cluster, client, sample, model_overrides, tmp_path):
    output = tmp_path / "out"
    args = [*model_overrides, f"lookbook={sample.lookbook_path}", f"garments={sample.garments_path}"]
    args.append(f"output={output}")
    job_id = submission_id(args)

    first = submit(ray_cluster, "--follow", *args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert f"submitted {job_id}" in first.stdout and f"{job_id} SUCCEEDED" in first.stdout

    log = client.get_job_logs(job_id)
    assert "[lookbook-miner] stage tiering done" in log and f"outputs in {output}" in log
    summary = json.loads((output / "summary.json").read_text())
    assert summary["counts"]["lookbook_images"] == pq.read_metadata(sample.lookbook_path).num_rows
    assert summary["counts"]["garments"] == summary["counts"]["garments_scored"] > 0
    pairs = pq.read_table(output / mine.PAIRS, partitioning=None)
    assert pairs.num_rows == summary["counts"]["garments_scored"]

    again = submit(ray_cluster, *args)
    assert again.returncode == 0 and f"{job_id} is already SUCCEEDED: not submitted again" in again.stdout
    assert [job.submission_id for job in client.list_jobs()].count(job_id) == 1


def test_failed_job_is_resubmitted_only_when_asked(ray_cluster, client, model_overrides, tmp_path):
    args = [*model_overrides, f"lookbook={tmp_path / 'missing.parquet'}", "garments=x.parquet", f"output={tmp_path}"]
    job_id = submission_id(args)
    first = submit(ray_cluster, "--follow", *args)
    assert first.returncode == 1 and client.get_job_status(job_id) == JobStatus.FAILED
    refused = submit(ray_cluster, *args)
    assert refused.returncode == 1 and "rerun with --resubmit" in refused.stderr
    replaced = submit(ray_cluster, "--resubmit", *args)
    assert replaced.returncode == 0 and f"submitted {job_id}" in replaced.stdout
    assert [job.submission_id for job in client.list_jobs()].count(job_id) == 1
