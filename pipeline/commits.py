"""Exactly-once output: deterministic work shards of the input manifests, and commit markers.

A shard's output files are written first; its marker `_commits/<stage>/shard-NNNNN.json` is
written last, in one atomic write (a rename locally, a single PUT on S3). Readers and reruns trust
the markers: a shard with a marker is done and skipped; a shard without one is redone, and the
files in its folders that its new commit does not name are deleted before that commit (`sweep`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.fs as pafs

from core.storage import StorageConfig, filesystem, join, write_bytes

COMMITS = "_commits"
RUN = "_run.json"
WORK = "_work"  # the running stage's input rows by work shard (`manifests.split_shards`); stages run one at a time


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


def part_name(ids: Iterable) -> str:
    """`part-<digest of the ids>`: the file name of a batch of rows, the same when a retried task
    writes the same rows again."""
    return "part-" + hashlib.blake2b("\n".join(map(str, ids)).encode(), digest_size=8).hexdigest()


@dataclass
class ShardCommit:
    """What one committed shard of a stage wrote: row counts, and every file (relative to the
    output) with its size in bytes; and what it was made from (`inputs`)."""

    rows: int = 0
    side_rows: int = 0  # good rows written to the stage's side table (`sink.SideTable`), not among `rows`
    quarantined: dict[str, int] = field(default_factory=dict)
    by_value: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    inputs: str = ""  # digest of the shard's input rows (`manifests.split_shards`)

    def files_in(self, folder: str) -> list[str]:
        """The shard's files under `folder` (a table, or `quarantine/<stage>`), relative to the output."""
        return [f for f in self.files if f.startswith(folder.rstrip("/") + "/")]


def marker(output: str, stage: str, shard: int) -> str:
    return join(output, COMMITS, stage, f"shard-{shard:05d}.json")


def commit(output: str, stage: str, shard: int, done: ShardCommit, storage: StorageConfig) -> None:
    write_bytes(marker(output, stage, shard), json.dumps(asdict(done), sort_keys=True).encode(), storage)


def committed(output: str, stage: str, shards: int, storage: StorageConfig) -> dict[int, ShardCommit]:
    """The committed shards of a stage, found by looking up each expected marker (no listing).

    A marker counts only when it parses and every file it names exists with the size it records:
    a truncated or malformed marker, or a lost or rewritten file, leaves its shard to be redone.
    """
    found = {}
    for shard in range(shards):
        fs, path = filesystem(marker(output, stage, shard), storage)
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        with fs.open_input_stream(path) as f:
            text = f.read()
        try:
            done = ShardCommit(**json.loads(text))
        except (ValueError, TypeError):  # not JSON, or not a ShardCommit
            continue
        if _files_intact(output, done, storage):
            found[shard] = done
    return found


def _files_intact(output: str, done: ShardCommit, storage: StorageConfig) -> bool:
    if not done.files:
        return True
    if len(done.sizes) != len(done.files):
        return False
    fs, root = filesystem(output, storage)
    infos = fs.get_file_info([f"{root}/{name}" for name in done.files])
    return all(i.type == pafs.FileType.File and i.size == size for i, size in zip(infos, done.sizes))


def shard_files(output: str, done: dict[int, ShardCommit], folder: str) -> list[str]:
    """The uris of the files under `folder` of the committed shards `done` (`committed`, or what
    the stage executor returns), in shard order: what a reader of the stage's table reads (never a
    listing, which would also find the files of shards that are not committed, or of an earlier
    run with more shards)."""
    return [join(output, name) for shard in sorted(done) for name in done[shard].files_in(folder)]


def clear(uri: str, storage: StorageConfig) -> None:
    """Delete a folder and everything under it, if it exists."""
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


def sweep(output: str, folder: str, keep: list[str], storage: StorageConfig) -> None:
    """Delete the files under `output/folder` (a shard's folder) other than `keep` (relative to
    `output`): what a retried write left that the shard's commit does not name."""
    fs, root = filesystem(output, storage)
    path = f"{root}/{folder}"
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return
    kept = {f"{root}/{name}" for name in keep}
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File and info.path not in kept:
            fs.delete_file(info.path)
