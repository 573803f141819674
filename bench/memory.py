"""Memory and CPU of a process tree, sampled from /proc, and the benchmarks' exclusive lock."""

from __future__ import annotations

import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


class TreeMonitor:
    """Samples this process and all its descendants every `interval` seconds from /proc: their CPU
    times every time, their memory every `memory_interval` seconds (default `interval`), as reading
    a process's PSS (the kernel walks its page tables) costs about 5 ms of CPU per process, most of
    which a benchmark on few cores would take from the run it measures.

    `peak`: the largest summed PSS (bytes) seen, with `peak_parts` splitting it by process kind;
    `process_peaks`: per process, its kind and the largest PSS, USS (private) and RSS seen.
    `mark()` snapshots CPU time: each process's (its last sample, alive or gone), the machine's and
    the monitor's own, so that `summary` can tell how many cores the run used, by which processes,
    how many other users' processes took meanwhile (a timing taken under such load is unreliable)
    and what the sampling cost this process. Processes that live less than `interval` are missed.
    """

    def __init__(self, interval: float, memory_interval: float | None = None):
        self.interval, self.peak, self.peak_parts, self.samples, self.own_cpu_s = interval, 0, {}, 0, 0.0
        self.memory_interval = interval if memory_interval is None else memory_interval
        self.cpu_by_pid: dict[int, float] = {}
        self.ready_at: dict[str, float] = {}
        self.kind_by_pid: dict[int, str] = {}
        self.process_peaks: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMonitor:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def mark(self) -> tuple[float, float, dict[int, float], float]:
        """(wall clock, busy CPU seconds of the machine since boot, CPU seconds of each process so far,
        CPU seconds the sampling has cost so far)."""
        self.sample()
        with self._lock:
            return time.perf_counter(), _busy_cpu_s(), dict(self.cpu_by_pid), self.own_cpu_s

    def sample(self, memory: bool = True) -> None:
        """CPU times and kinds of the tree's processes, and with `memory` their PSS (the peaks)."""
        began = time.thread_time()
        me = psutil.Process()
        parts: dict[str, int] = {}
        for proc in [me, *me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    usage = proc.memory_full_info() if memory else None
                    times = proc.cpu_times()
                    command = proc.cmdline() or [proc.name()]
                    kind = "driver" if proc.pid == me.pid else _kind(command)
                    if command[0].startswith("ray::MapWorker(") and not command[0].endswith(".__init__"):
                        self.ready_at.setdefault(kind, time.perf_counter())  # a Ray Data actor out of __init__
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            with self._lock:
                self.cpu_by_pid[proc.pid] = times.user + times.system
                self.kind_by_pid[proc.pid] = kind
                peaks = self.process_peaks.setdefault(proc.pid, {"kind": kind, "pss": 0, "uss": 0, "rss": 0})
                if kind != "IDLE":  # a pooled Ray worker takes its task's or actor's name once it has one
                    peaks["kind"] = kind
                if usage is not None:
                    parts[kind] = parts.get(kind, 0) + usage.pss
                    for name in ("pss", "uss", "rss"):
                        peaks[name] = max(peaks[name], getattr(usage, name))
        with self._lock:
            if memory:
                self.samples += 1
                if sum(parts.values()) > self.peak:
                    self.peak, self.peak_parts = sum(parts.values()), parts
            self.own_cpu_s += time.thread_time() - began

    def summary(self, start: tuple, end: tuple) -> dict:
        """Peak memory over the whole monitoring; CPU use between the marks `start` and `end`."""
        wall, busy = end[0] - start[0], end[1] - start[1]
        cpu_by_kind: dict[str, float] = {}
        for pid, cpu in end[2].items():
            kind = self.kind_by_pid[pid]
            cpu_by_kind[kind] = cpu_by_kind.get(kind, 0.0) + cpu - start[2].get(pid, 0.0)
        cpu = sum(cpu_by_kind.values())
        return {
            "peak_bytes": self.peak,
            "peak_parts": self.peak_parts,
            "samples": self.samples,
            "cores_used": cpu / wall,
            "other_cores_used": max(0.0, busy - cpu) / wall,
            "cpu_s_by_process": dict(sorted(cpu_by_kind.items(), key=lambda kv: -kv[1])),
            "monitor_cpu_s": end[3] - start[3],
            "actor_ready_s": {k: v - start[0] for k, v in sorted(self.ready_at.items(), key=lambda kv: kv[1])},
        }

    def _run(self) -> None:
        memory_due = time.perf_counter() + self.memory_interval
        while not self._stop.wait(self.interval):
            memory = time.perf_counter() >= memory_due
            memory_due += self.memory_interval if memory else 0.0
            self.sample(memory)


def _kind(command: list[str]) -> str:
    """A Ray Data actor by its functions (`decode_images->CropDetector`), another Ray worker by its
    title (`IDLE`, `_StatsActor`, ...), a Ray service by its program (`raylet`, `log_monitor.py`)."""
    if command[0].startswith("ray::"):
        title = command[0].removeprefix("ray::")
        return "->".join(re.findall(r"MapBatches\((\w+)\)", title)) or title.split(".")[0]
    if os.path.basename(command[0]).startswith("python"):  # a Python service: name it by its script
        command = [arg for arg in command[1:] if not arg.startswith("-")] or command
    return os.path.basename(command[0])


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent not idle since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@contextmanager
def exclusive(lock: Path | None) -> Iterator[None]:
    """Hold an exclusive flock on `lock` (no-op for None): other benchmarks and tests that take it
    wait, so that a timed run has the machine to itself."""
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        print(f"[bench] waiting for an exclusive lock on {lock}", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
