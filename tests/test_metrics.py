"""Job metrics and the stage adapter without a Ray instance: what one batch records, and actor
stages that keep their names, survive pickling (how Ray ships them) and time each step apart."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from ray import cloudpickle

from actors.detector import CropDetector
from core.attempts import AttemptLedger
from core.batches import Batch
from core.schemas import REASON
from core.steps import FORWARD, LEDGER, POSTPROCESS, StepTimer
from pipeline import metrics, stage
from pipeline.stage import AttemptGuard, actor_stage


class Recorder:
    """Stands in for one ray.util.metrics object: keeps every (value, tags) recorded."""

    def __init__(self):
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, value, tags):
        self.calls.append((value, tags))

    observe = inc


@pytest.fixture
def recorded(monkeypatch) -> dict[str, Recorder]:
    fakes = {name: Recorder() for name in (*metrics.COUNTERS, metrics.STEP_SECONDS)}
    monkeypatch.setattr(metrics, "_metrics", fakes)
    return fakes


class LocalLedger:
    """An AttemptLedger called in this process the way its actor handle is (`ledger.begin.remote(...)`)."""

    def __init__(self):
        self.ledger = AttemptLedger()

    def __getattr__(self, name: str):
        return SimpleNamespace(remote=getattr(self.ledger, name))


@pytest.fixture
def guard(monkeypatch) -> AttemptGuard:
    monkeypatch.setattr(stage.ray, "get", lambda value: value)  # the local ledger answers at once
    return AttemptGuard(LocalLedger(), "lookbook", max_attempts=2)


class Doubler:
    """A stand-in actor: built with a constructor argument, returns each row twice, and times its steps."""

    def __init__(self, reason: str):
        self.reason = reason
        self.timer = StepTimer()

    def __call__(self, batch: Batch) -> Batch:
        with self.timer(FORWARD):
            time.sleep(0.01)
            ids = np.repeat(batch["image_id"], 2)
        with self.timer(POSTPROCESS):
            return {"image_id": ids, REASON: np.array([self.reason, ""] * len(batch["image_id"]), dtype=object)}


def batch(n: int) -> Batch:
    return {"image_id": np.array([f"i{k}" for k in range(n)], dtype=object), REASON: np.full(n, "", dtype=object)}


def test_a_batch_counts_rows_in_play_under_its_counters(recorded):
    out = {"image_id": np.array(["a", "a", "b", "c"]), REASON: np.array(["", "decode_error", "", ""], dtype=object)}
    metrics.record_batch("lookbook", "CropDetector", out, (metrics.CROPS_DETECTED,))
    assert recorded[metrics.OPERATOR_ROWS].calls == [(3, {"stage": "lookbook", "operator": "CropDetector"})]
    assert recorded[metrics.CROPS_DETECTED].calls == [(3, {"stage": "lookbook"})]


def test_images_read_counts_distinct_images_quarantined_ones_included(recorded):
    out = {"image_id": np.array(["a", "a", "b", "c"]), REASON: np.array(["", "", "not_found", "too_small"])}
    metrics.record_batch("garments", "FusedLookbookModels", out, (metrics.IMAGES_READ,))
    assert recorded[metrics.IMAGES_READ].calls == [(3, {"stage": "garments"})]


def test_count_each_tags_every_value_and_skips_zero(recorded):
    metrics.count_each(metrics.QUARANTINED, "reason", np.array(["a", "b", "a"], dtype=object), stage="lookbook")
    metrics.count(metrics.ROWS_WRITTEN, 0, stage="lookbook", table="crops")
    assert sorted(recorded[metrics.QUARANTINED].calls, key=str) == [
        (1, {"reason": "b", "stage": "lookbook"}),
        (2, {"reason": "a", "stage": "lookbook"}),
    ]
    assert recorded[metrics.ROWS_WRITTEN].calls == []


def test_actor_stage_keeps_the_name_and_pickles():
    restored = cloudpickle.loads(cloudpickle.dumps(actor_stage(CropDetector)))
    assert restored.__name__ == "CropDetector" and restored.actor_class is CropDetector


def test_actor_stage_records_each_step_apart_the_ledger_included(recorded, guard):
    built = cloudpickle.loads(cloudpickle.dumps(actor_stage(Doubler)))(guard, (metrics.CROPS_DETECTED,), reason="x")
    out = built(batch(3))
    assert out["image_id"].tolist() == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert recorded[metrics.OPERATOR_ROWS].calls == [(3, {"stage": "lookbook", "operator": "Doubler"})]
    assert recorded[metrics.CROPS_DETECTED].calls == [(3, {"stage": "lookbook"})]
    seconds = {tags["step"]: value for value, tags in recorded[metrics.STEP_SECONDS].calls}
    assert set(seconds) == {FORWARD, POSTPROCESS, LEDGER} and seconds[FORWARD] >= 0.01
    assert guard.ledger.ledger.unfinished == {}  # every row's attempt finished


def test_an_actor_without_a_timer_is_timed_as_forward(recorded, guard):
    class Plain:
        def __call__(self, batch: Batch) -> Batch:
            return batch

    actor_stage(Plain)(guard, ())(batch(2))
    assert {tags["step"] for _, tags in recorded[metrics.STEP_SECONDS].calls} == {FORWARD, LEDGER}


def test_step_timer_knows_only_the_job_steps():
    timer = StepTimer()
    with timer(FORWARD):
        pass
    with pytest.raises(ValueError, match="unknown step"), timer("inference"):
        pass
    assert set(timer.take()) == {FORWARD} and timer.take() == {}


def test_every_named_metric_has_the_prefix_and_a_valid_name():
    names = [metrics.PREFIX + name for name in (*metrics.COUNTERS, metrics.STEP_SECONDS)]
    assert all(n.replace("_", "").isalnum() and n.islower() for n in names)
