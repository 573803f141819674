"""bench.memory.TreeMonitor: CPU times every interval, memory (PSS, costly to read) every memory interval."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.memory import TreeMonitor

BUSY_CHILD = "import time\nend = time.perf_counter() + 0.6\nwhile time.perf_counter() < end: pass"


def test_memory_is_sampled_every_memory_interval_and_cpu_every_interval():
    """A child that lives between the marks is seen by the CPU samples alone; memory is read only at
    the monitor's start, its marks and its end, plus once every 0.5 s."""
    began = time.perf_counter()
    with TreeMonitor(0.05, memory_interval=0.5) as monitor:
        start = monitor.mark()
        subprocess.run([sys.executable, "-c", BUSY_CHILD], check=True)
        end = monitor.mark()
    elapsed = time.perf_counter() - began
    summary = monitor.summary(start, end)
    cpu = summary["cpu_s_by_process"]
    assert sum(seconds for kind, seconds in cpu.items() if kind != "driver") > 0.3
    tick = 0.01  # /proc counts a process's CPU time in clock ticks; the monitor its thread's in ns
    assert 0 < summary["monitor_cpu_s"] <= cpu["driver"] + 2 * tick  # the sampling is some of this process's
    assert 0 < monitor.peak and monitor.samples <= 4 + elapsed / 0.5 + 1  # every 0.05 s would be 13 or more
