"""Job metrics without Ray: what one batch records, and metered steps that keep their names and
survive pickling (how Ray ships them to workers)."""

from __future__ import annotations

import numpy as np
import pytest
from ray import cloudpickle

from actors.decoder import decode_images
from actors.detector import CropDetector
from actors.rows import Batch
from miner import metrics
from miner.config import DecodeConfig, StorageConfig
from miner.schemas import REASON


class Recorder:
    """Stands in for one ray.util.metrics object: keeps every (value, tags) recorded."""

    def __init__(self):
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, value, tags):
        self.calls.append((value, tags))

    observe = inc


@pytest.fixture
def recorded(monkeypatch) -> dict[str, Recorder]:
    fakes = {name: Recorder() for name in (*metrics.COUNTERS, metrics.BATCH_SECONDS)}
    monkeypatch.setattr(metrics, "_metrics", fakes)
    return fakes


class Doubler:
    """A stand-in stage class: built with a constructor argument, returns each row twice."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(self, batch: Batch) -> Batch:
        ids = np.repeat(batch["image_id"], 2)
        return {"image_id": ids, REASON: np.array([self.reason, ""] * len(batch["image_id"]), dtype=object)}


def batch(n: int) -> Batch:
    return {"image_id": np.array([f"i{k}" for k in range(n)], dtype=object), REASON: np.full(n, "", dtype=object)}


def test_a_step_counts_rows_in_play_and_its_own_work(recorded):
    out = {"crop_id": np.arange(4), REASON: np.array(["", "decode_error", "", ""], dtype=object)}
    metrics.record_batch("lookbook", "CropDetector", out, 0.5)
    assert recorded[metrics.STEP_ROWS].calls == [(3, {"stage": "lookbook", "step": "CropDetector"})]
    assert recorded[metrics.CROPS_DETECTED].calls == [(3, {"stage": "lookbook"})]
    assert recorded[metrics.BATCH_SECONDS].calls == [(0.5, {"stage": "lookbook", "step": "CropDetector"})]


def test_the_decoder_counts_quarantined_images_as_read(recorded):
    out = {"image_id": np.arange(3), REASON: np.array(["", "not_found", "too_small"], dtype=object)}
    metrics.record_batch("garments", "decode_images", out, 0.1)
    assert recorded[metrics.IMAGES_READ].calls == [(3, {"stage": "garments"})]
    assert recorded[metrics.STEP_ROWS].calls == [(1, {"stage": "garments", "step": "decode_images"})]


def test_count_each_tags_every_value_and_skips_zero(recorded):
    metrics.count_each(metrics.QUARANTINED, "reason", np.array(["a", "b", "a"], dtype=object), stage="lookbook")
    metrics.count(metrics.ROWS_WRITTEN, 0, stage="lookbook", table="crops")
    assert sorted(recorded[metrics.QUARANTINED].calls, key=str) == [
        (1, {"reason": "b", "stage": "lookbook"}),
        (2, {"reason": "a", "stage": "lookbook"}),
    ]
    assert recorded[metrics.ROWS_WRITTEN].calls == []


def test_metered_class_keeps_its_name_result_and_records_each_batch(recorded):
    metered = metrics.metered(Doubler, "lookbook")
    assert metered.__name__ == "Doubler" and issubclass(metered, Doubler)
    stage = cloudpickle.loads(cloudpickle.dumps(metered))(reason="too_small")  # as an actor builds it
    out = stage(batch(3))
    assert out["image_id"].tolist() == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert recorded[metrics.STEP_ROWS].calls == [(3, {"stage": "lookbook", "step": "Doubler"})]
    assert len(recorded[metrics.BATCH_SECONDS].calls) == 1


def test_metered_function_passes_keyword_arguments(recorded, tmp_path):
    metered = cloudpickle.loads(cloudpickle.dumps(metrics.metered(decode_images, "lookbook")))
    assert metered.__name__ == "decode_images"
    out = metered(
        {"image_id": np.array(["a"], dtype=object), "uri": np.array([str(tmp_path / "missing.jpg")], dtype=object)},
        cfg=DecodeConfig(),
        storage=StorageConfig(),
    )
    assert out[REASON].tolist() == ["not_found"]
    assert recorded[metrics.IMAGES_READ].calls == [(1, {"stage": "lookbook"})]


def test_real_stage_classes_pickle_as_their_metered_version():
    metered = metrics.metered(CropDetector, "lookbook")
    restored = cloudpickle.loads(cloudpickle.dumps(metered))
    assert restored.__name__ == "CropDetector" and restored is not CropDetector
    assert issubclass(restored, CropDetector) and restored.__call__ is not CropDetector.__call__


def test_every_named_metric_has_the_prefix_and_a_valid_name():
    names = [metrics.PREFIX + name for name in (*metrics.COUNTERS, metrics.BATCH_SECONDS)]
    assert all(n.replace("_", "").isalnum() and n.islower() for n in names)
    assert {c for counters in metrics.STEP_COUNTERS.values() for c in counters} <= set(metrics.COUNTERS)
