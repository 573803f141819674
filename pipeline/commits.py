"""Exactly-once output: deterministic work shards of the input manifests, and commit markers.

A shard's output files are written first; its marker `_commits/<stage>/shard-NNNNN.json` is
written last, in one atomic write (a rename locally, a single PUT on S3). Readers and reruns trust
the markers: a shard with a marker is done and skipped; a shard without one is cleared and redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.fs as pafs

from core.storage import StorageConfig, filesystem, join, write_bytes

COMMITS = "_commits"
RUN = "_run.json"


class ConfigChangedError(RuntimeError):
    """The output folder holds a run made with another configuration."""


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """Work shard of each id in [0, shards): blake2b of the id, so stable across runs and machines."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "big") % shards for i in ids],
        dtype=np.int32,
    )


def shard_dir(base: str, shard: int) -> str:
    return join(base, f"shard={shard:05d}")


@dataclass
class ShardCommit:
    """What one committed shard of a stage wrote: row counts and every file, relative to the output."""

    rows: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    by_value: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def marker(output: str, stage: str, shard: int) -> str:
    return join(output, COMMITS, stage, f"shard-{shard:05d}.json")


def commit(output: str, stage: str, shard: int, done: ShardCommit, storage: StorageConfig) -> None:
    write_bytes(marker(output, stage, shard), json.dumps(asdict(done), sort_keys=True).encode(), storage)


def committed(output: str, stage: str, shards: int, storage: StorageConfig) -> dict[int, ShardCommit]:
    """The committed shards of a stage, found by looking up each expected marker (no listing)."""
    found = {}
    for shard in range(shards):
        fs, path = filesystem(marker(output, stage, shard), storage)
        if fs.get_file_info(path).type == pafs.FileType.File:
            with fs.open_input_stream(path) as f:
                found[shard] = ShardCommit(**json.loads(f.read()))
    return found


def clear(uri: str, storage: StorageConfig) -> None:
    """Delete a folder and everything under it, if it exists (a shard's partial output)."""
    fs, path = filesystem(uri, storage)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def claim(output: str, config_hash: str, force: bool, storage: StorageConfig) -> None:
    """Record `config_hash` as the output folder's configuration. An existing run with another hash
    is refused (ConfigChangedError) unless `force`, which discards its commits to start over."""
    fs, path = filesystem(join(output, RUN), storage)
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as f:
            previous = json.loads(f.read())["config_hash"]
        if previous != config_hash and not force:
            raise ConfigChangedError(
                f"{output} holds a run with config hash {previous}, this run's is {config_hash}: "
                "use a new output folder, or force=true to discard the earlier run's commits"
            )
        if previous != config_hash:
            clear(join(output, COMMITS), storage)
    write_bytes(join(output, RUN), json.dumps({"config_hash": config_hash}).encode(), storage)
