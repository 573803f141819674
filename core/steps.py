"""The step names every stage reports its time under, and the timer actors record them with.

One set of names for the whole job: a batch's seconds split into `decode` (read and decode
images), `preprocess` (host work before a model: crops, resizing, tokenising), `forward` (the
model or index search, device sync included), `postprocess` (turning outputs into columns),
`ledger` (round trips to the attempt ledger) and `write` (Parquet output).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

DECODE = "decode"
PREPROCESS = "preprocess"
FORWARD = "forward"
POSTPROCESS = "postprocess"
LEDGER = "ledger"
WRITE = "write"
STEPS = (DECODE, PREPROCESS, FORWARD, POSTPROCESS, LEDGER, WRITE)


class StepTimer:
    """Wall seconds per step since the last `take`. `with timer(FORWARD): ...` adds the block's
    time to that step; several objects of one actor (a model wrapper and its stage) may share one."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}, expected one of {STEPS}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(step, time.perf_counter() - start)

    def add(self, step: str, seconds: float) -> None:
        """Add `seconds` to `step` (a step timed elsewhere, e.g. by another timer)."""
        self._seconds[step] = self._seconds.get(step, 0.0) + seconds

    def take(self) -> dict[str, float]:
        """The seconds per step recorded since the last call, and a fresh start."""
        seconds, self._seconds = self._seconds, {}
        return seconds
