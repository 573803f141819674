"""bench.pipeline's accounting of a Ray run's CPU seconds: the stage's actors against the rest."""

from __future__ import annotations

import pytest

from bench.pipeline import actor_cpu_s


def test_the_actors_are_the_processes_seen_leaving_their_constructor():
    run = {
        "cpu_s_by_process": {"decode_images->CropDetector": 90.0, "CropEmbedder": 40.0, "driver": 6.0, "IDLE": 5.5},
        "actor_ready_s": {"decode_images->CropDetector": 9.1, "CropEmbedder": 7.8},
    }
    assert actor_cpu_s(run) == pytest.approx((130.0, 11.5))
