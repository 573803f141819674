"""The one place that turns URIs into filesystems: local paths and `s3://bucket/key` via pyarrow."""

from __future__ import annotations

import os
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
    `core.storage.forbidden`): `allowed_schemes` among `file` (local paths) and `s3`;
    `allowed_s3_prefixes` empty means any bucket."""

    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    model_cache: str = "~/.cache/lookbook-miner/models"
    allowed_schemes: list[str] = field(default_factory=lambda: ["file", "s3"])
    allowed_s3_prefixes: list[str] = field(default_factory=list)


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def scheme(uri: str) -> str:
    """The text before `://`, or "file" for a plain local path."""
    return uri.split("://", 1)[0] if "://" in uri else "file"


def has_user_info(uri: str) -> bool:
    """Whether the authority of `uri` carries user info (`user:secret@host`)."""
    return "://" in uri and "@" in uri.split("://", 1)[1].partition("/")[0]


def redact(uri: str) -> str:
    """`uri` with the user info of its authority, if any, shown as `***@`."""
    if not has_user_info(uri):
        return uri
    head, rest = uri.split("://", 1)
    authority, slash, path = rest.partition("/")
    return f"{head}://***@{authority.rsplit('@', 1)[1]}{slash}{path}"


def forbidden(uri: str, storage: StorageConfig) -> str:
    """Why the image uri of a manifest row may not be read, "" when it may.

    Refused: a scheme outside `storage.allowed_schemes` (a plain path is `file`), user info
    (`user:secret@`) in the authority, a `..` path segment, and an `s3://` uri under none of
    `storage.allowed_s3_prefixes` (each a folder; an empty list allows any bucket). The message
    names the uri with its user info redacted.
    """
    shown, kind = redact(uri), scheme(uri)
    if kind not in storage.allowed_schemes:
        return f"scheme {kind!r} of {shown} is not in storage.allowed_schemes {list(storage.allowed_schemes)}"
    if has_user_info(uri):
        return f"{shown} carries user info (credentials) in its authority"
    if ".." in uri.split("://", 1)[-1].split("/"):
        return f"{shown} has a '..' path segment"
    prefixes = list(storage.allowed_s3_prefixes)
    if kind == "s3" and prefixes and not any(uri.startswith(p.rstrip("/") + "/") for p in prefixes):
        return f"{shown} is under none of storage.allowed_s3_prefixes {prefixes}"
    return ""


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
    return pafs.LocalFileSystem(), str(Path(uri.removeprefix(FILE_SCHEME)).expanduser().resolve())


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


def write_table(table: pa.Table, uri: str, storage: StorageConfig) -> None:
    """Write one Parquet file atomically (see `write_bytes`)."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    write_bytes(uri, buffer.getvalue().to_pybytes(), storage)
