"""The one adapter between Ray Data and the stages of `actors/`: scheduling from config, the
attempt guard for actor stages, and metrics with each step timed apart (`core.steps`).

An actor stage is a class whose `__init__` loads and whose `__call__(batch) -> batch` runs it; it
may own a `timer` (`core.steps.StepTimer`) that it records its steps with. A task stage is a
plain function `fn(batch, **kwargs) -> batch`, all of whose time is one step.
"""

from __future__ import annotations

import queue
import threading
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


class Copies:
    """`n` instances made by `make`, for up to `n` calls at once on as many threads: `one()` lends
    an instance no other call holds; `alone()` lends one while holding them all, so that no other
    call runs meanwhile."""

    def __init__(self, make: Callable[[], object], n: int):
        self.n = n
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(n):
            self._free.put(make())
        self._gathering = threading.Lock()  # one `alone()` gathers at a time: two would deadlock

    @contextmanager
    def one(self) -> Iterator[object]:
        instance = self._free.get()
        try:
            yield instance
        finally:
            self._free.put(instance)

    @contextmanager
    def alone(self) -> Iterator[object]:
        with self._gathering:
            held = [self._free.get() for _ in range(self.n)]
        try:
            yield held[0]
        finally:
            for instance in held:
                self._free.put(instance)


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

    With `copies` > 1 it holds that many instances of `actor_class` and runs up to as many batches
    at once (Ray Data calls it from several threads), each on its own instance. A batch with rows
    to run alone runs while no other batch does, so that a crash still blames only its row: rows
    of a batch that ran beside a crash run alone next time, like the rows of a crashed batch.
    """

    actor_class: ClassVar[type]
    operator: ClassVar[str]  # the metrics' and ledger's name of the operator (Ray Data may subclass this class)

    def __init__(self, guard: AttemptGuard, counters: Sequence[str], copies: int = 1, **constructor_kwargs):
        self.ledger, self.max_attempts = guard.ledger, guard.max_attempts
        self.scope, self.counters = guard.scope, tuple(counters)
        self.ledger_scope = f"{guard.scope}/{self.operator}"
        start = time.perf_counter()
        self.copies = Copies(lambda: self.actor_class(**constructor_kwargs), copies)
        ray.get(guard.ledger.loaded.remote(guard.scope, self.operator, time.perf_counter() - start))

    def __call__(self, batch: Batch) -> Batch:
        timer = StepTimer()  # this call's own: with `copies` > 1 calls run at once
        ids = row_ids(batch)
        if len(ids):
            out = self._run(batch, ids, timer)
        else:
            with self.copies.one() as inner:
                out = self._call(inner, batch, timer)
        metrics.record_batch(self.scope, self.operator, out, self.counters)
        metrics.record_steps(self.scope, self.operator, timer.take())
        return out

    def _run(self, batch: Batch, ids: np.ndarray, timer: StepTimer) -> Batch:
        ledger = LedgerClient(self.ledger, timer)
        counts = ledger.begin(self.ledger_scope, ids.tolist())
        plan = plan_attempts(counts, self.max_attempts)
        if plan.give_up.any():
            reasons, errors = quarantine_columns(batch, len(ids))
            for i in np.flatnonzero(plan.give_up):
                reasons[i], errors[i] = WORKER_CRASH, crash_error(ids[i], self.ledger_scope, counts[i])
            batch = {**batch, REASON: reasons, ERROR: errors}
        with self.copies.alone() if len(plan.alone) else self.copies.one() as inner:
            call = lambda rows: self._call(inner, take(batch, rows), timer)  # noqa: E731
            outputs = run_plan(plan, ids, self.ledger_scope, ledger, call, begun=not any(counts))
        return {k: np.concatenate([out[k] for out in outputs]) for k in outputs[0]}

    def _call(self, inner: object, batch: Batch, timer: StepTimer) -> Batch:
        inner_timer = getattr(inner, "timer", None)
        if inner_timer is None:
            with timer(FORWARD):
                return inner(batch)
        out = inner(batch)
        for step, seconds in inner_timer.take().items():
            timer.add(step, seconds)
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
    min_size..max_size actors with the pool's CPUs, GPUs and threads, each running
    `calls_per_actor` batches at once (as many copies of the actor class). Ray Data names the operator
    (and its actor processes) `MapBatches(<name>)`, by default the actor class's name.

    Dead actors are restarted and their tasks retried without limit (Ray Data's defaults, set here
    so they cannot drift): the guard, not Ray, bounds the attempts.
    """
    threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(pool.threads)}}} if pool.threads else {}
    return ds.map_batches(
        actor_stage(actor_class, name),
        fn_constructor_kwargs={"guard": guard, "counters": tuple(counters), "copies": pool.calls_per_actor, **kwargs},
        compute=ActorPoolStrategy(
            min_size=pool.min_size,
            max_size=pool.max_size,
            max_concurrent_calls_per_actor=pool.calls_per_actor,
            enable_true_multi_threading=pool.calls_per_actor > 1,
        ),
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
