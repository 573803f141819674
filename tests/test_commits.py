"""Exactly-once bookkeeping on a local folder: work shards, commit markers and the output claim."""

from __future__ import annotations

import numpy as np
import pytest

from core.storage import StorageConfig
from pipeline import commits
from pipeline.commits import ConfigChangedError, ShardCommit

STORAGE = StorageConfig()


def test_shard_of_is_stable_and_in_range():
    ids = np.array([f"id{i}" for i in range(1000)], dtype=object)
    shards = commits.shard_of(ids, 7)
    assert shards.min() >= 0 and shards.max() < 7 and len(set(shards.tolist())) == 7
    assert (commits.shard_of(ids[::-1], 7) == shards[::-1]).all()  # depends on the id alone


def test_committed_finds_exactly_the_markers_written(tmp_path):
    done = ShardCommit(rows=3, quarantined={"not_found": 1}, files=["crops/shard=00002/part-000000.parquet"])
    commits.commit(str(tmp_path), "lookbook", 2, done, STORAGE)
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
