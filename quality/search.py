"""Search a mined run's index with an image, a text, a sketch, or a sketch plus a text: the top-k
lookbook crops with their scores, and the garments the run paired with them.

The query is one unit vector in the run's SigLIP space: an image's or a sketch's image embedding
(one vision tower for both; several are averaged), a text's text embedding, or for a sketch (or
image) plus a text their fusion (`core.fusion`: `search.fusion` trained by jobs.train_fusion, else
the weighted mean by `search.vision_weight`). The index shards are searched one after another, each memory-mapped
(`actors.scorer.IndexShardSearcher`, the scoring stage's path), and their top-k merged exactly;
`RunSearcher` opens them once and keeps them for every later query.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from actors.decoder import read_decoded
from actors.embedder import SiglipModelWrapper
from actors.scorer import IndexShardSearcher
from core import index as shard_index
from core.candidates import Candidates
from core.config import MineConfig, ModelSpec
from core.fusion import PROBE_TEXT, Fusion, unit
from core.images import Decoded
from core.models import resolve
from core.schemas import INDEX_DIR, PAIRS_DIR
from core.storage import filesystem, join

PAIRED_COLUMNS = ["crop_id", "garment_id", "garment_uri", "tier", "score"]  # of the run's pairs


class QueryError(ValueError):
    """A query with nothing to search by, or an image that cannot be decoded."""


@dataclass(frozen=True)
class Query:
    """What to search by: an image and/or a sketch (uris) and/or a text; at least one."""

    image: str | None = None
    sketch: str | None = None
    text: str | None = None

    @property
    def kind(self) -> str:
        """e.g. `sketch+text`: the parts given, in the order image, sketch, text."""
        return "+".join(name for name in ("image", "sketch", "text") if getattr(self, name))


def query_fusion(cfg: MineConfig, siglip: SiglipModelWrapper) -> Fusion:
    """`search.fusion` loaded (a projection trained by jobs.train_fusion), else the weighted mean
    with `search.vision_weight`. Raises QueryError when it was trained for another embedder than
    `siglip` (another size, or its probe text embedded elsewhere: `Fusion.fits`)."""
    if not cfg.search.fusion:
        return Fusion.weighted_mean(siglip.dim, cfg.search.vision_weight)
    fusion = Fusion.load(resolve("fusion", ModelSpec(spec=cfg.search.fusion), cfg.storage, hub=False))
    if fusion.dim != siglip.dim:
        raise QueryError(
            f"search.fusion {cfg.search.fusion} fuses {fusion.dim}-d embeddings, the embedder's are {siglip.dim}-d"
        )
    if not fusion.fits(siglip.embed_texts([PROBE_TEXT])[0]):
        raise QueryError(
            f"search.fusion {cfg.search.fusion} was trained on another embedder than {cfg.embedder.model.spec}: "
            "train one on it (python -m jobs.train_fusion embedder=...)"
        )
    return fusion


def read_pictures(query: Query, cfg: MineConfig) -> list[np.ndarray]:
    """The query's image and sketch (those given), read and decoded as lookbook images are: within
    the run's uri allow-list and decode limits. QueryError says why one could not be."""
    pictures = []
    for uri in (query.image, query.sketch):
        if uri:
            pictures.append(query_pixels(read_decoded("query", uri, cfg.decode, cfg.storage), uri))
    return pictures


def query_pixels(shot: Decoded, what: str) -> np.ndarray:
    """The pixels of a decoded query picture; QueryError naming `what` and the reason when it has none."""
    if shot.reason:
        raise QueryError(f"{what}: {shot.reason}: {shot.error}")
    return shot.pixels


def paired(cfg: MineConfig, crop_ids: list[str]) -> dict[str, dict]:
    """crop_id -> the run's pair (garment_id, garment_uri, tier, score) of the crops among
    `crop_ids` that are some garment's best match (a filtered scan of the pairs' columns)."""
    fs, path = filesystem(join(cfg.output, PAIRS_DIR), cfg.storage)
    pairs = pads.dataset(path, filesystem=fs, format="parquet", partitioning=None)
    table = pairs.to_table(columns=PAIRED_COLUMNS, filter=pc.field("crop_id").isin(crop_ids))
    out: dict[str, dict] = {}
    for row in table.sort_by([("score", "descending")]).to_pylist():
        out.setdefault(row["crop_id"], row)  # a crop several garments chose: the best-scored pair
    return out


class RunSearcher:
    """Searches the mined run of `cfg`. Its embedder, its query fusion and its index shards are
    loaded at first use and kept: each shard is checksummed and memory-mapped once, so a long-lived
    service (the review app) pays for them once, not per query. `max_k`: the most crops a search is
    to return (an index moved to a GPU is set up for it)."""

    def __init__(self, cfg: MineConfig, max_k: int):
        self.cfg, self.max_k = cfg, max_k

    @cached_property
    def siglip(self) -> SiglipModelWrapper:
        return SiglipModelWrapper(self.cfg.embedder, self.cfg.storage)

    @cached_property
    def fusion(self) -> Fusion:
        return query_fusion(self.cfg, self.siglip)

    @cached_property
    def shards(self) -> list[IndexShardSearcher]:
        index_dir = join(self.cfg.output, INDEX_DIR)
        count = len(shard_index.load_manifest(index_dir, self.cfg.storage).shards)
        return [IndexShardSearcher(index_dir, s, self.cfg.index, self.cfg.storage, self.max_k) for s in range(count)]

    def search(self, query: Query, k: int) -> pa.Table:
        """The top-k crops for `query` (`found`); its pictures read as `read_pictures` reads them."""
        return self.found(*self.query_vectors(read_pictures(query, self.cfg), query.text), k)

    def query_vectors(self, pictures: list[np.ndarray], text: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The (dim,) unit query vector of `pictures` (RGB arrays; their embeddings averaged) and/or
        `text` (see the module docstring), and the text's embedding (None without a text)."""
        if not pictures and not text:
            raise QueryError("a query needs an image, a sketch or a text")
        vision = unit(self.siglip.embed_images(pictures).mean(axis=0)) if pictures else None
        text_vector = self.siglip.embed_texts([text])[0] if text else None
        if vision is None or text_vector is None:
            return (text_vector if vision is None else vision), text_vector
        return self.fusion(vision, text_vector), text_vector

    def searched(self, vector: np.ndarray, text: np.ndarray | None, k: int) -> Candidates:
        """The run's top-k crops by cosine with `vector` over every index shard, merged exactly; their
        S_VLM is the cosine of `text` (the query's text embedding, else `vector`) with the crops' captions."""
        image, caption = vector[None, :], (vector if text is None else text)[None, :]
        found = Candidates.none(1, k)
        for shard in self.shards:
            found = found.merged(shard.candidates(image, caption, k), k)
        return found

    def found(self, vector: np.ndarray, text: np.ndarray | None, k: int) -> pa.Table:
        """The top-k crops for the query `vector` (and its `text` embedding), best first: rank,
        crop_id, image_id, image_uri, box, score (cosine with the query vector), s_vlm (the query text,
        or vector, against the crop's caption), and the garment paired with the crop (garment_id,
        garment_uri, tier; null when no garment chose it)."""
        shortlist = self.searched(vector, text, k)
        valid = shortlist.ids[0] >= 0
        crop_ids = [c for c, ok in zip(shortlist.crop_ids[0], valid) if ok]
        pairs = paired(self.cfg, crop_ids)
        pair = [pairs.get(c, {}) for c in crop_ids]
        return pa.table(
            {
                "rank": pa.array(np.arange(1, len(crop_ids) + 1), pa.int32()),
                "crop_id": crop_ids,
                "image_id": shortlist.image_ids[0][valid].tolist(),
                "image_uri": shortlist.image_uris[0][valid].tolist(),
                "box": pa.array([b.tolist() for b in shortlist.boxes[0][valid]], pa.list_(pa.float32(), 4)),
                "score": pa.array(shortlist.s_siglip[0][valid], pa.float32()),
                "s_vlm": pa.array(shortlist.s_vlm[0][valid], pa.float32()),
                "garment_id": [p.get("garment_id") for p in pair],
                "garment_uri": [p.get("garment_uri") for p in pair],
                "tier": [p.get("tier") for p in pair],
            }
        )
