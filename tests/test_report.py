"""The visual report (quality.report, jobs.report) on a small run folder made here with pyarrow and
Pillow: no Ray, no model. The browser test opens the file in headless Chromium and saves the
README's screenshot (`report.png`, see tests/browser.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core import schemas
from core.storage import StorageConfig
from core.tiering import by_threshold
from core.vocab import ATTRIBUTES
from jobs.report import main as report_main
from quality import selection
from quality.pair_files import PairFiles
from quality.report import BY_CROP_MARGIN, ReportInputs, ReportSettings, build_report, read_columns
from quality.run_files import storage_of

from .browser import save_screenshot

N_PAIRS, N_NO_CANDIDATE = 60, 4
THRESHOLDS = {"high": 0.85, "mid": 0.7, "low": 0.5}
POPULAR = "l000000:0"  # the crop chosen by the most garments (the sample's first placement)
SCRIPT = "<script>alert(1)</script> & co"  # a caption that must show as text
QUARANTINED = {"lookbook": {"decode_error": 2, "not_found": 1}, "garments": {"forbidden_uri": 1}}
PER_TIER, BOUNDARY = 4, 3


def placements(sample) -> pa.Table:
    """The sample's truth rows (one per garment placed in a scene) as crops: crop_id
    `<image_id>:<k>`, uri, box, and the placed garment's caption and attributes."""
    truth = pq.read_table(sample.truth_path)
    garments = {row["garment_id"]: row for row in pq.read_table(sample.garments_path).to_pylist()}
    uris = dict(zip(*pq.read_table(sample.lookbook_path).to_pydict().values()))
    rows = []
    for k, row in enumerate(truth.to_pylist()):
        garment = garments[row["garment_id"]]
        box = [row["x0"], row["y0"], row["x1"], row["y1"]]
        rows.append({"crop_id": f"{row['image_id']}:{k}", "image_id": row["image_id"], "uri": uris[row["image_id"]],
                     "box": box, "placed": row["garment_id"], "caption": garment["text"],
                     **{name: garment[name] for name in ATTRIBUTES}})  # fmt: skip
    return pa.Table.from_pylist(rows)


def pairs_and_truth(sample, crops: pa.Table, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """N_PAIRS pairs of garments g000.. (each shown by one of the sample's garment images), scores
    descending, tiers by THRESHOLDS: a pair is true with probability about its score, the first
    seven all choose POPULAR's crop, the last N_NO_CANDIDATE have no candidate. And the truth:
    each garment g000.. with every scene its garment image is placed in."""
    shots = pq.read_table(sample.garments_path).to_pylist()
    placed = crops["placed"].to_numpy(zero_copy_only=False)
    n, rows, truth = N_PAIRS - N_NO_CANDIDATE, [], []
    scores = np.concatenate([np.linspace(0.95, 0.3, n), np.full(N_NO_CANDIDATE, np.nan)]).astype(np.float32)
    for i in range(N_PAIRS):
        shot = shots[i % len(shots)]
        own = np.flatnonzero(placed == shot["garment_id"])
        truth += [{"garment_id": f"g{i:03d}", "image_id": image} for image in crops["image_id"].take(own).to_pylist()]
        own, others = own[own > 0], np.setdiff1d(np.arange(1, len(crops)), own)  # crop 0 is POPULAR's
        crop = 0 if i < 7 else rng.choice(own if len(own) and rng.random() < scores[i] else others)
        pair = {"garment_id": f"g{i:03d}", "garment_uri": shot["uri"], "garment_caption": shot["text"]}
        rows.append({**crops.slice(int(crop), 1).to_pylist()[0], **pair})
    rows[int((scores >= THRESHOLDS["high"]).sum()) - 1]["garment_caption"] = SCRIPT  # a boundary card
    table, has = pa.Table.from_pylist(rows), pa.array(np.arange(N_PAIRS) < n)
    picked = (("image_id", "image_id"), ("image_uri", "uri"), ("crop_id", "crop_id"), ("box", "box"))
    columns = {
        **{name: table[name] for name in ("garment_id", "garment_uri", "garment_caption")},
        **{name: pa.compute.if_else(has, table[column], None) for name, column in picked},
        "s_vlm": scores + rng.normal(0, 0.05, N_PAIRS).astype(np.float32),
        "s_siglip": scores + rng.normal(0, 0.05, N_PAIRS).astype(np.float32),
        "score": scores,
        "margin": np.where(np.arange(N_PAIRS) % 9 == 0, np.nan, rng.exponential(0.03, N_PAIRS)).astype(np.float32),
        "n_candidates": np.where(np.arange(N_PAIRS) < n, 20, 0).astype(np.int32),
        **{name: [[] for _ in range(N_PAIRS)] for name in schemas.PAIRS.names if name.startswith("candidate_")},
        "crop_margin": np.full(N_PAIRS, np.nan, np.float32),
        "tier": by_threshold(scores, THRESHOLDS).tolist(),
        "confidence": np.full(N_PAIRS, np.nan, np.float32),
    }
    return pa.table(columns, schema=schemas.PAIRS), pa.Table.from_pylist(truth)


def quarantine_table(stage: str) -> pa.Table:
    rows = [(f"{stage}-{reason}-{i}", f"/x/{reason}{i}.jpg", stage, reason, f"bad <{reason}>")
            for reason, n in QUARANTINED[stage].items() for i in range(n)]  # fmt: skip
    return pa.table([list(c) for c in zip(*rows)], schema=schemas.QUARANTINE)


def make_run(root: Path, sample) -> tuple[Path, Path]:
    """A run folder over the sample's images (pairs in two files of 8-row groups, crops,
    quarantine, summary.json, config.yaml allowing the sample and `root`) and a benchmark split."""
    run = root / "run"
    crops = placements(sample)
    pairs, truth = pairs_and_truth(sample, crops, np.random.default_rng(0))
    for shard, part in enumerate((pairs.slice(0, 25), pairs.slice(25))):
        (run / f"pairs/shard={shard:05d}").mkdir(parents=True)
        pq.write_table(part, run / f"pairs/shard={shard:05d}/part-000000.parquet", row_group_size=8)
    (run / "crops/shard=00000").mkdir(parents=True)
    pq.write_table(crops.drop_columns(["placed"]), run / "crops/shard=00000/part-000000.parquet")
    for stage in QUARANTINED:
        (run / f"quarantine/{stage}/shard=00000").mkdir(parents=True)
        pq.write_table(quarantine_table(stage), run / f"quarantine/{stage}/shard=00000/part-000000.parquet")
    summary = {
        "config_hash": "0123456789abcdef",
        "models": {"embedder": {"spec": "data/models/siglip-tiny", "sha256": "", "note": "tiny <b>model</b>"}},
        "counts": {"lookbook_images": sample.n_images, "garments": N_PAIRS + 1, "crops": len(crops)},
        "tiers": {t["values"]: t["counts"] for t in pairs["tier"].value_counts().to_pylist()},
        "quarantine": QUARANTINED,
        "seconds": {"lookbook": 1.5, "scoring": 2.25},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    roots = [str(sample.truth_path.parent), str(root)]
    (run / "config.yaml").write_text(
        f"storage:\n  allowed_local_roots: {json.dumps(roots)}\ntiers:\n  mode: threshold\n"
    )
    split = root / "split"
    split.mkdir()
    pq.write_table(truth, split / "truth.parquet")
    pq.write_table(pairs.select(["garment_id"]), split / "garments.parquet")
    return run, split


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample):
    """The run, its split, and the report made by the command line with --truth."""
    root = tmp_path_factory.mktemp("report")
    run, split = make_run(root, sample)
    args = [str(run), "--truth", str(split), "--per-tier", str(PER_TIER), "--boundary", str(BOUNDARY)]
    result = report_main(args)
    return run, split, result, result.path.read_text()


def between(html: str, start: str, end: str = "<h3") -> str:
    """The markup from `start` to the next `end` after it."""
    begin = html.index(start)
    stop = html.find(end, begin + len(start))
    return html[begin : stop if stop >= 0 else len(html)]


def tier_counts(run: Path) -> dict[str, int]:
    tiers = pq.read_table(run / "pairs", columns=["tier"], partitioning=None)["tier"].to_pylist()
    return {t: tiers.count(t) for t in ("high", "mid", "low", "unmatched")}


def test_report_is_one_self_contained_file(built):
    run, _, result, html = built
    assert result.path == run / "report" / "index.html" and result.pairs == N_PAIRS
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    sources = re.findall(r"""src="([^"]*)\"""", html)
    assert sources and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for s in sources)
    links = re.findall(r'href="([^"]*)"', html)
    assert all(h.startswith("#") for h in links) and "#boundary-high" in links
    assert {h[1:] for h in links} <= set(re.findall(r'id="([^"]*)"', html))  # every link has its anchor
    assert "<link" not in html and "<script" not in html.replace("&lt;script", "")


def test_counts_quarantine_models_and_escaping(built):
    run, _, _, html = built
    tiers = between(html, "<h3>Tiers</h3>", "</table>")
    for tier, count in tier_counts(run).items():
        assert re.search(rf"<td>{tier}</td><td class=\"num\">{count}</td>", tiers), tier
    quarantine = between(html, "<h3>Quarantine</h3>", "</details>")
    for stage, reasons in QUARANTINED.items():
        for reason, count in reasons.items():
            assert re.search(rf"<td>{stage}</td><td>{reason}</td><td class=\"num\">{count}</td>", quarantine)
    assert "bad &lt;decode_error&gt;" in quarantine  # the error text, escaped
    assert "data/models/siglip-tiny" in html and "tiny &lt;b&gt;model&lt;/b&gt;" in html
    assert "allowed_local_roots" in between(html, 'id="models"', "</section>")  # config.yaml shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "<script>alert" not in html


def test_gallery_samples_at_most_n_per_tier_and_marks_the_boundaries(built):
    run, _, _, html = built
    counts = tier_counts(run)
    for tier, count in counts.items():
        cards = between(html, f'<h3 id="tier-{tier}">').count('<figure class="card">')
        assert cards == min(PER_TIER, count), tier
    for tier in ("high", "mid", "low"):
        part = between(html, f'<h3 id="boundary-{tier}">')
        assert part.count(f">lowest in {tier}<") == BOUNDARY
        assert part.count(f">highest below {tier}<") == BOUNDARY
        assert part.index(f">lowest in {tier}<") < part.index("boundary: ") < part.index(f">highest below {tier}<")
    crops = between(html, 'id="crops"', "</section>")
    assert "best match of 7 garments" in crops and POPULAR in crops


def test_precision_section_only_with_judgements(built, tmp_path):
    run, split, _, html = built
    precision = between(html, 'id="precision"', "</section>")
    assert "benchmark truth" in precision and "data:image/png" in precision
    plain = build_report(ReportInputs(run, storage_of(run)), ReportSettings(),
                         tmp_path / "plain.html")  # fmt: skip
    assert 'id="precision"' not in plain.path.read_text()
    labels = pa.table({"garment_id": ["g000", "g001"], "crop_id": [POPULAR, POPULAR], "verified": [True, False]})
    inputs = ReportInputs(run, storage_of(run), labels=labels)
    reviewed = build_report(inputs, ReportSettings(per_tier=1), tmp_path / "reviewed.html").path.read_text()
    assert "2 pairs judged by review" in between(reviewed, 'id="precision"', "</section>")


def test_thumbnails_are_made_once(built, tmp_path):
    run, _, first, _ = built
    assert first.made > 0 and len(list((run / "report" / "thumbs").glob("*.jpg"))) >= first.made
    again = report_main(
        [str(run), "--per-tier", str(PER_TIER), "--boundary", str(BOUNDARY), "--out", str(tmp_path / "r.html")]
    )
    assert again.made == 0 and again.cached == first.made + first.cached


def test_calibration_table_and_refused_images(built, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(built[0], run, ignore=shutil.ignore_patterns("report"))  # no cached thumbnail
    calibration = {"delta": 0.05, "tiers": [
        {"tier": "high", "target": 0.95, "cutoff": 0.9, "labelled": 200, "errors": 3, "precision": 0.985,
         "lower_bound": 0.96, "certified": True},
        {"tier": "mid", "target": 0.8, "cutoff": None, "labelled": 0, "errors": 0, "precision": None,
         "lower_bound": None, "certified": False}]}  # fmt: skip
    shutil.copytree(run / "pairs", run / "calibrated" / "pairs")  # as jobs.calibrate lays its folder out
    (run / "calibrated" / "calibration.json").write_text(json.dumps(calibration))
    inputs = ReportInputs(run, StorageConfig(), pairs=run / "calibrated" / "pairs")  # no local root: no image read
    html = build_report(inputs, ReportSettings(per_tier=2, boundary=1), tmp_path / "c.html").path.read_text()
    assert not (run / "report" / "thumbs").exists()
    table = between(html, 'id="calibration"', "</section>")
    assert '<td>high</td><td class="num">0.95</td><td class="num">0.9</td>' in table and "–" in table
    assert "storage.allowed_local_roots is empty" in html  # why the pictures are missing


def test_pair_files_take_reads_rows_across_files_and_row_groups(built):
    run, _, _, _ = built
    files = PairFiles.open(run / "pairs")
    assert files.rows == N_PAIRS and len(files.paths) == 2 and len(files.group_rows[0]) == 4
    whole = pq.read_table(run / "pairs", columns=["garment_id", "score"], partitioning=None)
    indices = np.array([59, 0, 24, 25, 7, 8, 24])
    taken = files.take(indices, ["garment_id", "score"])
    assert taken["garment_id"].to_pylist() == [f"g{i:03d}" for i in indices]
    np.testing.assert_array_equal(taken["score"].to_numpy(), whole["score"].to_numpy()[indices])
    assert files.read_columns(["garment_id", "no_such_column"])["no_such_column"].null_count == N_PAIRS


def test_selection_boundaries_samples_and_top_crops():
    codes = selection.tier_codes(pa.array(["high"] * 5 + ["mid"] * 5 + ["unmatched"] * 3))
    key = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.89, 0.88, 0.87, 0.86, 0.5, np.nan, 0.4])
    high, mid = selection.boundaries(codes, key, 2)
    assert high.inside.tolist() == [3, 4] and high.below.tolist() == [5, 6]
    assert mid.inside.tolist() == [8, 9] and mid.below_tier == "low" and not len(mid.below)  # low is empty
    first = selection.sample_per_tier(codes, key, 3, seed=1)
    assert first["high"].tolist() == sorted(first["high"].tolist()) and len(first["high"]) == 3
    assert all(np.array_equal(first[t], selection.sample_per_tier(codes, key, 3, seed=1)[t]) for t in first)
    assert len(first["low"]) == 0 and set(first["unmatched"].tolist()) == {10, 11, 12}
    top = selection.most_chosen(pa.array(["b", "a", None, "a", "b", "c"]), top=5)
    assert top.to_pylist() == [{"crop_id": "a", "garments": 2, "row": 1}, {"crop_id": "b", "garments": 2, "row": 0}]


def test_report_renders_in_a_browser(built, page, tmp_path):
    run, split, _, _ = built
    out = tmp_path / "shot.html"
    compact = ["--per-tier", "4", "--boundary", "2", "--top-crops", "4"]  # a shorter page for the README
    report_main([str(run), "--truth", str(split), *compact, "--out", str(out)])
    page.set_viewport_size({"width": 1600, "height": 900})  # four cards a row
    page.goto(out.as_uri())
    page.wait_for_load_state("load")
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(sizes) > 10 and min(sizes) > 0
    assert page.locator("#gallery .card").count() > 0 and page.locator("#boundaries .divider").count() == 3
    assert page.locator("nav a").count() >= 8
    save_screenshot(page, "report", tmp_path, full_page=False)  # the top of the page, for the README
    page.locator("#gallery").scroll_into_view_if_needed()
    save_screenshot(page, "report-gallery", tmp_path, full_page=False)  # and its gallery


@pytest.mark.parametrize("key", ["score", "score_plus_crop_margin"])
def test_columns_rank_by_the_key_the_run_was_tiered_by(tmp_path, key):
    """Boundaries and samples follow the run's tiers.key: S, or S plus the crop margin (NaN: 0)."""
    (tmp_path / "pairs").mkdir()
    (tmp_path / "config.yaml").write_text(f"tiers:\n  key: {key}\n")
    pairs = pa.table(
        {
            "tier": ["high", "mid", "low"],
            "crop_id": ["a", "b", "c"],
            "score": pa.array([0.9, 0.8, 0.7], pa.float32()),
            "crop_margin": pa.array([-0.5, 0.25, None], pa.float32()),
        }
    )
    pq.write_table(pairs, tmp_path / "pairs" / "part-0.parquet")
    cols = read_columns(PairFiles.open(tmp_path / "pairs"), ReportInputs(tmp_path, StorageConfig()))
    expected = [0.9, 0.8, 0.7] if key == "score" else [0.4, 1.05, 0.7]
    np.testing.assert_allclose(cols.key, expected, rtol=1e-6)
    assert cols.key_name == ("score" if key == "score" else BY_CROP_MARGIN)
