"""The progress line of the job log."""

from __future__ import annotations

import time

from pipeline.progress import ProgressLog, StageProgress, log_interval, progress_line


def test_progress_line_counts_shards_rows_and_rate():
    p = StageProgress("lookbook", shards_total=64, shards_done=10, shards_running=8, rows=1180, quarantined=20)
    assert progress_line(p, now=p.started + 125.0) == (
        "[lookbook-miner] progress lookbook: 10/64 shards committed, 8 running; "
        "1180 rows written, 20 quarantined; 9.6 rows/s over 2:05"
    )


def test_progress_line_at_the_start_has_no_rate():
    p = StageProgress("garments", shards_total=4, shards_done=4)
    assert progress_line(p, now=p.started).endswith("0 rows written, 0 quarantined; 0.0 rows/s over 0:00")


def test_no_lines_where_progress_bars_draw_on_a_terminal():
    assert log_interval(30, progress_bars=True, tty=True) == 0
    assert log_interval(30, progress_bars=True, tty=False) == 30  # ray job logs: not a tty
    assert log_interval(30, progress_bars=False, tty=True) == 30
    assert log_interval(-1, progress_bars=False, tty=False) == 0


def test_progress_log_prints_while_the_block_runs(capsys):
    with ProgressLog(StageProgress("lookbook", shards_total=2), interval_s=0.02) as progress:
        progress.shards_done = 1
        time.sleep(0.15)
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("[lookbook-miner] progress lookbook: 1/2 shards") for line in lines)
    time.sleep(0.05)
    assert capsys.readouterr().out == ""  # stopped with the block


def test_progress_log_with_interval_zero_prints_nothing(capsys):
    with ProgressLog(StageProgress("lookbook", shards_total=2), interval_s=0):
        time.sleep(0.05)
    assert capsys.readouterr().out == ""
