"""Pure tests for core/attempts.py: which rows run together, alone, or are given up."""

from __future__ import annotations

import numpy as np

from core.attempts import AttemptLedger, crash_error, plan_attempts, run_plan


def test_plan_splits_rows_by_unfinished_attempts():
    plan = plan_attempts([0, 1, 0, 2, 3, 5], max_attempts=3)
    assert plan.together.tolist() == [True, False, True, False, False, False]
    assert plan.alone.tolist() == [1, 3]
    assert plan.give_up.tolist() == [False, False, False, False, True, True]


def test_plan_of_a_fresh_batch_runs_it_whole_and_max_one_gives_up_after_one_crash():
    fresh = plan_attempts([0, 0, 0], max_attempts=3)
    assert fresh.together.all() and fresh.alone.size == 0 and not fresh.give_up.any()
    once = plan_attempts([1, 0], max_attempts=1)
    assert once.give_up.tolist() == [True, False] and once.alone.size == 0


def test_ledger_counts_only_attempts_that_never_finished():
    ledger = AttemptLedger()
    ledger.start("s", ["a", "b", "c"])  # the worker dies: nothing finishes
    assert ledger.counts("s", ["a", "b", "c", "d"]) == [1, 1, 1, 0]
    assert ledger.counts("other", ["a"]) == [0]  # stages do not share counts
    ledger.start("s", ["a"])
    ledger.finish("s", ["a"])  # a retry of `a` alone returned
    ledger.start("s", ["b"])  # `b` alone kills the worker again
    assert ledger.counts("s", ["a", "b", "c"]) == [0, 2, 1]
    assert ledger.unfinished == {("s", "b"): 2, ("s", "c"): 1}  # finished rows are forgotten


def test_ledger_begin_starts_only_a_fresh_batch():
    ledger = AttemptLedger()
    assert ledger.begin("s", ["a", "b"]) == [0, 0]
    assert ledger.counts("s", ["a", "b"]) == [1, 1]  # in flight
    assert ledger.begin("s", ["a", "c"]) == [1, 0]  # a suspect: nothing is started, run_plan decides
    assert ledger.counts("s", ["a", "c"]) == [1, 0]


class Crash(Exception):
    """Stands for the worker process dying inside a call."""


def test_retries_blame_only_the_poison_row():
    """A batch of four with one poison row, retried after each crash (as Ray retries the task on
    the restarted actor) until it comes back whole."""
    ledger, ids, max_attempts = AttemptLedger(), np.array(["a", "b", "p", "c"], dtype=object), 3
    calls = []

    def call(rows):
        calls.append(ids[rows].tolist())
        if "p" in ids[rows] and not plan.give_up[ids == "p"].all():
            raise Crash
        return ids[rows].tolist()

    for _ in range(10):
        counts = ledger.begin("s", ids.tolist())
        plan = plan_attempts(counts, max_attempts)
        try:
            results = run_plan(plan, ids, "s", ledger, call, begun=not any(counts))
            break
        except Crash:
            continue
    assert ids[plan.give_up].tolist() == ["p"]
    assert calls == [
        ["a", "b", "p", "c"],  # the batch: p kills the worker, all four are suspects
        ["a"], ["b"], ["p"],  # suspects alone: p kills it again; c never ran
        ["a", "b"], ["p"],  # a and b are cleared and run together; p's third attempt
        ["a", "b", "p"], ["c"],  # p given up passes through with the cleared rows; c, still a suspect, alone
    ]  # fmt: skip
    assert results == [["a", "b", "p"], ["c"]]
    assert sum("p" in c for c in calls) == max_attempts + 1  # 3 attempts, then the pass-through
    assert ledger.unfinished == {("s", "p"): max_attempts}  # given up rows stay counted


def test_crash_error_names_row_stage_and_attempts():
    message = crash_error("img7", "lookbook/CropEmbedder", 3)
    assert "'img7'" in message and "lookbook/CropEmbedder" in message and "3 attempts" in message
