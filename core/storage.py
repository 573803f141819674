"""The one place that turns URIs into filesystems: local paths and `s3://bucket/key` via pyarrow."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

S3_SCHEME = "s3://"
FILE_SCHEME = "file://"
SCHEMES = ("file", "s3")  # uri schemes this module reads ("file": local paths)


@dataclass
class StorageConfig:
    """Filesystem settings for `s3://` URIs (credentials come from the standard AWS chain, never
    from here), and the allow-list for the image uris of manifest rows (see
    `forbidden`): `allowed_schemes` among `file` (local paths) and `s3`; `allowed_s3_prefixes`
    empty means any bucket; `allowed_local_roots` (folders) empty means no local file."""

    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    model_cache: str = "~/.cache/lookbook-miner/models"
    allowed_schemes: list[str] = field(default_factory=lambda: ["file", "s3"])
    allowed_s3_prefixes: list[str] = field(default_factory=list)
    allowed_local_roots: list[str] = field(default_factory=list)


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def scheme(uri: str) -> str:
    """The text before `://`, or "file" for a plain local path."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def user_info_end(uri: str) -> int:
    """The index just past the `@` that ends the user info (credentials) of `uri`, or -1 if none.

    User info is `user@` or `user:password@` after `scheme://`. RFC 3986 ends the authority at the
    first `/`, but AWS secret keys hold `/` and are pasted unescaped, so text before the first `@`
    that holds a `:` counts too (`s3://AKIA...:wJalr/K7MDENG@bucket/run`); a key's own `@` further
    down the path (`s3://bucket/a@2x.jpg`) does not.
    """
    if "://" not in uri:
        return -1
    start = uri.index("://") + 3
    at = uri.find("@", start)
    if at < 0:
        return -1
    before = uri[start:at]
    return at + 1 if "/" not in before or ":" in before else -1


def has_user_info(uri: str) -> bool:
    """Whether `uri` carries user info (`user:secret@host`; see `user_info_end`)."""
    return user_info_end(uri) >= 0


def redact(uri: str) -> str:
    """`uri` with its user info, if any, shown as `***@`."""
    end = user_info_end(uri)
    return uri if end < 0 else f"{uri[: uri.index('://') + 3]}***@{uri[end:]}"


def forbidden(uri: str, storage: StorageConfig) -> str:
    """Why the image uri of a manifest row may not be read, "" when it may. Nothing is opened.

    Refused: a control character (a NUL byte included), a scheme outside
    `storage.allowed_schemes` (a plain path is `file`), user info (`user:secret@`), a `..` path
    segment, a `file://` uri with a host, a local path that (symlinks resolved) lies under none of
    `storage.allowed_local_roots` (an empty list allows none), and an `s3://` uri under none of
    `storage.allowed_s3_prefixes` (each a folder; an empty list allows any bucket). A refusal
    never depends on whether the file exists. The message names the uri with its user info redacted.
    """
    shown, kind = redact(uri), scheme(uri)
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return f"{shown!r} holds a control character"
    if kind not in storage.allowed_schemes:
        return f"scheme {kind!r} of {shown} is not in storage.allowed_schemes {list(storage.allowed_schemes)}"
    if has_user_info(uri):
        return f"{shown} carries user info (credentials) in its authority"
    if ".." in uri.split("://", 1)[-1].split("/"):
        return f"{shown} has a '..' path segment"
    if kind == "file":
        return _outside_local_roots(uri, storage.allowed_local_roots)
    prefixes = list(storage.allowed_s3_prefixes)
    if kind == "s3" and prefixes and not any(uri.startswith(p.rstrip("/") + "/") for p in prefixes):
        return f"{shown} is under none of storage.allowed_s3_prefixes {prefixes}"
    return ""


def _outside_local_roots(uri: str, roots: list[str]) -> str:
    """Why the local `uri` (a path or `file://` uri) is not under one of `roots`, "" when it is."""
    if uri.startswith(FILE_SCHEME) and not uri.removeprefix(FILE_SCHEME).startswith("/"):
        return f"{uri} names a host: a file:// uri must be file:///absolute/path"
    if not roots:
        return f"{uri}: storage.allowed_local_roots is empty, so no local file is read"
    path = local_path(uri)
    if not any(path.is_relative_to(local_path(root)) for root in roots):
        return f"{uri} (resolved {path}) is under none of storage.allowed_local_roots {list(roots)}"
    return ""


def local_path(uri: str) -> Path:
    """The absolute path of a local path or `file://` uri, `~` expanded and symlinks resolved."""
    return Path(uri.removeprefix(FILE_SCHEME)).expanduser().resolve()


def filesystem(uri: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, a `file://` URI or an `s3://bucket/key` URI.

    S3 credentials come from the standard AWS chain (environment, profile, instance role);
    `storage.s3_endpoint` points at a non-AWS endpoint such as a local test server.
    """
    if is_s3(uri):
        scheme = "http" if (storage.s3_endpoint or "").startswith("http://") else "https"
        endpoint = (storage.s3_endpoint or "").removeprefix("http://").removeprefix("https://") or None
        fs = pafs.S3FileSystem(region=storage.s3_region, endpoint_override=endpoint, scheme=scheme)
        return fs, uri.removeprefix(S3_SCHEME)
    if "://" in uri.removeprefix(FILE_SCHEME):
        raise ValueError(f"unsupported URI scheme in {redact(uri)!r}: use a local path, file:// or s3://bucket/key")
    return pafs.LocalFileSystem(), str(local_path(uri))


def join(base: str, *parts: str) -> str:
    """`base/part/...` for local paths and S3 URIs alike."""
    return "/".join([base.rstrip("/"), *parts])


class TooLargeError(ValueError):
    """A file holds more bytes than the limit it was read with."""


def read_bytes(uri: str, storage: StorageConfig, max_bytes: int) -> bytes:
    """The file's bytes, reading at most `max_bytes` + 1 of them whatever size the store reports.

    Raises FileNotFoundError; TooLargeError past `max_bytes`; OSError for a local path that is not
    a regular file (a FIFO, a device such as /dev/zero), checked on the opened file descriptor.
    """
    fs, path = filesystem(uri, storage)
    if isinstance(fs, pafs.LocalFileSystem):
        data = _read_regular_file(path, max_bytes + 1)
    else:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(uri)
        with fs.open_input_stream(path) as stream:
            data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLargeError(f"more than the limit of {max_bytes} bytes")
    return data


def _read_regular_file(path: str, limit: int) -> bytes:
    """Up to `limit` bytes of a local regular file (opened without blocking, so a FIFO cannot hang)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_bytes(uri: str, data: bytes, storage: StorageConfig) -> int:
    """Write a whole file and return its size; on S3 the single PUT is atomic, locally a rename of
    a file synced to disk makes it so (the folder is synced after the rename)."""
    fs, path = filesystem(uri, storage)
    fs.create_dir(os.path.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        folder = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)
    return len(data)


def fingerprint(uri: str, storage: StorageConfig) -> str:
    """`size:mtime_ns` of a file as its store reports it ("missing" when there is none): changes
    when the file is rewritten, without reading it."""
    fs, path = filesystem(uri, storage)
    info = fs.get_file_info(path)
    return "missing" if info.type == pafs.FileType.NotFound else f"{info.size}:{info.mtime_ns}"


def make_dirs(uri: str, storage: StorageConfig) -> None:
    fs, path = filesystem(uri, storage)
    fs.create_dir(path, recursive=True)


def write_table(table: pa.Table, uri: str, storage: StorageConfig) -> int:
    """Write one Parquet file atomically (see `write_bytes`); its size in bytes."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return write_bytes(uri, buffer.getvalue().to_pybytes(), storage)


def put_file(local: str, uri: str, storage: StorageConfig) -> int:
    """Move the local file `local` to `uri` (a rename of the synced file locally, an upload to S3,
    then the local file is removed) and return its size: for files too big to hold as bytes."""
    size = os.path.getsize(local)
    fs, path = filesystem(uri, storage)
    fs.create_dir(os.path.dirname(path), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        with open(local, "rb+") as f:
            os.fsync(f.fileno())
        tmp = f"{path}.tmp-{os.getpid()}"
        shutil.move(local, tmp)
        os.replace(tmp, path)
    else:
        pafs.copy_files(local, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
        os.remove(local)
    return size


def local_copy(uri: str, cache_dir: str, storage: StorageConfig) -> str:
    """A local path holding the file at `uri`: the file itself when it is local, else a copy under
    `cache_dir` (named by the uri and its size, downloaded once per machine, atomically) that
    processes can memory-map."""
    fs, path = filesystem(uri, storage)
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    size = fs.get_file_info(path).size
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{uri}|{size}".encode()).hexdigest()[:16]
    copy = folder / f"{key}-{os.path.basename(path)}"
    if not copy.exists() or copy.stat().st_size != size:
        tmp = copy.with_name(f"{copy.name}.tmp-{os.getpid()}")
        pafs.copy_files(path, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        os.replace(tmp, copy)
    return str(copy)
