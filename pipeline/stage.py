"""The one adapter between Ray Data and the stages of `actors/`: scheduling from config, the
attempt guard for actor stages, and metrics with each step timed apart (`core.steps`).

An actor stage is a class whose `__init__` loads and whose `__call__(batch) -> batch` runs it; it
may own a `timer` (`core.steps.StepTimer`) that it records its steps with. A task stage is a
plain function `fn(batch, **kwargs) -> batch`, all of whose time is one step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import ray
from ray.actor import ActorHandle
from ray.data import ActorPoolStrategy, Dataset
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from core.attempts import AttemptLedger, crash_error, plan_attempts, run_plan
from core.batches import Batch, quarantine_columns, row_ids, take
from core.config import PoolConfig
from core.images import WORKER_CRASH
from core.schemas import ERROR, REASON
from core.steps import FORWARD, LEDGER, StepTimer
from pipeline import metrics


@dataclass(frozen=True)
class AttemptGuard:
    """Bounds the attempts at each row of a job stage's actor stages (see `core.attempts`).

    `ledger` is the job's AttemptLedger actor (`attempt_ledger`); `scope` names the job stage
    (`lookbook`, `garments`), within which row ids are unique and under which metrics are tagged;
    a row whose attempts killed the worker `max_attempts` times is quarantined as `worker_crash`.
    """

    ledger: ActorHandle
    scope: str
    max_attempts: int


@contextmanager
def attempt_ledger() -> Iterator[ActorHandle]:
    """A new AttemptLedger actor on this (the driver's) node, taking no CPU, killed when the block
    ends. Its counts live in memory for as long as the driver: a resubmitted job starts from zero."""
    node = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    ledger = ray.remote(AttemptLedger).options(num_cpus=0, scheduling_strategy=strategy).remote()
    try:
        yield ledger
    finally:
        ray.kill(ledger)


class LedgerClient:
    """Blocking calls to an AttemptLedger actor, each timed as the `ledger` step."""

    def __init__(self, handle: ActorHandle, timer: StepTimer):
        self.handle, self.timer = handle, timer

    def begin(self, stage: str, ids: list[str]) -> list[int]:
        with self.timer(LEDGER):
            return ray.get(self.handle.begin.remote(stage, ids))

    def start(self, stage: str, ids: list[str]) -> None:
        with self.timer(LEDGER):
            ray.get(self.handle.start.remote(stage, ids))

    def finish(self, stage: str, ids: list[str]) -> None:
        with self.timer(LEDGER):
            ray.get(self.handle.finish.remote(stage, ids))


class ActorStage:
    """Runs one actor of `actors/` (`actor_class`, set by `actor_stage`) under an AttemptGuard.

    Per batch: rows with no unfinished attempt run together; rows left in flight by a dead
    worker run one call each, so a crash blames only its row; rows that reached `max_attempts`
    get reason `worker_crash` and pass through like any quarantined row (actors never run their
    model on quarantined rows). Rows are in flight in the ledger during their call. The output is
    the actor's outputs of these calls, concatenated; it is counted under `counters` (see
    `metrics.record_batch`), and its seconds per step are the actor's own (its `timer`; the
    whole call as `forward` for an actor without one) plus `ledger`. Its construction (the model
    loads) is timed and reported to the ledger (`AttemptLedger.loaded`).
    """

    actor_class: ClassVar[type]
    operator: ClassVar[str]  # the metrics' and ledger's name of the operator (Ray Data may subclass this class)

    def __init__(self, guard: AttemptGuard, counters: Sequence[str], **constructor_kwargs):
        self.timer = StepTimer()
        self.ledger, self.max_attempts = LedgerClient(guard.ledger, self.timer), guard.max_attempts
        self.scope, self.counters = guard.scope, tuple(counters)
        self.ledger_scope = f"{guard.scope}/{self.operator}"
        start = time.perf_counter()
        self.inner = self.actor_class(**constructor_kwargs)
        ray.get(guard.ledger.loaded.remote(guard.scope, self.operator, time.perf_counter() - start))

    def __call__(self, batch: Batch) -> Batch:
        ids = row_ids(batch)
        out = self._run(batch, ids) if len(ids) else self._call(batch)
        metrics.record_batch(self.scope, self.operator, out, self.counters)
        metrics.record_steps(self.scope, self.operator, self.timer.take())
        return out

    def _run(self, batch: Batch, ids: np.ndarray) -> Batch:
        counts = self.ledger.begin(self.ledger_scope, ids.tolist())
        plan = plan_attempts(counts, self.max_attempts)
        if plan.give_up.any():
            reasons, errors = quarantine_columns(batch, len(ids))
            for i in np.flatnonzero(plan.give_up):
                reasons[i], errors[i] = WORKER_CRASH, crash_error(ids[i], self.ledger_scope, counts[i])
            batch = {**batch, REASON: reasons, ERROR: errors}
        call = lambda rows: self._call(take(batch, rows))  # noqa: E731
        outputs = run_plan(plan, ids, self.ledger_scope, self.ledger, call, begun=not any(counts))
        return {k: np.concatenate([out[k] for out in outputs]) for k in outputs[0]}

    def _call(self, batch: Batch) -> Batch:
        inner_timer = getattr(self.inner, "timer", None)
        if inner_timer is None:
            with self.timer(FORWARD):
                return self.inner(batch)
        out = self.inner(batch)
        for step, seconds in inner_timer.take().items():
            self.timer.add(step, seconds)
        return out


def actor_stage(actor_class: type, name: str | None = None) -> type[ActorStage]:
    """The ActorStage that runs `actor_class`, named `name` (default: like the class): Ray Data
    names an operator and its actor processes after the class it is given (`MapBatches(CropEmbedder)`)."""
    name = name or actor_class.__name__
    attributes = {"actor_class": actor_class, "operator": name, "__doc__": actor_class.__doc__}
    return type(name, (ActorStage,), attributes)


def map_actors(
    ds: Dataset,
    actor_class: type,
    pool: PoolConfig,
    guard: AttemptGuard,
    counters: Sequence[str] = (),
    name: str | None = None,
    **kwargs,
) -> Dataset:
    """`ds.map_batches` through `actor_class(**kwargs)` as an ActorStage, on an autoscaling pool of
    min_size..max_size actors with the pool's CPUs, GPUs and threads. Ray Data names the operator
    (and its actor processes) `MapBatches(<name>)`, by default the actor class's name.

    Dead actors are restarted and their tasks retried without limit (Ray Data's defaults, set here
    so they cannot drift): the guard, not Ray, bounds the attempts.
    """
    threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(pool.threads)}}} if pool.threads else {}
    return ds.map_batches(
        actor_stage(actor_class, name),
        fn_constructor_kwargs={"guard": guard, "counters": tuple(counters), **kwargs},
        compute=ActorPoolStrategy(min_size=pool.min_size, max_size=pool.max_size),
        batch_size=pool.batch_size,
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus or None,
        max_restarts=-1,
        max_task_retries=-1,
        **threads,
    )


def map_tasks(
    ds: Dataset,
    fn: Callable[..., Batch],
    guard: AttemptGuard,
    step: str,
    counters: Sequence[str] = (),
    batch_size: int | None = None,
    num_cpus: float = 1.0,
    **kwargs,
) -> Dataset:
    """`ds.map_batches(fn, fn_kwargs=kwargs)` as Ray tasks, each batch counted under `counters`
    and its seconds recorded as `step` in the metrics of `guard.scope` (the
    attempt guard covers actor stages only); the operator keeps `fn`'s name."""
    scope = guard.scope

    def run(batch: Batch) -> Batch:
        start = time.perf_counter()
        out = fn(batch, **kwargs)
        metrics.record_steps(scope, fn.__name__, {step: time.perf_counter() - start})
        metrics.record_batch(scope, fn.__name__, out, counters)
        return out

    run.__name__ = run.__qualname__ = fn.__name__
    return ds.map_batches(run, batch_size=batch_size, num_cpus=num_cpus)
