"""Exactly-once bookkeeping on a local folder: work shards, commit markers and the output claim."""

from __future__ import annotations

import os

import numpy as np
import pytest

from core.storage import StorageConfig, write_bytes
from pipeline import commits
from pipeline.commits import ConfigChangedError, ShardCommit

STORAGE = StorageConfig()


def test_shard_of_is_stable_and_in_range():
    ids = np.array([f"id{i}" for i in range(1000)], dtype=object)
    shards = commits.shard_of(ids, 7)
    assert shards.min() >= 0 and shards.max() < 7 and len(set(shards.tolist())) == 7
    assert (commits.shard_of(ids[::-1], 7) == shards[::-1]).all()  # depends on the id alone


def test_committed_finds_exactly_the_markers_written(tmp_path):
    done = write_shard(tmp_path, "lookbook", 2)
    assert commits.committed(str(tmp_path), "lookbook", 4, STORAGE) == {2: done}
    assert commits.committed(str(tmp_path), "garments", 4, STORAGE) == {}


def test_claim_refuses_another_config_unless_forced_which_drops_its_commits(tmp_path):
    output = str(tmp_path)
    commits.claim(output, "aaaa", force=False, storage=STORAGE)
    commits.commit(output, "lookbook", 0, ShardCommit(rows=1), STORAGE)
    commits.claim(output, "aaaa", force=False, storage=STORAGE)  # the same config resumes
    assert set(commits.committed(output, "lookbook", 2, STORAGE)) == {0}
    with pytest.raises(ConfigChangedError, match="config hash aaaa, this run's is bbbb"):
        commits.claim(output, "bbbb", force=False, storage=STORAGE)
    assert set(commits.committed(output, "lookbook", 2, STORAGE)) == {0}  # a refusal changes nothing
    commits.claim(output, "bbbb", force=True, storage=STORAGE)
    assert commits.committed(output, "lookbook", 2, STORAGE) == {}  # every shard is redone
    with pytest.raises(ConfigChangedError):
        commits.claim(output, "aaaa", force=False, storage=STORAGE)  # the forced config now holds the folder


def write_shard(output, stage: str, shard: int, table: str = "crops") -> ShardCommit:
    """Write one file of `shard` under `table` the way the sink does, and commit it."""
    relative = f"{commits.shard_dir(table, shard)}/part-000000.parquet"
    size = write_bytes(str(output / relative), b"parquet bytes %d" % shard, STORAGE)
    done = ShardCommit(rows=1, files=[relative], sizes=[size])
    commits.commit(str(output), stage, shard, done, STORAGE)
    return done


def test_a_malformed_marker_or_a_changed_file_leaves_the_shard_to_redo(tmp_path):
    """#13, item 5: a truncated marker crashed the reader; a lost or rewritten file went unseen."""
    for shard in range(4):
        write_shard(tmp_path, "lookbook", shard)
    marker = lambda shard: tmp_path / commits.marker("", "lookbook", shard).lstrip("/")  # noqa: E731
    marker(0).write_text(marker(0).read_text()[:10])  # truncated
    marker(1).write_text('{"rows": 1, "unknown": 2}')  # not a ShardCommit
    (tmp_path / "crops" / "shard=00002" / "part-000000.parquet").write_bytes(b"rewritten, longer")
    assert set(commits.committed(str(tmp_path), "lookbook", 4, STORAGE)) == {3}
    (tmp_path / "crops" / "shard=00003" / "part-000000.parquet").unlink()
    assert commits.committed(str(tmp_path), "lookbook", 4, STORAGE) == {}


def test_readers_get_exactly_the_files_of_committed_shards(tmp_path):
    """#13, item 5: a stale shard=K folder (an earlier run with more work shards, or an uncommitted
    shard) was read by the index build and tiering, which listed the table's folder."""
    write_shard(tmp_path, "lookbook", 0)
    write_shard(tmp_path, "lookbook", 1)
    write_bytes(str(tmp_path / "crops" / "shard=00007" / "part-000000.parquet"), b"stale", STORAGE)
    write_bytes(str(tmp_path / "crops" / "shard=00001" / "part-000009.parquet"), b"half-written", STORAGE)
    done = commits.committed(str(tmp_path), "lookbook", 2, STORAGE)
    files = commits.shard_files(str(tmp_path), done, "crops")
    assert files == [str(tmp_path / f"crops/shard=0000{k}/part-000000.parquet") for k in (0, 1)]
    assert commits.shard_files(str(tmp_path), done, "quarantine/lookbook") == []


def test_local_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """#13, item 5: a crash after the rename could leave a marker naming an empty file."""
    events = []
    sync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or sync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("rename") or replace(a, b))
    write_bytes(str(tmp_path / "a" / "marker.json"), b"{}", STORAGE)
    assert events == ["fsync", "rename", "fsync"]  # the file, then its folder
    assert (tmp_path / "a" / "marker.json").read_bytes() == b"{}"


def test_sweep_keeps_exactly_the_files_a_commit_names(tmp_path):
    """What a retried write left in a shard's folder goes before the shard is committed."""
    names = ["crops/shard=00001/part-a.parquet", "crops/shard=00001/part-b.parquet", "crops/shard=00002/part-c.parquet"]
    for name in names:
        write_bytes(str(tmp_path / name), b"x", STORAGE)
    commits.sweep(str(tmp_path), "crops/shard=00001", names[:1], STORAGE)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == [names[0], names[2]]
    commits.sweep(str(tmp_path), "crops/shard=00009", [], STORAGE)  # no folder: nothing to do
