"""Resume after preemption: committed work shards are skipped, partial ones redone, and the pairs
equal those of an uninterrupted run; a changed config is refused."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import schemas
from core.config import load_config
from jobs import mine
from pipeline import commits

from .conftest import REPO

pytestmark = pytest.mark.ray
SHARDS = 4


def pairs(output) -> list[dict]:
    """The run's pairs by garment_id; NaN (e.g. `confidence` of an uncalibrated run) as None, so
    that equal pairs compare equal."""
    table = pq.read_table(output / schemas.PAIRS_DIR, partitioning=None)
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in table.to_pylist()]
    return sorted(rows, key=lambda row: row["garment_id"])


def assert_same_pairs(got: list[dict], expected: list[dict]) -> None:
    """Same garments, matches and tiers; scores equal up to float noise from different batching."""
    matches = ("garment_id", "image_id", "crop_id", "tier")
    assert [[r[k] for k in matches] for r in got] == [[r[k] for k in matches] for r in expected]
    for column in ("s_vlm", "s_siglip", "score"):
        np.testing.assert_allclose([r[column] for r in got], [r[column] for r in expected], atol=1e-5)


@pytest.fixture(scope="module")
def args(sample, model_overrides):
    return [
        *model_overrides,
        f"lookbook={sample.lookbook_path}",
        f"garments={sample.garments_path}",
        f"work.shards={SHARDS}",
        # one actor reads, detects, embeds and describes in row order, so the first shards are
        # committed while the last one is still running (separate pools start one after another
        # and, on these tiny models, then finish every shard within milliseconds); 8 images a call,
        # not the default 16: Ray Data bundles blocks into a call until it holds that many rows, and
        # at 16 this sample's first call held shards 0 to 2, whose commits then reached the driver
        # with the last shard's, all within 30 ms
        "fusion.lookbook=true",
        "fusion.decode=true",
        "fusion.pool.batch_size=8",
    ]


@pytest.fixture(scope="module")
def clean_run(args, local_ray, tmp_path_factory):
    """The reference run: its output folder, summary and pairs. The tests below run on its folder in
    order and leave it with the same pairs."""
    output = tmp_path_factory.mktemp("clean") / "out"
    summary = mine.main([*args, f"output={output}"])
    assert summary["work_shards"] == {"total": SHARDS, "lookbook_processed": SHARDS, "garments_processed": SHARDS}
    assert not (output / commits.WORK).exists()  # the stages' split inputs are gone once they end
    return output, summary, pairs(output)


def test_rerun_skips_everything_and_changes_nothing(clean_run, args):
    output, first, before = clean_run
    again = mine.main([*args, f"output={output}"])
    assert again["work_shards"] == {"total": SHARDS, "lookbook_processed": 0, "garments_processed": 0}
    assert again["counts"] == first["counts"] and again["tiers"] == first["tiers"]
    assert pairs(output) == before


def test_lost_shards_are_redone_and_stale_files_dropped(clean_run, args):
    output, first, before = clean_run
    storage = load_config([*args, f"output={output}"]).storage
    lost = output / commits.marker("", "lookbook", 2).lstrip("/")
    files_before = json.loads(lost.read_text())["files"]
    lost.unlink()  # as if preempted before commit
    (output / commits.marker("", "garments", 1).lstrip("/")).unlink()
    stale = output / schemas.CROPS_DIR / "shard=00002" / "part-999999.parquet"
    stale.write_bytes(b"half-written")
    again = mine.main([*args, f"output={output}"])
    # files are named by their rows' ids: when the redone lookbook shard's blocks split as before, it
    # rewrote the same files and the index is kept; otherwise the index changed and every garment
    # is scored again
    same_files = json.loads(lost.read_text())["files"] == files_before
    garments = 1 if same_files else SHARDS
    assert again["work_shards"] == {"total": SHARDS, "lookbook_processed": 1, "garments_processed": garments}
    assert not stale.exists()
    assert again["counts"] == first["counts"]
    assert_same_pairs(pairs(output), before)  # the redone shards ran in other batches than in the first run
    assert set(commits.committed(str(output), "lookbook", SHARDS, storage)) == set(range(SHARDS))


def test_changed_config_is_refused(clean_run, args):
    """The job refuses before any work (what `force` does instead: tests/test_commits.py)."""
    output = clean_run[0]
    before = pairs(output)
    with pytest.raises(commits.ConfigChangedError, match="config hash"):
        mine.main([*args, f"output={output}", "scoring.top_k=3"])
    assert pairs(output) == before


def test_killed_driver_resumes_then_rows_added_to_the_manifest_are_mined(args, sample, clean_run, tmp_path):
    """A real driver process (with its own local Ray) is killed after its first commit; the rerun
    processes only the shards that were not committed. The killed run's last shard holds extra
    rows, so that it is still running when the earlier shards are committed (a stage commits
    each shard as it finishes, in shard order). Then the extra rows are removed and rows are
    appended to the manifest (#13, item 6: they were skipped, their shards being committed, while
    summary.json looked complete): the next run mines the shards that changed, keeps the others,
    scores every garment again against the new index, and ends with the reference run's pairs."""
    table = pq.read_table(sample.lookbook_path)
    manifest, output = tmp_path / "lookbook.parquet", tmp_path / "out"
    last = SHARDS - 1
    ids = np.array([f"extra{i:04d}" for i in range(400)], dtype=object)
    extra_ids = ids[commits.shard_of(ids, SHARDS) == last][:60].tolist()
    uris = table["uri"].to_pylist()
    extra = pa.table({"image_id": extra_ids, "uri": [uris[i % len(uris)] for i in range(len(extra_ids))]})
    pq.write_table(pa.concat_tables([table.slice(0, table.num_rows - 3), extra.cast(table.schema)]), manifest)
    run = [*args, f"lookbook={manifest}", f"output={output}"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "jobs.mine", *run],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = output / commits.COMMITS / "lookbook"
    written = lambda: list(markers.glob("shard-*.json")) if markers.exists() else []  # noqa: E731 (not the temporary files)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not written():
            assert driver.poll() is None, "the driver ended before committing a shard"
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        driver.wait()
    committed_before = len(written())
    assert 1 <= committed_before < SHARDS
    resumed = mine.main(run)
    assert resumed["work_shards"]["lookbook_processed"] == SHARDS - committed_before

    pq.write_table(table, manifest)  # the extra rows removed, three rows appended
    again = mine.main(run)
    added = table["image_id"].to_pylist()[-3:]
    changed = set(commits.shard_of(np.array(added, dtype=object), SHARDS).tolist()) | {last}
    assert again["work_shards"] == {"total": SHARDS, "lookbook_processed": len(changed), "garments_processed": SHARDS}
    assert again["counts"]["lookbook_images"] == table.num_rows
    crops = pq.read_table(output / schemas.CROPS_DIR, partitioning=None)
    quarantined = set(pq.read_table(output / schemas.QUARANTINE_DIR / "lookbook", partitioning=None)["id"].to_pylist())
    assert set(crops["image_id"].to_pylist()) | quarantined == set(table["image_id"].to_pylist())
    assert again["counts"]["index_rows"] == again["counts"]["crops"] == crops.num_rows
    assert_same_pairs(pairs(output), clean_run[2])
