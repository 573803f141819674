"""A one-line progress report in the job log, every few seconds while a stage runs (what
`ray job logs --follow` shows when Ray Data's progress bars are not drawn on a terminal)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class StageProgress:
    """Where a sharded stage stands. `shards_done` counts committed shards, earlier runs' included;
    `rows` and `quarantined` count the rows this run wrote in the shards it committed."""

    stage: str
    shards_total: int
    shards_done: int = 0
    shards_running: int = 0
    rows: int = 0
    quarantined: int = 0
    started: float = field(default_factory=time.monotonic)


def progress_line(p: StageProgress, now: float) -> str:
    """One log line; rows/s is this run's rows (good and quarantined) over the stage's seconds."""
    seconds = max(now - p.started, 0.0)
    written = p.rows + p.quarantined
    rate = written / seconds if seconds > 0 else 0.0
    minutes, secs = divmod(int(seconds), 60)
    return (
        f"[lookbook-miner] progress {p.stage}: {p.shards_done}/{p.shards_total} shards committed, "
        f"{p.shards_running} running; {p.rows} rows written, {p.quarantined} quarantined; "
        f"{rate:.1f} rows/s over {minutes}:{secs:02d}"
    )


def log_interval(interval_s: float, progress_bars: bool, tty: bool) -> float:
    """Seconds between progress lines; 0 (none) when Ray Data's bars already draw on a terminal."""
    return 0.0 if progress_bars and tty else max(interval_s, 0.0)


class ProgressLog:
    """A context manager: prints `progress_line(progress)` every `interval_s` seconds from a daemon
    thread while the block runs (never with `interval_s` 0); the block updates `progress` in place."""

    def __init__(self, progress: StageProgress, interval_s: float):
        self.progress, self.interval_s = progress, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{progress.stage}", daemon=True)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            print(progress_line(self.progress, time.monotonic()), flush=True)

    def __enter__(self) -> StageProgress:
        if self.interval_s > 0:
            self._thread.start()
        return self.progress

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
