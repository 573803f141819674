"""What a review app serves: the run's strata and random sample, the queue it walks, its labels.

Built once per app from the run's narrow population (`review.pairs`); the display rows of the
queue's pairs only are read in full. Decisions go to the `ReviewStore`; progress and the precision
estimates are computed from the store on every call, so several app processes over one database
agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.config import DecodeConfig
from core.storage import StorageConfig
from core.tiering import tier_key
from review import sampling
from review.pairs import read_crop_notes, read_population, read_rows, run_limits, run_tier_key
from review.store import CLAIM_TTL_S, Decision, PairKey, ReviewStore

ROLES = ("garment", "lookbook")
NUMBERS = ("score", "s_vlm", "s_siglip", "margin", "crop_margin", "confidence")  # a served pair's numbers
UNCERTAIN_BY = ("tier_key", "score", "margin", "crop_margin", "confidence")  # what uncertain-high sorts by, ascending


@dataclass
class ReviewSettings:
    """How the app picks pairs and shows them.

    order        `stratified` (the random sample, strata interleaved) or `uncertain-high` (the
                 `limit` high-tier pairs lowest by `uncertain_by`: `tier_key`, the value the run
                 tiered by (`tiers.key`: S, or S plus the crop margin), so the pairs nearest the
                 high tier's cut; or `score`, `margin`, `crop_margin`, the calibrated `confidence`;
                 NaN last)
    per_stratum  pairs drawn per tier x score band; `bands` equal-count score bands per tier
    seed         the sample's seed: the same seed, bands and per_stratum give the same sample
    storage, decode  allow-list and limits for reading images; None takes the run's config.yaml
    max_side     px of the longest side of a served image
    allowed_hosts    Host headers the app answers (a DNS-rebinding guard); "*" for any
    """

    order: str = sampling.STRATIFIED
    per_stratum: int = 25
    bands: int = 4
    seed: int = 0
    limit: int = 200
    uncertain_by: str = "tier_key"
    claim_ttl_s: float = CLAIM_TTL_S
    storage: StorageConfig | None = None
    decode: DecodeConfig | None = None
    max_side: int = 720
    reviewer: str = ""
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])

    def __post_init__(self) -> None:
        if self.order not in sampling.ORDERS:
            raise ValueError(f"order must be one of {sampling.ORDERS}, got {self.order!r}")
        if self.uncertain_by not in UNCERTAIN_BY:
            raise ValueError(f"uncertain_by must be one of {UNCERTAIN_BY}, got {self.uncertain_by!r}")


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


class ReviewQueue:
    """The sample and queue of one run under `settings`, with decisions in `store`."""

    def __init__(self, run: str | Path, store: ReviewStore, settings: ReviewSettings):
        self.run, self.store, self.settings = Path(run), store, settings
        storage, decode = run_limits(run)
        self.storage = settings.storage or storage
        self.decode = settings.decode or decode
        pop = self.population = read_population(run)
        self.strata, self.stratum_of = sampling.assign_strata(pop.tier, pop.score, settings.bands)
        draws = sampling.stratified_sample(self.stratum_of, len(self.strata), settings.per_stratum, settings.seed)
        self.sample: dict[PairKey, int] = {pop.key(r): int(r) for r in sampling.interleave(draws)}
        if settings.order == sampling.STRATIFIED:
            rows = list(self.sample.values())
        else:
            key = self._uncertainty_key()
            rows = [int(r) for r in sampling.uncertain_high(pop.tier, key, settings.limit)]
        self.queue: list[PairKey] = [pop.key(r) for r in rows]
        self.row_of: dict[PairKey, int] = dict(zip(self.queue, rows))
        self.position: dict[PairKey, int] = {key: i + 1 for i, key in enumerate(self.queue)}
        self.by_garment: dict[str, PairKey] = {key[0]: key for key in self.queue}
        self.rows = read_rows(run, self.by_garment)
        self.notes = read_crop_notes(run, (key[1] for key in self.queue))

    def _uncertainty_key(self) -> np.ndarray:
        """Per population row, the value uncertain-high sorts by (`ReviewSettings.uncertain_by`)."""
        pop, name = self.population, self.settings.uncertain_by
        if name == "tier_key":
            return tier_key(pop.score, pop.crop_margin, run_tier_key(self.run))
        return getattr(pop, name)

    def stratum(self, key: PairKey) -> str:
        """What a decision on `key` records as its stratum (see `review.store`)."""
        if key in self.sample:
            return self.strata[self.stratum_of[self.sample[key]]].name
        return self.settings.order

    def pair(self, key: PairKey) -> dict:
        """The JSON the page shows for `key`, a pair of the queue."""
        row, notes = self.rows[key[0]], self.notes.get(key[1], {})
        h = self.stratum_of[self.row_of[key]]
        return {
            "garment_id": key[0],
            "crop_id": key[1],
            "image_id": row["image_id"],
            "tier": row["tier"],
            "stratum": self.strata[h].name if h >= 0 else "",
            "in_sample": key in self.sample,
            "position": self.position[key],
            **{name: _number(row[name]) for name in NUMBERS},
            "n_candidates": row["n_candidates"],
            "box": row["box"],
            "garment_caption": row["garment_caption"] or "",
            "crop_caption": notes.get("caption") or "",
            "attributes": {k: v for k, v in notes.items() if k not in ("crop_id", "caption") and v},
        }

    def next_for(self, reviewer: str) -> dict | None:
        """The pair to show `reviewer` (claimed for them), or None when the queue has none left for them."""
        key = self.store.claim_next(reviewer, self.queue)
        return None if key is None else self.pair(key)

    def decide(self, reviewer: str, key: PairKey, decision: str) -> Decision:
        """Record `decision` on `key`; KeyError when `key` is not a pair of the queue."""
        row = self.rows[key[0]] if key in self.row_of else None
        if row is None:
            raise KeyError(key)
        return self.store.decide(
            reviewer,
            key,
            decision,
            image_id=row["image_id"],
            stratum=self.stratum(key),
            queue=self.settings.order,
            tier=row["tier"],
            score=_number(row["score"]),
        )

    def image_source(self, garment_id: str, role: str) -> tuple[str, list[float] | None]:
        """(uri, box or None) of the garment's or the lookbook image of a queued pair: the only uris the
        app reads. KeyError for anything else."""
        if role not in ROLES or garment_id not in self.by_garment:
            raise KeyError((garment_id, role))
        row = self.rows[garment_id]
        return (row["garment_uri"], None) if role == "garment" else (row["image_uri"], row["box"])

    def progress(self, reviewer: str = "") -> dict:
        """Queue progress, live skips, per-reviewer counts and the per-tier precision estimates."""
        labels, skipped = self.store.labels(), self.store.skipped()
        n = np.zeros(len(self.strata), dtype=np.int64)
        accepted = np.zeros(len(self.strata), dtype=np.int64)
        for key, row in self.sample.items():
            if key in labels:
                h = self.stratum_of[row]
                n[h] += 1
                accepted[h] += labels[key]
        estimates = []
        for tier in sampling.TIER_ORDER:
            members = [h for h, s in enumerate(self.strata) if s.tier == tier]
            if members:
                sizes = [self.strata[h].size for h in members]
                estimate = sampling.stratified_estimate(sizes, accepted[members], n[members])
                estimates.append({"tier": tier, **estimate.as_dict()})
        counts = self.store.reviewer_counts()
        return {
            "run": self.run.name,
            "order": self.settings.order,
            "queue_size": len(self.queue),
            "reviewed": sum(key in labels for key in self.queue),
            "skipped": sum(key in skipped and key not in labels for key in self.queue),
            "sample_size": len(self.sample),
            "sample_reviewed": int(n.sum()),
            "population": len(self.population),
            "mine": counts.get(reviewer, 0),
            "reviewers": counts,
            "estimates": estimates,
        }
