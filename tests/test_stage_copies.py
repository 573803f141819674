"""pipeline.stage.Copies, the instances an actor with `pool.calls_per_actor` > 1 lends to its
concurrent calls (no Ray instance needed)."""

from __future__ import annotations

import itertools
import threading

from pipeline.stage import Copies


def test_copies_lend_each_instance_to_one_call_and_alone_waits_for_all():
    copies = Copies(itertools.count().__next__, 2)  # instances 0 and 1
    alone_entered = threading.Event()

    def run_alone() -> None:
        with copies.alone():
            alone_entered.set()

    with copies.one() as first:
        with copies.one() as second:
            assert {first, second} == {0, 1}
        waiting = threading.Thread(target=run_alone)
        waiting.start()
        assert not alone_entered.wait(0.3)  # `first` is still lent
    assert alone_entered.wait(10)
    waiting.join()

    def run_one() -> None:
        with copies.one():
            pass

    with copies.alone() as instance:
        blocked = threading.Thread(target=run_one)
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive() and instance in (0, 1)  # no other call while one runs alone
    blocked.join(10)
    assert not blocked.is_alive()
