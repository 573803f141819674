"""The job's metrics on a real Prometheus endpoint: a local `ray start` cluster with a known metrics
export port, the mining job submitted to it as a separate driver, then the endpoint scraped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict

import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from miner import metrics

from .conftest import REPO
from .ray_cluster import LocalCluster

pytestmark = pytest.mark.ray
EXPORTED = "ray_" + metrics.PREFIX  # Ray prefixes every application metric with `ray_`


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """Every lookbook-miner sample at `url`: exported name -> {sorted job tags: value summed over
    the per-worker series}."""
    found: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(EXPORTED):
                tags = tuple(
                    sorted(
                        (k, v)
                        for k, v in sample.labels.items()
                        if k in ("stage", "step", "reason", "tier", "table", "le")
                    )
                )
                found[sample.name][tags] += sample.value
    return found


def total(found: dict[str, dict[tuple, float]], name: str, **tags: str) -> float:
    """Sum of `name` over the series whose tags include `tags`."""
    return sum(v for key, v in found.get(name, {}).items() if set(tags.items()) <= set(key))


@pytest.fixture(scope="module")
def cluster():
    """A one-node cluster of this module's own: the counters it exports are this job's alone."""
    cluster = LocalCluster(head_cpus=2)
    yield cluster
    cluster.stop()
    assert not cluster.leftover_processes()


@pytest.fixture(scope="module")
def job(cluster, sample, model_overrides, tmp_path_factory):
    """The mining job as its own driver process on the cluster (as `ray job submit` runs it)."""
    output = tmp_path_factory.mktemp("scrape") / "out"
    args = [
        *model_overrides,
        f"lookbook={sample.lookbook_path}",
        f"garments={sample.garments_path}",
        f"output={output}",
        f"ray_address={cluster.gcs_address}",
        "progress_interval_s=1",
    ]
    driver = subprocess.run(
        [sys.executable, "-m", "jobs.mine", *args],
        cwd=REPO,
        env=cluster.process_env(),
        capture_output=True,
        text=True,
        timeout=480,  # a job takes 2 to 4 minutes on 2 cores
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    return {"summary": json.loads((output / "summary.json").read_text()), "log": driver.stdout}


@pytest.fixture(scope="module")
def scraped(cluster, job):
    """The endpoint once the last write task's counts have been exported (retried: the agent
    receives metrics periodically)."""
    expected = job["summary"]["counts"]["garments_scored"]
    deadline = time.monotonic() + 30
    while True:
        found = scrape(cluster.nodes[0].metrics_url)
        if total(found, EXPORTED + "pairs_total") == expected or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_stage_counters_match_the_summary(scraped, job, sample):
    summary, name = job["summary"], lambda metric: f"{EXPORTED}{metric}_total"
    counts = summary["counts"]
    assert total(scraped, name(metrics.IMAGES_READ), stage="lookbook") == pq.read_table(sample.lookbook_path).num_rows
    assert total(scraped, name(metrics.IMAGES_READ), stage="garments") == counts["garments"]
    assert total(scraped, name(metrics.CROPS_DETECTED), stage="lookbook") == counts["crops"] > 0
    assert total(scraped, name(metrics.CROPS_EMBEDDED), stage="lookbook") == counts["crops"]
    assert total(scraped, name(metrics.CROPS_EMBEDDED), stage="garments") == counts["garments_scored"]
    assert total(scraped, name(metrics.GARMENTS_SCORED), stage="garments") == counts["garments_scored"] > 0
    assert total(scraped, name(metrics.ROWS_WRITTEN), stage="lookbook", table="crops") == counts["crops"]
    for stage, reasons in summary["quarantine"].items():
        for reason, n in reasons.items():
            assert total(scraped, name(metrics.QUARANTINED), stage=stage, reason=reason) == n
    assert summary["quarantine"]["lookbook"]  # the sample's zero-byte and truncated files
    for tier, n in summary["tiers"].items():
        assert total(scraped, name(metrics.PAIRS), tier=tier) == n


def test_every_step_reports_rows_and_batch_seconds(scraped):
    steps = {
        "lookbook": ("decode_images", "CropDetector", "CropEmbedder", "CropDescriber"),
        "garments": ("decode_images", "whole_image_crops", "CropEmbedder", "CropDescriber", "GarmentScorer"),
    }
    for stage, names in steps.items():
        for step in names:
            assert total(scraped, f"{EXPORTED}{metrics.STEP_ROWS}_total", stage=stage, step=step) > 0, step
            assert total(scraped, f"{EXPORTED}{metrics.BATCH_SECONDS}_count", stage=stage, step=step) > 0, step


def test_driver_log_has_progress_lines(job):
    lines = [line for line in job["log"].splitlines() if line.startswith("[lookbook-miner] progress ")]
    assert any(line.startswith("[lookbook-miner] progress lookbook: ") for line in lines), job["log"][-2000:]
