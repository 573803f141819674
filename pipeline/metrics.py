"""Job metrics through `ray.util.metrics`: recorded in the worker that does the work, exported by
each node's metrics agent on its Prometheus endpoint (`ray.nodes()[i]["MetricsExportPort"]`) and
shown in the dashboard's metrics view.

Ray adds `ray_` to every name and Prometheus `_total` to counters: `images_read` here is
`ray_lookbook_miner_images_read_total` there, one series per worker process (sum them). Counters
count work done, retried tasks included; `summary.json` holds the exact per-run counts.

Tags: `stage` is the job stage (`lookbook`, `garments`, `tiering`: the quarantine table's `stage`),
`operator` the Ray Data operator (the function or actor class its progress bar shows), `step` one
of `core.steps.STEPS`.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Mapping, Sequence

import numpy as np
from ray.util.metrics import Counter, Histogram

from core.schemas import REASON

PREFIX = "lookbook_miner_"
IMAGES_READ = "images_read"
CROPS_DETECTED = "crops_detected"
CROPS_EMBEDDED = "crops_embedded"
GARMENTS_SCORED = "garments_scored"
OPERATOR_ROWS = "operator_rows"
ROWS_WRITTEN = "rows_written"
QUARANTINED = "quarantined"
PAIRS = "pairs"
STEP_SECONDS = "step_seconds"

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {  # name: (description, tag keys)
    IMAGES_READ: ("Images read (decoded or quarantined): distinct image ids an operator returned.", ("stage",)),
    CROPS_DETECTED: ("Crops cut from lookbook images (detector boxes or whole images), and scene rows.", ("stage",)),
    CROPS_EMBEDDED: ("Crops, scene rows and garment images given a SigLIP image embedding.", ("stage",)),
    GARMENTS_SCORED: ("Garments searched in the index and scored.", ("stage",)),
    OPERATOR_ROWS: ("Rows still in play that an operator returned.", ("stage", "operator")),
    ROWS_WRITTEN: ("Good rows written to an output table.", ("stage", "table")),
    QUARANTINED: ("Rows written to the quarantine table.", ("stage", "reason")),
    PAIRS: ("Tiered pairs written.", ("stage", "tier")),
}
STEP_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]  # seconds

_metrics: dict[str, Counter | Histogram] = {}  # created on first use in each process
_creating = threading.Lock()  # an actor with calls_per_actor > 1 records from several threads


def _metric(name: str) -> Counter | Histogram:
    with _creating:
        if name not in _metrics:
            if name == STEP_SECONDS:
                description = "Seconds a step of an operator took per batch."
                _metrics[name] = Histogram(PREFIX + name, description, STEP_BOUNDARIES, ("stage", "operator", "step"))
            else:
                description, tags = COUNTERS[name]
                _metrics[name] = Counter(PREFIX + name, description, tags)
        return _metrics[name]


def count(name: str, value: int, **tags: str) -> None:
    """Add `value` (>= 0; 0 records nothing) to counter `name` with its tags."""
    if value > 0:
        _metric(name).inc(value, tags=tags)


def count_each(name: str, tag: str, values: np.ndarray, **tags: str) -> None:
    """Add one to counter `name` per item of `values`, tagged `tag=<item>` (e.g. reasons, tiers)."""
    for value, n in Tally(values.tolist()).items():
        count(name, n, **{tag: str(value)}, **tags)


def record_steps(stage: str, operator: str, seconds: Mapping[str, float]) -> None:
    """One observation per step of a batch: the seconds `operator` spent in it."""
    for step, value in seconds.items():
        _metric(STEP_SECONDS).observe(value, tags={"stage": stage, "operator": operator, "step": step})


def record_batch(stage: str, operator: str, batch: dict[str, np.ndarray], counters: Sequence[str]) -> None:
    """Count one batch an operator returned: its rows in play (empty `reason`; all rows without that
    column) under OPERATOR_ROWS and each of `counters`, except IMAGES_READ, which counts the distinct
    `image_id`s of all its rows, quarantined ones included (every image read leaves at least one row)."""
    rows = len(next(iter(batch.values()), ()))
    in_play = int((np.asarray(batch[REASON]) == "").sum()) if REASON in batch else rows
    count(OPERATOR_ROWS, in_play, stage=stage, operator=operator)
    for counter in counters:
        value = len(np.unique(batch["image_id"].astype(str))) if counter == IMAGES_READ else in_play
        count(counter, value, stage=stage)
