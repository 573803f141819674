"""Fashion-MNIST (Zalando, MIT licence) as Debian's ``dataset-fashion-mnist`` installs it: gzipped IDX files.

    /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

train: 60,000 items, t10k: 10,000 items (disjoint); each a 28x28 uint8 grey image, 0 = background,
with a label 0..9 in LABELS order.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FILE_PREFIX = {"train": "train", "test": "t10k"}  # split -> file name prefix
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file, gzipped if the name ends in .gz: magic bytes 0, 0, type code, rank, then
    rank big-endian uint32 sizes, then the values in C order. ValueError on a malformed header or size."""
    path = Path(path)
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (header {data[:4]!r})")
    rank = data[3]
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", rank, offset=4))
    values = np.frombuffer(data, _IDX_DTYPES[data[2]], offset=4 + 4 * rank)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {values.size} values")
    return values.reshape(shape).astype(values.dtype.newbyteorder("="))


@lru_cache(maxsize=2)
def load_split(split: str, folder: str | Path = FMNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 28, 28) uint8, labels (n,) uint8) of ``split`` (``train`` or ``test``, the t10k file),
    read-only and cached per (split, folder).

    FileNotFoundError naming the fix when the files are missing.
    """
    prefix = Path(folder) / FILE_PREFIX[split]
    paths = [Path(f"{prefix}-images-idx3-ubyte.gz"), Path(f"{prefix}-labels-idx1-ubyte.gz")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: Fashion-MNIST comes from Debian's dataset-fashion-mnist package; "
                "run `make env` (as root) or `apt-get install dataset-fashion-mnist`"
            )
    images, labels = (read_idx(path) for path in paths)
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(f"{prefix}: images {images.shape} and labels {labels.shape} do not pair up")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
