"""Search for the review app's search page: a picture (a drawn sketch or an uploaded image, as
bytes) and/or a text against the run's index (`quality.search`), and the images of the results.

The run's embedder, query fusion and index shards are loaded at the first search and kept. Images
are named by a crop the app has returned and a role, never by a uri: only the lookbook images and
paired garments of the last `MAX_SERVED` crops returned can be fetched.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from core.config import run_config
from core.images import decode
from core.schemas import INDEX_DIR
from core.storage import StorageConfig
from quality.search import QueryError, RunSearcher, query_pixels

MAX_SERVED = 4096  # result crops whose images may be fetched
MAX_K = 100
ROLES = ("lookbook", "garment")


class SearchUnavailable(Exception):
    """The run has no config.yaml or no index to search."""


def picture_bytes(data_url: str, max_bytes: int) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URL (or bare base64). QueryError when it is not
    base64 or decodes to more than `max_bytes`."""
    encoded = data_url.partition(",")[2] if data_url.startswith("data:") else data_url
    if len(encoded) > (max_bytes // 3 + 1) * 4:
        raise QueryError(f"the picture is larger than the limit of {max_bytes} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QueryError(f"the picture is not base64: {exc}") from exc


class SearchService:
    """The run at `run_dir`, searched with its own config and embedder; images are read with
    `storage` (the review's allow-list)."""

    def __init__(self, run_dir: str | Path, storage: StorageConfig):
        folder = Path(run_dir)
        if not (folder / "config.yaml").is_file() or not (folder / INDEX_DIR).is_dir():
            raise SearchUnavailable(f"{run_dir} has no config.yaml or no {INDEX_DIR}/ to search")
        self.cfg = replace(run_config(str(folder)), storage=storage)
        self.searcher = RunSearcher(self.cfg, MAX_K)
        self.served: OrderedDict[str, dict] = OrderedDict()

    def search(self, picture: str | None, text: str, k: int) -> list[dict]:
        """The top-k crops (`RunSearcher.found` rows, JSON-ready) for the picture (a data URL)
        and/or the text. QueryError for an empty query, a picture that does not decode, or k
        outside 1..MAX_K."""
        if not 1 <= k <= MAX_K:
            raise QueryError(f"k is 1 to {MAX_K}")
        pictures = []
        if picture:
            shot = decode(picture_bytes(picture, self.cfg.decode.max_bytes), self.cfg.decode)
            pictures.append(query_pixels(shot, "the picture"))
        vectors = self.searcher.query_vectors(pictures, text.strip() or None)
        rows = self.searcher.found(*vectors, k).to_pylist()
        for row in rows:
            self.served[row["crop_id"]] = row
            self.served.move_to_end(row["crop_id"])
        while len(self.served) > MAX_SERVED:
            self.served.popitem(last=False)
        return rows

    def image_source(self, crop_id: str, role: str) -> tuple[str, list[float] | None]:
        """(uri, box or None) of a served crop's lookbook image or paired garment. KeyError when
        the crop was not returned or has no paired garment."""
        row = self.served[crop_id]
        if role == "lookbook":
            return row["image_uri"], row["box"]
        if not row["garment_uri"]:
            raise KeyError(crop_id)
        return row["garment_uri"], None
