"""The review tool without a browser: sampling and the precision estimator (exact values, unbiasedness),
the SQLite store (claims, undo, concurrent reviewers), the export, and the HTTP API's edge cases."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import VOCAB_PATH
from core.data_card import CARD
from core.schemas import PAIRS
from core.storage import StorageConfig
from core.vocab import ATTRIBUTES, load_vocab
from datagen.synthetic import make_sample
from jobs import review as review_job
from quality.evaluation import wilson_interval
from review import sampling
from review.app import create_app
from review.export import export, labelled_pairs
from review.pairs import read_population
from review.queue import ReviewQueue, ReviewSettings
from review.store import LABELS_SCHEMA, ReviewStore, read_labels

TIER_SIZES = {"high": 8, "mid": 8, "low": 4, "unmatched": 4}


def make_run(root: Path, seed: int = 3) -> Path:
    """A run folder as the job writes it, small: pairs/ (PAIRS schema) over a synthetic sample's real
    images, crops/ (captions and attributes only), no config.yaml. 25 garments: 24 with a match (most
    the garment's true scene and box), tiered by score rank into TIER_SIZES, and one without a
    candidate (null crop, unmatched), which the review leaves out."""
    n = sum(TIER_SIZES.values())
    sample = make_sample(root / "sample", n_garments=n + 1, n_scenes=12, seed=seed, vocab=load_vocab(VOCAB_PATH))
    truth = pq.read_table(sample.truth_path).to_pylist()
    garments = pq.read_table(sample.garments_path).to_pylist()
    scenes = [r for r in pq.read_table(sample.lookbook_path).to_pylist() if r["image_id"] not in sample.bad_ids]
    rng = np.random.default_rng(seed)
    rows, crops = [], []
    for index, garment in enumerate(garments[:n]):
        placed = [t for t in truth if t["garment_id"] == garment["garment_id"]]
        if placed and rng.random() < 0.8:
            place, score = placed[0], 0.7 + 0.3 * rng.random()
            scene = next(s for s in scenes if s["image_id"] == place["image_id"])
            box = [place["x0"], place["y0"], place["x1"], place["y1"]]
        else:
            scene, score = scenes[int(rng.integers(len(scenes)))], 0.4 + 0.4 * rng.random()
            x0, y0 = float(rng.integers(0, 300)), float(rng.integers(0, 200))
            box = [x0, y0, x0 + 160.0, y0 + 200.0]
        crop_id = f"{scene['image_id']}:{index}"  # the crop's caption and attributes are the garment's
        s_vlm, s_siglip = float(score + 0.02), float(score - 0.02)
        rows.append(
            {
                **{
                    "garment_id": garment["garment_id"],
                    "garment_uri": garment["uri"],
                    "garment_caption": garment["text"],
                },
                **{"image_id": scene["image_id"], "image_uri": scene["uri"], "crop_id": crop_id, "box": box},
                **{"s_vlm": s_vlm, "s_siglip": s_siglip, "score": float(score), "margin": float(rng.random() / 10)},
                **{"n_candidates": 1, "candidate_crop_ids": [crop_id], "candidate_image_ids": [scene["image_id"]]},
                **{"candidate_s_vlm": [s_vlm], "candidate_s_siglip": [s_siglip], "confidence": None},
            }
        )
        crops.append({"crop_id": crop_id, "image_id": scene["image_id"], "caption": garment["text"],
                      **{name: garment[name] for name in ATTRIBUTES}})  # fmt: skip
    rows.sort(key=lambda r: -r["score"])
    tiers = [t for t, size in TIER_SIZES.items() for _ in range(size)]
    for row, tier in zip(rows, tiers):
        row["tier"] = tier
    empty = garments[n]
    rows.append({"garment_id": empty["garment_id"], "garment_uri": empty["uri"], "garment_caption": empty["text"],
                 "n_candidates": 0, "tier": "unmatched"})  # fmt: skip
    run = root / "run"
    (run / "pairs" / "shard=00000").mkdir(parents=True)
    (run / "crops" / "shard=00000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS), run / "pairs" / "shard=00000" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(crops), run / "crops" / "shard=00000" / "part-00000.parquet")
    models = {"embedder": {"spec": "models/siglip-fashion", "sha256": "", "note": ""}}
    summary = {"config_hash": "0123456789abcdef", "models": models, "tiers": {**TIER_SIZES, "unmatched": 5}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def allowing(root: Path, **kwargs) -> ReviewSettings:
    """Settings that let the app read the images under `root` (the run has no config.yaml)."""
    return ReviewSettings(storage=StorageConfig(allowed_local_roots=[str(root.resolve())]), **kwargs)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("review"))


# --- sampling -------------------------------------------------------------------------------------------


def test_bands_are_equal_count_score_quantiles_within_each_tier():
    tiers = np.array(["high"] * 6 + ["low"] * 3 + ["other"], dtype=object)
    scores = np.array([0.9, 0.5, 0.7, 0.7, 0.8, np.nan, 0.1, 0.3, 0.2, 0.0])
    strata, of = sampling.assign_strata(tiers, scores, bands=4)
    # high: 6 pairs in 4 bands of ranks [0,2), [2,3), [3,5), [5,6) by (score, row); NaN ranks lowest
    assert [(s.name, s.size) for s in strata] == [("high/0", 2), ("high/1", 1), ("high/2", 2), ("high/3", 1),
                                                  ("low/0", 1), ("low/1", 1), ("low/2", 1)]  # fmt: skip
    assert of.tolist() == [3, 0, 1, 2, 2, 0, 4, 6, 5, -1]  # tied 0.7s keep row order across the band edge
    assert (strata[2].score_min, strata[2].score_max) == (0.7, 0.8)
    assert strata[0].score_min == 0.5  # the NaN of the band is left out of its range


def test_the_sample_is_seeded_per_stratum_and_interleaved():
    of = np.array([0, 1, 0, 1, 0, 1, 0, 2])
    first = sampling.stratified_sample(of, 3, per_stratum=2, seed=7)
    assert [d.tolist() for d in first] == [d.tolist() for d in sampling.stratified_sample(of, 3, 2, seed=7)]
    assert [len(d) for d in first] == [2, 2, 1]
    assert all(set(d) <= set(np.flatnonzero(of == h)) for h, d in enumerate(first))
    assert sampling.interleave(first).tolist() == [first[0][0], first[1][0], first[2][0], first[0][1], first[1][1]]
    expected = np.random.default_rng([7, 0]).permutation([0, 2, 4, 6])[:2]
    assert first[0].tolist() == expected.tolist()
    assert any(
        [d.tolist() for d in sampling.stratified_sample(of, 3, 2, seed=s)] != [d.tolist() for d in first]
        for s in range(8, 12)
    )


def test_uncertain_high_orders_high_tier_pairs_by_score_then_row_nan_last():
    tiers = np.array(["high", "mid", "high", "high", "high"], dtype=object)
    key = np.array([0.9, 0.1, np.nan, 0.5, 0.5])
    assert sampling.uncertain_high(tiers, key, limit=10).tolist() == [3, 4, 0, 2]
    assert sampling.uncertain_high(tiers, key, limit=2).tolist() == [3, 4]


# --- the estimator --------------------------------------------------------------------------------------


def test_stratified_estimate_exact_values():
    e = sampling.stratified_estimate(sizes=[100, 300], accepted=[3, 1], labels=[4, 5])
    # W = (1/4, 3/4); p_h = (3/4, 1/5); p = 3/16 + 3/20
    assert e.value == pytest.approx(0.3375, abs=1e-15)
    # V = W1^2 (1 - 4/100) (3/4)(1/4)/3 + W2^2 (1 - 5/300) (1/5)(4/5)/4 = 0.00375 + 0.022125
    assert e.variance == pytest.approx(0.025875, abs=1e-15)
    assert e.n_eff == pytest.approx(0.3375 * 0.6625 / 0.025875, abs=1e-12)
    assert (e.low, e.high) == pytest.approx(wilson_interval(0.3375 * e.n_eff, e.n_eff))
    assert 0 < e.low < e.value < e.high < 1
    assert (e.labels, e.accepted, e.population, e.strata, e.covered) == (9, 4, 400, 2, 2)


def test_stratified_estimate_edge_cases():
    missing = sampling.stratified_estimate([10, 10], [1, 0], [2, 0])
    assert missing.value is None and missing.covered == 1 and missing.labels == 2
    agree = sampling.stratified_estimate([10, 30], [2, 3], [2, 3])  # every label accept: V = 0, n_eff = n
    assert agree.value == 1.0 and agree.n_eff == 5 and agree.high == 1.0
    assert agree.low == pytest.approx(wilson_interval(5, 5)[0])
    single = sampling.stratified_estimate([4, 4], [1, 0], [1, 3])  # a stratum of one label: its worst case
    assert single.variance == pytest.approx(0.25 * (1 - 1 / 4) * 0.25)
    census = sampling.stratified_estimate([2, 3], [1, 3], [2, 3])
    assert (census.value, census.low, census.high) == (0.4 * 0.5 + 0.6, 0.8, 0.8)
    with pytest.raises(ValueError):
        sampling.stratified_estimate([2], [3], [2])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(0, 5), st.integers(1, 3)).map(
            lambda t: (t[0], min(t[1], t[0]), min(t[2], t[0]))  # (N_h, true accepts in it, n_h)
        ),
        min_size=1,
        max_size=2,
    )
)
def test_the_estimate_is_unbiased_over_every_possible_sample(strata):
    """Averaged over every equally likely stratified sample (all n_h-subsets of every stratum), the
    estimate equals the population's precision exactly."""
    populations = [[True] * accepts + [False] * (size - accepts) for size, accepts, _ in strata]
    subsets = [list(itertools.combinations(pop, n)) for pop, (_, _, n) in zip(populations, strata)]
    total, count = Fraction(0), 0
    for draw in itertools.product(*subsets):
        e = sampling.stratified_estimate([s for s, _, _ in strata], [sum(d) for d in draw], [len(d) for d in draw])
        total, count = total + Fraction(e.value), count + 1
    truth = Fraction(sum(a for _, a, _ in strata), sum(s for s, _, _ in strata))
    assert float(total / count) == pytest.approx(float(truth), abs=1e-12)


def test_simulated_review_is_unbiased_and_the_interval_covers():
    """A population of 4 strata with different sizes and precisions, sampled by the module's own
    functions with 400 seeds: the mean estimate is the true precision (within 4 standard errors)
    and the 95 % interval covers it in at least 90 % of the draws."""
    rng = np.random.default_rng(0)
    sizes, rates = [400, 300, 200, 100], [0.3, 0.6, 0.8, 0.95]
    tiers = np.array(["high"] * sum(sizes), dtype=object)
    scores = np.concatenate([np.full(n, i, dtype=float) + rng.random(n) * 0.5 for i, n in enumerate(sizes)])
    true = np.concatenate([rng.random(n) < r for n, r in zip(sizes, rates)])
    strata, of = sampling.assign_strata(tiers, scores, bands=4)
    assert [s.size for s in strata] == [250, 250, 250, 250]  # equal-count bands, not the generating groups
    precision = true.mean()
    values, covered = [], 0
    for seed in range(400):
        draws = sampling.stratified_sample(of, len(strata), per_stratum=12, seed=seed)
        e = sampling.stratified_estimate(
            [s.size for s in strata], [int(true[d].sum()) for d in draws], [len(d) for d in draws]
        )
        values.append(e.value)
        covered += e.low <= precision <= e.high
    assert abs(np.mean(values) - precision) < 4 * np.std(values) / math.sqrt(len(values))
    assert covered / 400 >= 0.90


# --- the store ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def decide(store: ReviewStore, reviewer: str, key: tuple[str, str], decision: str) -> None:
    store.decide(reviewer, key, decision, image_id="i", stratum="high/0", queue="stratified", tier="high", score=0.5)


def test_claims_keep_reviewers_apart_and_expire(tmp_path):
    clock = Clock()
    store = ReviewStore(tmp_path / "r.sqlite", claim_ttl_s=60, clock=clock)
    queue = [(f"g{i}", f"c{i}") for i in range(4)]
    assert store.claim_next("ann", queue) == queue[0]
    assert store.claim_next("bob", queue) == queue[1]
    assert store.claim_next("ann", queue) == queue[0]  # a reload keeps ann's pair
    decide(store, "ann", queue[0], "skip")
    assert store.claim_next("ann", queue) == queue[2]  # bob holds 1
    assert store.claim_next("cy", queue) == queue[0]  # ann's skip leaves it to others
    clock.now += 61  # bob walked away
    assert store.claim_next("ann", queue) == queue[1]
    decide(store, "ann", queue[1], "accept")
    decide(store, "cy", queue[0], "reject")
    assert store.claim_next("ann", queue) == queue[2]
    assert store.claim_next("bob", queue) == queue[3]
    assert store.claim_next("cy", queue) is None
    assert store.labels() == {queue[0]: False, queue[1]: True}


def test_undo_marks_the_latest_live_decision_and_returns_the_pair(tmp_path):
    clock = Clock()
    store = ReviewStore(tmp_path / "r.sqlite", clock=clock)
    queue = [(f"g{i}", f"c{i}") for i in range(3)]
    store.claim_next("ann", queue)
    decide(store, "ann", queue[0], "accept")
    decide(store, "bob", queue[0], "reject")  # later, so bob's label wins
    decide(store, "ann", queue[1], "accept")
    assert store.labels() == {queue[0]: False, queue[1]: True}
    clock.now += 5
    undone = store.undo("ann")
    assert undone.key == queue[1] and undone.undone_at is not None
    assert store.claim_next("ann", queue) == queue[1]  # shown again
    assert store.undo("ann").key == queue[0]  # walks back
    assert store.labels() == {queue[0]: False}  # bob's reject stands
    assert store.undo("ann") is None
    rows = store.decisions()
    assert len(rows) == 3 and [r.undone_at is not None for r in rows] == [True, False, True]
    labels = read_labels(store.path)
    assert labels.schema == LABELS_SCHEMA
    assert labels.to_pylist() == [
        {
            "garment_id": "g0",
            "crop_id": "c0",
            "image_id": "i",
            "verified": False,
            "stratum": "high/0",
            "tier": "high",
            "score": 0.5,
            "reviewer": "bob",
            "decided_at": rows[1].decided_at,
        }  # fmt: skip
    ]
    assert rows[1].decided_at == "2027-01-15T08:00:00.000000+00:00"
    assert read_labels(tmp_path / "missing.sqlite").num_rows == 0
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_reviewers_never_share_a_pair_and_lose_nothing(tmp_path):
    path = tmp_path / "r.sqlite"
    ReviewStore(path)
    queue = [(f"g{i:03d}", f"c{i}") for i in range(60)]
    served: dict[str, list] = {}
    holding: dict[str, tuple | None] = {}
    clash = []

    def review(name: str) -> None:
        store, served[name] = ReviewStore(path), []  # a store (and connections) of its own, as a request thread
        while (key := store.claim_next(name, queue)) is not None:
            holding[name] = key
            clash.extend(key for other, held in holding.items() if other != name and held == key)
            served[name].append(key)
            decide(store, name, key, "accept" if len(served[name]) % 2 else "reject")
        holding[name] = None

    threads = [threading.Thread(target=review, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = [key for keys in served.values() for key in keys]
    assert not clash and sorted(every) == queue  # each pair served once, to one reviewer
    assert len(ReviewStore(path).decisions()) == 60 and read_labels(path).num_rows == 60


# --- the queue, the export and the entrypoint -----------------------------------------------------------


def test_population_and_queue_of_a_run(run_dir, tmp_path):
    population = read_population(run_dir)
    assert len(population) == 24 and list(population.garment_id) == sorted(population.garment_id)
    queue = ReviewQueue(run_dir, ReviewStore(tmp_path / "r.sqlite"), allowing(run_dir, per_stratum=2, bands=2))
    assert len(queue.strata) == 8 and [s.size for s in queue.strata] == [4, 4, 4, 4, 2, 2, 2, 2]
    assert len(queue.queue) == 16 and [queue.stratum(k) for k in queue.queue[:8]] == [s.name for s in queue.strata]
    again = ReviewQueue(run_dir, ReviewStore(tmp_path / "r2.sqlite"), allowing(run_dir, per_stratum=2, bands=2))
    assert again.queue == queue.queue  # deterministic
    uncertain = ReviewQueue(
        run_dir, ReviewStore(tmp_path / "r.sqlite"), allowing(run_dir, order="uncertain-high", limit=3, per_stratum=1)
    )
    high = sorted((s, g) for g, t, s in zip(population.garment_id, population.tier, population.score) if t == "high")
    assert [k[0] for k in uncertain.queue] == [g for _, g in high[:3]]
    assert {uncertain.stratum(k) for k in uncertain.queue} <= {"uncertain-high", "high/0", "high/1", "high/2", "high/3"}
    pair = queue.pair(queue.queue[0])
    assert pair["tier"] == "high" and pair["crop_caption"] and pair["attributes"]["colour"]


def test_a_run_written_before_a_column_existed_still_loads(run_dir, tmp_path):
    table = pq.read_table(run_dir / "pairs", partitioning=None).drop_columns(["confidence"])
    (tmp_path / "old" / "pairs").mkdir(parents=True)
    pq.write_table(table, tmp_path / "old" / "pairs" / "part-0.parquet")
    population = read_population(tmp_path / "old")
    assert len(population) == 24 and np.isnan(population.confidence).all()
    settings = allowing(run_dir.parent, order="uncertain-high", uncertain_by="confidence", limit=3)
    queue = ReviewQueue(tmp_path / "old", ReviewStore(tmp_path / "r.sqlite"), settings)
    high = sorted(g for g, t in zip(population.garment_id, population.tier) if t == "high")
    assert [k[0] for k in queue.queue] == high[:3]  # all NaN: row (garment_id) order
    assert queue.pair(queue.queue[0])["confidence"] is None


def test_uncertain_high_sorts_by_the_key_the_run_tiered_by(run_dir, tmp_path):
    table = pq.read_table(run_dir / "pairs", partitioning=None)
    crop_margin = np.random.default_rng(0).normal(0.0, 0.2, table.num_rows)
    table = table.set_column(table.schema.get_field_index("crop_margin"), "crop_margin", pa.array(crop_margin))
    (tmp_path / "run" / "pairs").mkdir(parents=True)
    pq.write_table(table, tmp_path / "run" / "pairs" / "part-0.parquet")
    high = [r for r in table.to_pylist() if r["tier"] == "high"]

    def lowest(by) -> list[str]:
        return [r["garment_id"] for r in sorted(high, key=by)[:3]]

    def queued(**kwargs) -> list[str]:
        settings = allowing(run_dir.parent, order="uncertain-high", limit=3, **kwargs)
        return [k[0] for k in ReviewQueue(tmp_path / "run", ReviewStore(tmp_path / "r.sqlite"), settings).queue]

    by_key = lowest(lambda r: np.float32(r["score"]) + np.float32(r["crop_margin"]))
    assert by_key != lowest(lambda r: r["score"])  # the two orders differ, so the test can tell them apart
    assert queued() == by_key  # no config.yaml: the default key, S plus the crop margin
    assert queued(uncertain_by="crop_margin") == lowest(lambda r: r["crop_margin"])
    (tmp_path / "run" / "config.yaml").write_text("tiers:\n  key: score\n")
    assert queued() == lowest(lambda r: r["score"])


def test_export_adds_verified_promotes_and_demotes_deterministically(run_dir, tmp_path):
    db = tmp_path / "r.sqlite"
    store, population = ReviewStore(db), read_population(run_dir)
    mid, high = population.key(list(population.tier).index("mid")), population.key(list(population.tier).index("high"))
    decide(store, "ann", mid, "accept")
    decide(store, "ann", high, "reject")
    decide(store, "ann", population.key(0), "skip")
    decide(store, "bob", ("g99999", "stale"), "accept")  # not a pair of this run: ignored
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    summary = review_job.main([str(run_dir), "--db", str(db), "--export", str(out_a)])
    export(run_dir, db, str(out_b))
    data = (out_a / "pairs" / "part-00000.parquet").read_bytes()
    assert data == (out_b / "pairs" / "part-00000.parquet").read_bytes()
    table = pq.read_table(out_a / "pairs" / "part-00000.parquet")
    assert table.schema.names == [*PAIRS.names, "verified", "mined_tier"] and table.num_rows == 25
    assert table["garment_id"].to_pylist() == sorted(table["garment_id"].to_pylist())
    rows = {r["garment_id"]: r for r in table.to_pylist()}
    assert (rows[mid[0]]["verified"], rows[mid[0]]["tier"], rows[mid[0]]["mined_tier"]) == (True, "high", "mid")
    assert (rows[high[0]]["verified"], rows[high[0]]["tier"]) == (False, "unmatched")
    assert sum(r["verified"] is not None for r in rows.values()) == 2
    assert summary == {"pairs": 25, "accepted": 1, "rejected": 1, "unlabelled": 23, "promoted": 1, "demoted": 1,
                       "promote": True}  # fmt: skip
    assert json.loads((out_a / "export.json").read_text()) == summary
    card = (out_a / CARD).read_text()  # 2 labels: no stratum of a tier is covered yet, so no estimate
    assert "review's stratified sample: 2 labels" in card and "| high | 8 | too few labels (1) |" in card
    kept = labelled_pairs(pq.read_table(run_dir / "pairs", partitioning=None), read_labels(db), promote=False)
    assert kept["tier"].to_pylist() == kept["mined_tier"].to_pylist()


# --- the HTTP API ---------------------------------------------------------------------------------------


@pytest.fixture
def client(run_dir, tmp_path) -> TestClient:
    app = create_app(run_dir, tmp_path / "r.sqlite", allowing(run_dir.parent, per_stratum=2, bands=2))
    return TestClient(app, base_url="http://127.0.0.1")


def test_api_serves_decides_and_undoes(client):
    first = client.get("/api/next", params={"reviewer": "ann"}).json()
    pair = first["pair"]
    assert first["progress"]["queue_size"] == 16 and first["progress"]["reviewed"] == 0
    body = {"reviewer": "ann", "garment_id": pair["garment_id"], "crop_id": pair["crop_id"], "decision": "accept"}
    after = client.post("/api/decide", json=body).json()
    assert after["decision"]["stratum"] == pair["stratum"] and after["pair"]["garment_id"] != pair["garment_id"]
    assert after["progress"]["reviewed"] == 1 and after["progress"]["estimates"][0]["covered"] == 1
    undone = client.post("/api/undo", json={"reviewer": "ann"}).json()
    assert undone["undone"]["garment_id"] == pair["garment_id"] and undone["pair"]["garment_id"] == pair["garment_id"]
    assert undone["progress"]["reviewed"] == 0
    image = client.get("/api/image", params={"garment_id": pair["garment_id"], "role": "lookbook"})
    assert image.status_code == 200 and image.content[:3] == b"\xff\xd8\xff"
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'unsafe-inline'" in page.headers["content-security-policy"]


def test_api_refuses_what_is_not_a_pair_of_the_queue(client, run_dir):
    assert client.get("/api/next").status_code == 400  # no reviewer
    assert client.get("/api/next", params={"reviewer": "a\x00b"}).status_code == 400
    for garment_id in ("../../etc/passwd", "/etc/passwd", str(run_dir / "sample" / "garments" / "g00000.png")):
        assert client.get("/api/image", params={"garment_id": garment_id, "role": "garment"}).status_code == 404
    pair = client.get("/api/next", params={"reviewer": "ann"}).json()["pair"]
    assert client.get("/api/image", params={"garment_id": pair["garment_id"], "role": "uri"}).status_code == 404
    bad = {"reviewer": "ann", "garment_id": pair["garment_id"], "crop_id": "other", "decision": "accept"}
    assert client.post("/api/decide", json=bad).status_code == 404
    assert client.post("/api/decide", json={**bad, "crop_id": pair["crop_id"], "decision": "maybe"}).status_code == 422
    assert client.post("/api/undo", json={"reviewer": "nobody"}).json()["undone"] is None
    evil = TestClient(client.app, base_url="http://attacker.example")
    assert evil.get("/api/progress").status_code == 400  # Host header not allowed (DNS rebinding)


def test_images_outside_the_allow_list_are_refused(run_dir, tmp_path):
    app = create_app(run_dir, tmp_path / "r.sqlite", ReviewSettings(per_stratum=1, bands=1))  # no local root allowed
    client = TestClient(app, base_url="http://127.0.0.1")
    pair = client.get("/api/next", params={"reviewer": "ann"}).json()["pair"]
    response = client.get("/api/image", params={"garment_id": pair["garment_id"], "role": "garment"})
    assert response.status_code == 403 and "allowed_local_roots" in response.json()["detail"]
