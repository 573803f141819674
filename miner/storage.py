"""The one place that turns URIs into filesystems: local paths and `s3://bucket/key` via pyarrow."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from miner.config import StorageConfig

S3_SCHEME = "s3://"


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def filesystem(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an `s3://bucket/key` URI.

    S3 credentials come from the standard AWS chain (environment, profile, instance role);
    `storage.s3_endpoint` points at a non-AWS endpoint such as a local test server.
    """
    if is_s3(uri):
        scheme = "http" if (storage.s3_endpoint or "").startswith("http://") else "https"
        endpoint = (storage.s3_endpoint or "").removeprefix("http://").removeprefix("https://") or None
        fs = pafs.S3FileSystem(region=storage.s3_region, endpoint_override=endpoint, scheme=scheme)
        return fs, uri.removeprefix(S3_SCHEME)
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}: use a local path or s3://bucket/key")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def join(base: str, *parts: str) -> str:
    """`base/part/...` for local paths and S3 URIs alike."""
    return "/".join([base.rstrip("/"), *parts])


def read_bytes(uri: str, storage: StorageConfig, max_bytes: int) -> bytes:
    """The file's bytes. Raises FileNotFoundError, or ValueError when larger than `max_bytes`
    (checked from the file's metadata before any byte is read)."""
    fs, path = filesystem(uri, storage)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(uri)
    if info.size is not None and info.size > max_bytes:
        raise ValueError(f"{info.size} bytes exceeds the limit of {max_bytes}")
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(uri: str, data: bytes, storage: StorageConfig) -> None:
    """Write a whole file; on S3 the single PUT is atomic, locally a rename makes it so."""
    fs, path = filesystem(uri, storage)
    fs.create_dir(os.path.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


def make_dirs(uri: str, storage: StorageConfig) -> None:
    fs, path = filesystem(uri, storage)
    fs.create_dir(path, recursive=True)


def list_files(uri: str, storage: StorageConfig, suffix: str) -> list[str]:
    """Sorted URIs of the files under `uri` (recursively) whose names end with `suffix`."""
    fs, path = filesystem(uri, storage)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    prefix = S3_SCHEME if is_s3(uri) else ""
    return sorted(prefix + i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))
