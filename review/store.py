"""Review decisions in SQLite: append-only, safe for several reviewers (and app processes) at once.

Tables (created on first use; `PRAGMA user_version` = SCHEMA_VERSION):

  decisions  id INTEGER PRIMARY KEY AUTOINCREMENT (the order decisions were made in),
             garment_id, crop_id (together the pair key), image_id,
             decision 'accept' | 'reject' | 'skip', reviewer, decided_at (UTC ISO 8601, microseconds),
             stratum (the pair's "<tier>/<band>" when it is in the app's stratified random sample,
             else the queue that chose it, "uncertain-high": such a label is not a random draw),
             queue ('stratified' | 'uncertain-high'), tier, score,
             undone_at (NULL; the UTC time the reviewer undid it: rows are never deleted)
  claims     garment_id, crop_id (primary key), reviewer, claimed_at (UTC ISO), expires_at (epoch s):
             the pair a reviewer is shown; nobody else is served it until the claim expires

A pair's label is its latest live (undone_at NULL) accept or reject, whoever made it; skips are
not labels. Every connection is opened per call (one per request thread), in WAL mode with
synchronous=FULL and a 30 s busy timeout; every write is one `BEGIN IMMEDIATE` transaction, so
claims are exclusive and no decision is lost to a concurrent one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

SCHEMA_VERSION = 1
DECISIONS = ("accept", "reject", "skip")
LABELS = ("accept", "reject")
CLAIM_TTL_S = 600.0  # a reviewer who walks away frees their pair after 10 minutes

PairKey = tuple[str, str]  # (garment_id, crop_id)

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    garment_id TEXT NOT NULL,
    crop_id TEXT NOT NULL,
    image_id TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'skip')),
    reviewer TEXT NOT NULL,
    decided_at TEXT NOT NULL,
    stratum TEXT NOT NULL,
    queue TEXT NOT NULL,
    tier TEXT,
    score REAL,
    undone_at TEXT
);
CREATE INDEX IF NOT EXISTS decisions_pair ON decisions (garment_id, crop_id);
CREATE INDEX IF NOT EXISTS decisions_reviewer ON decisions (reviewer, id);
CREATE TABLE IF NOT EXISTS claims (
    garment_id TEXT NOT NULL,
    crop_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (garment_id, crop_id)
);
CREATE INDEX IF NOT EXISTS claims_reviewer ON claims (reviewer);
"""

SKIPS = "SELECT garment_id, crop_id FROM decisions WHERE undone_at IS NULL AND decision = 'skip'"

# The latest live accept/reject of each pair (the label), as columns of LABELS_SCHEMA.
LABELS_QUERY = """
SELECT garment_id, crop_id, image_id, decision = 'accept', stratum, tier, score, reviewer, decided_at
FROM decisions
WHERE id IN (
    SELECT MAX(id) FROM decisions
    WHERE undone_at IS NULL AND decision IN ('accept', 'reject')
    GROUP BY garment_id, crop_id
)
ORDER BY garment_id, crop_id
"""

LABELS_SCHEMA = pa.schema(
    [
        ("garment_id", pa.string()),
        ("crop_id", pa.string()),
        ("image_id", pa.string()),
        ("verified", pa.bool_()),
        ("stratum", pa.string()),
        ("tier", pa.string()),
        ("score", pa.float32()),
        ("reviewer", pa.string()),
        ("decided_at", pa.string()),
    ]
)


def utc_iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Decision:
    """One row of `decisions`."""

    id: int
    garment_id: str
    crop_id: str
    image_id: str | None
    decision: str
    reviewer: str
    decided_at: str
    stratum: str
    queue: str
    tier: str | None
    score: float | None
    undone_at: str | None

    @property
    def key(self) -> PairKey:
        return self.garment_id, self.crop_id


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class ReviewStore:
    """The decisions and claims at `path` (created with its tables if missing). Stateless apart
    from the path: safe to share between threads and to open from several processes. `clock`
    (epoch seconds) is injectable for tests of claim expiry."""

    def __init__(self, path: str | Path, claim_ttl_s: float = CLAIM_TTL_S, clock: Callable[[], float] = time.time):
        self.path, self.claim_ttl_s, self.clock = Path(path), claim_ttl_s, clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(connect(self.path)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            with _transaction(conn):
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with closing(connect(self.path)) as conn, _transaction(conn):
            yield conn

    def claim_next(self, reviewer: str, queue: Sequence[PairKey]) -> PairKey | None:
        """The pair `reviewer` is to see, claimed for them (their other claims dropped), or None when
        `queue` has nothing left for them. Their live claim on a pending pair of `queue` is kept
        (a reload shows the same pair); otherwise the first pair of `queue` that has no label, that
        they have not skipped, and that nobody else holds a live claim on."""
        now = self.clock()
        with self._write() as conn:
            conn.execute("DELETE FROM claims WHERE expires_at <= ?", (now,))
            labelled = _keys(
                conn, "SELECT garment_id, crop_id FROM decisions WHERE undone_at IS NULL AND decision != 'skip'"
            )
            skipped = _keys(conn, f"{SKIPS} AND reviewer = ?", (reviewer,))
            mine = _keys(conn, "SELECT garment_id, crop_id FROM claims WHERE reviewer = ?", (reviewer,))
            others = _keys(conn, "SELECT garment_id, crop_id FROM claims WHERE reviewer != ?", (reviewer,))
            unavailable = labelled | skipped | others
            pending = [key for key in queue if key not in unavailable]
            chosen = next((key for key in pending if key in mine), pending[0] if pending else None)
            conn.execute("DELETE FROM claims WHERE reviewer = ?", (reviewer,))
            if chosen is not None:
                conn.execute(
                    "INSERT INTO claims VALUES (?, ?, ?, ?, ?)",
                    (*chosen, reviewer, utc_iso(now), now + self.claim_ttl_s),
                )
            return chosen

    def decide(
        self,
        reviewer: str,
        key: PairKey,
        decision: str,
        *,
        image_id: str | None,
        stratum: str,
        queue: str,
        tier: str | None,
        score: float | None,
    ) -> Decision:
        """Append `reviewer`'s decision on the pair `key` and release their claim on it. Recorded
        whatever else happened to the pair meanwhile (another reviewer's label included)."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        now = self.clock()
        row = (*key, image_id, decision, reviewer, utc_iso(now), stratum, queue, tier, score)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO decisions (garment_id, crop_id, image_id, decision, reviewer, decided_at, stratum,"
                " queue, tier, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute("DELETE FROM claims WHERE reviewer = ? AND garment_id = ? AND crop_id = ?", (reviewer, *key))
        return Decision(cursor.lastrowid, *row, None)

    def undo(self, reviewer: str) -> Decision | None:
        """Mark `reviewer`'s latest live decision undone (None if they have none) and claim its pair for
        them unless someone else holds it, so it is what they see next. Repeated, it walks back."""
        now = self.clock()
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM decisions WHERE reviewer = ? AND undone_at IS NULL ORDER BY id DESC LIMIT 1",
                (reviewer,),
            ).fetchone()
            if row is None:
                return None
            decision = Decision(*row[:-1], utc_iso(now))
            conn.execute("UPDATE decisions SET undone_at = ? WHERE id = ?", (decision.undone_at, decision.id))
            conn.execute("DELETE FROM claims WHERE expires_at <= ?", (now,))
            held = conn.execute(
                "SELECT reviewer FROM claims WHERE garment_id = ? AND crop_id = ?", decision.key
            ).fetchone()
            if held is None or held[0] == reviewer:
                conn.execute("DELETE FROM claims WHERE reviewer = ?", (reviewer,))
                conn.execute(
                    "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                    (*decision.key, reviewer, utc_iso(now), now + self.claim_ttl_s),
                )
            return decision

    def labels(self) -> dict[PairKey, bool]:
        """Every labelled pair: True for accept, False for reject (its latest live accept/reject)."""
        with closing(connect(self.path)) as conn:
            return {(g, c): bool(v) for g, c, _, v, *_ in conn.execute(LABELS_QUERY)}

    def skipped(self) -> set[PairKey]:
        """Pairs with a live skip (by anyone)."""
        with closing(connect(self.path)) as conn:
            return _keys(
                conn, "SELECT garment_id, crop_id FROM decisions WHERE undone_at IS NULL AND decision = 'skip'"
            )

    def decisions(self) -> list[Decision]:
        """Every row of `decisions`, in id order (undone ones included)."""
        with closing(connect(self.path)) as conn:
            return [Decision(*row) for row in conn.execute("SELECT * FROM decisions ORDER BY id")]

    def reviewer_counts(self) -> dict[str, int]:
        """Live decisions per reviewer (skips included)."""
        with closing(connect(self.path)) as conn:
            rows = conn.execute("SELECT reviewer, COUNT(*) FROM decisions WHERE undone_at IS NULL GROUP BY reviewer")
            return dict(rows.fetchall())


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock up front, so read-then-write cannot interleave), then COMMIT,
    or ROLLBACK on an exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _keys(conn: sqlite3.Connection, query: str, args: tuple = ()) -> set[PairKey]:
    return {(g, c) for g, c in conn.execute(query, args)}


def read_labels(db_path: str | Path) -> pa.Table:
    """The labels of a review database as LABELS_SCHEMA, one row per labelled pair, sorted by
    (garment_id, crop_id): `verified` is True for accept, False for reject, from the pair's latest
    live (not undone) accept or reject across reviewers; `reviewer`, `decided_at`, `stratum`, `tier`
    and `score` are that decision's. Skips are not labels. A missing database gives no rows."""
    path = Path(db_path)
    if not path.is_file():
        return LABELS_SCHEMA.empty_table()
    with closing(connect(path)) as conn:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions'").fetchone()
        rows = conn.execute(LABELS_QUERY).fetchall() if exists else []
    columns = [list(column) for column in zip(*rows)] if rows else [[] for _ in LABELS_SCHEMA]
    columns[3] = [bool(v) for v in columns[3]]  # SQLite's 0/1 of `decision = 'accept'`
    return pa.table([pa.array(c, f.type) for f, c in zip(LABELS_SCHEMA, columns)], schema=LABELS_SCHEMA)
