"""Job metrics through `ray.util.metrics`: recorded in the worker that does the work, exported by
each node's metrics agent on its Prometheus endpoint (`ray.nodes()[i]["MetricsExportPort"]`) and
shown in the dashboard's metrics view.

Ray adds `ray_` to every name and Prometheus `_total` to counters: `images_read` here is
`ray_lookbook_miner_images_read_total` there, one series per worker process (sum them). Counters
count work done, retried tasks included; `summary.json` holds the exact per-run counts.

Tags: `stage` is the job stage (`lookbook`, `garments`, `tiering`: the quarantine table's `stage`),
`step` the Ray Data step (the function or class name its progress bar shows).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable

import numpy as np
from ray.util.metrics import Counter, Histogram

from miner.schemas import REASON

PREFIX = "lookbook_miner_"
IMAGES_READ = "images_read"
CROPS_DETECTED = "crops_detected"
CROPS_EMBEDDED = "crops_embedded"
GARMENTS_SCORED = "garments_scored"
STEP_ROWS = "step_rows"
ROWS_WRITTEN = "rows_written"
QUARANTINED = "quarantined"
PAIRS = "pairs"
BATCH_SECONDS = "batch_seconds"

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {  # name: (description, tag keys)
    IMAGES_READ: ("Images the decoder read (decoded or quarantined).", ("stage",)),
    CROPS_DETECTED: ("Crops cut from lookbook images (detector boxes or whole images).", ("stage",)),
    CROPS_EMBEDDED: ("Crops and garment images given a SigLIP image embedding.", ("stage",)),
    GARMENTS_SCORED: ("Garments searched in the index and scored.", ("stage",)),
    STEP_ROWS: ("Rows still in play that a step returned.", ("stage", "step")),
    ROWS_WRITTEN: ("Good rows written to an output table.", ("stage", "table")),
    QUARANTINED: ("Rows written to the quarantine table.", ("stage", "reason")),
    PAIRS: ("Tiered pairs written.", ("stage", "tier")),
}
BATCH_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]  # seconds

# What each metered step's in-play output rows count as, beyond STEP_ROWS. The decoder emits one row
# per input image, quarantined or not, so all its rows count as read.
STEP_COUNTERS = {
    "decode_images": (IMAGES_READ,),
    "CropDetector": (CROPS_DETECTED,),
    "CropEmbedder": (CROPS_EMBEDDED,),
    "FusedLookbookModels": (CROPS_DETECTED, CROPS_EMBEDDED),
    "GarmentScorer": (GARMENTS_SCORED,),
}
COUNT_ALL_ROWS = {"decode_images"}

_metrics: dict[str, Counter | Histogram] = {}  # created on first use in each process


def _metric(name: str) -> Counter | Histogram:
    if name not in _metrics:
        if name == BATCH_SECONDS:
            description = "Seconds a step took per batch."
            _metrics[name] = Histogram(PREFIX + name, description, BATCH_BOUNDARIES, ("stage", "step"))
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


def record_batch(stage: str, step: str, batch: dict[str, np.ndarray], seconds: float) -> None:
    """Record one batch a step returned: its in-play rows (empty `reason`; all rows without that
    column), the step's own counters (STEP_COUNTERS) and the seconds it took."""
    rows = len(next(iter(batch.values()), ()))
    in_play = int((np.asarray(batch[REASON]) == "").sum()) if REASON in batch else rows
    count(STEP_ROWS, in_play, stage=stage, step=step)
    for counter in STEP_COUNTERS.get(step, ()):
        count(counter, rows if step in COUNT_ALL_ROWS else in_play, stage=stage)
    _metric(BATCH_SECONDS).observe(seconds, tags={"stage": stage, "step": step})


def metered(fn: Callable | type, stage: str) -> Callable | type:
    """`fn` (a batch function, or a callable class built once per actor) recording each batch with
    `record_batch`; keeps `fn`'s name, which Ray Data shows as the step's name."""
    step = fn.__name__

    def timed(call: Callable, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = call(batch)
        record_batch(stage, step, out, time.perf_counter() - start)
        return out

    if not isinstance(fn, type):

        def function(batch: dict[str, np.ndarray], **kwargs) -> dict[str, np.ndarray]:
            return timed(lambda b: fn(b, **kwargs), batch)

        function.__name__ = function.__qualname__ = step
        return function

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return timed(super(metered_class, self).__call__, batch)

    metered_class = type(step, (fn,), {"__call__": __call__})
    return metered_class
