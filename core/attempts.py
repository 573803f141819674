"""Bounded attempts for rows that crash a worker (segfault, OOM kill): pure bookkeeping, no Ray.

Ray Data restarts a dead actor and retries its task without limit, so a row that kills the
process would loop forever. The stage wrapper (`pipeline.stage.ActorStage`) asks an
`AttemptLedger` how many earlier attempts at each row of a batch never finished, and
`plan_attempts` turns those counts into what to do with each row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class AttemptPlan:
    """What a stage does with each row of a batch, given its unfinished attempts.

    `together`: (n,) bool, rows with no unfinished attempt, run as one batch.
    `alone`: indices of rows whose earlier attempt died with its worker (fewer than
    `max_attempts` times): each runs in a call of its own, so a crash blames only its row.
    `give_up`: (n,) bool, rows that died `max_attempts` times: quarantined, never run again.
    """

    together: np.ndarray
    alone: np.ndarray
    give_up: np.ndarray


def plan_attempts(unfinished: Sequence[int], max_attempts: int) -> AttemptPlan:
    """Split a batch by the number of earlier attempts at each row that never finished."""
    counts = np.asarray(unfinished, dtype=np.int64).reshape(-1)
    return AttemptPlan(
        together=counts == 0,
        alone=np.flatnonzero((counts > 0) & (counts < max_attempts)),
        give_up=counts >= max_attempts,
    )


class Ledger(Protocol):
    """What `run_plan` needs of an AttemptLedger (the object itself, or a client of its actor)."""

    def start(self, stage: str, ids: Sequence[str]) -> None: ...

    def finish(self, stage: str, ids: Sequence[str]) -> None: ...


def run_plan(
    plan: AttemptPlan,
    ids: np.ndarray,
    stage: str,
    ledger: Ledger,
    call: Callable[[np.ndarray], T],
    begun: bool = False,
) -> list[T]:
    """`call(rows)` (rows: (n,) bool mask) on the rows run together plus those given up, then on
    each row to run alone; returns the results in that order. During each call its rows (not the
    given-up ones, which run no model) are in flight in `ledger`: if the process dies inside the
    call, they keep one more unfinished attempt. `begun`: the ledger's `begin` already marked the
    whole batch in flight (it was fresh), so the first call needs no `start`."""
    first = plan.together | plan.give_up
    alone = [np.arange(len(ids)) == i for i in plan.alone]
    groups = ([(first, plan.together)] if first.any() else []) + [(mask, mask) for mask in alone]
    results = []
    for k, (rows, tracked) in enumerate(groups):
        started = ids[tracked].tolist()
        if not (begun and k == 0):
            ledger.start(stage, started)
        results.append(call(rows))
        ledger.finish(stage, started)
    return results


def crash_error(row_id: str, stage: str, attempts: int) -> str:
    """The quarantine `error` of a row given up after `attempts` attempts that killed the worker."""
    return (
        f"row {row_id!r} given up in stage {stage} after {attempts} attempts, each ending with the worker "
        "process dead (crash or out-of-memory kill; limit: work.max_attempts)"
    )


class AttemptLedger:
    """Per (stage, row id), the attempts started and not finished: the row was in flight when its
    worker died. One per job run, as a Ray actor on the driver's node (see
    `pipeline.stage.attempt_ledger`); state is in memory and dies with the driver.

    A finished row is forgotten, so the ledger holds only rows in flight and rows that crashed.
    It also tallies the seconds each stage's actors took to load (`loaded`), for the job summary.
    """

    def __init__(self) -> None:
        self.unfinished: dict[tuple[str, str], int] = {}
        self.loads: dict[str, dict[str, list[float]]] = {}

    def loaded(self, stage: str, operator: str, seconds: float) -> None:
        """An actor of `operator` in `stage` finished loading (its constructor) in `seconds`."""
        self.loads.setdefault(stage, {}).setdefault(operator, []).append(seconds)

    def load_seconds(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per stage and operator: the actors started (restarts included), their load seconds in
        all and the longest (what the first batch waited for when they started together)."""
        return {
            stage: {
                op: {"actors": len(s), "seconds": round(sum(s), 3), "max_seconds": round(max(s), 3)}
                for op, s in ops.items()
            }
            for stage, ops in self.loads.items()
        }

    def counts(self, stage: str, ids: Sequence[str]) -> list[int]:
        """Unfinished attempts at each row, 0 for rows never started or finished."""
        return [self.unfinished.get((stage, i), 0) for i in ids]

    def begin(self, stage: str, ids: Sequence[str]) -> list[int]:
        """`counts`, and when every count is 0 (a fresh batch, the common case) also `start` of all
        the rows: one round trip instead of two before a batch runs whole."""
        counts = self.counts(stage, ids)
        if not any(counts):
            self.start(stage, ids)
        return counts

    def start(self, stage: str, ids: Sequence[str]) -> None:
        """Mark rows in flight: each gets one more unfinished attempt until `finish`."""
        for i in ids:
            self.unfinished[stage, i] = self.unfinished.get((stage, i), 0) + 1

    def finish(self, stage: str, ids: Sequence[str]) -> None:
        """The rows' attempt returned: forget them."""
        for i in ids:
            self.unfinished.pop((stage, i), None)
