"""The real mining job on a local Ray instance with tiny models: every input row is accounted for."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core import index as shard_index
from core import knowledge as kn
from core import payload, schemas
from core.config import SketchConfig, load_config, run_config
from core.data_card import CARD
from core.images import DECODE_ERROR, DECOMPRESSION_BOMB, FORBIDDEN_URI, NOT_FOUND, UNSUPPORTED_FORMAT
from core.index import IndexManifest, file_sha256, sha256, work_shard_of
from core.sketches import edge_map
from core.tiering import TIERS, UNMATCHED
from jobs import knowledge, mine
from jobs import search as jobs_search
from pipeline.manifests import ManifestError
from pipeline.stage import attempt_ledger
from pipeline.tier_passes import assign
from quality import evaluation
from quality.search import Query, RunSearcher, read_pictures
from review.app import create_app
from review.queue import ReviewSettings

from .bad_files import png_declaring
from .browser import save_screenshot, serving
from .conftest import REPO

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def inputs(sample, tmp_path_factory):
    """The sample's manifests (with their zero-byte and truncated JPEGs) plus more bad lookbook files
    and uris outside the allow-list, and garments as CSV with one corrupt image and one gs:// uri."""
    root = tmp_path_factory.mktemp("inputs")
    lookbook = pq.read_table(sample.lookbook_path)
    gif = io.BytesIO()
    Image.new("RGB", (64, 64)).save(gif, "GIF")
    bad = {  # id: (file name, bytes or None for a missing file)
        "l_missing": ("nowhere.jpg", None),
        "l_random": ("random.jpg", np.random.default_rng(1).bytes(5000)),
        "l_gif_as_jpg": ("wrong-extension.jpg", gif.getvalue()),
        "l_bomb": ("bomb.png", png_declaring(30000, 30000)),
    }
    for name, data in bad.values():
        if data is not None:
            (root / name).write_bytes(data)
    forbidden = {  # readable or not, never opened
        "l_http": "http://127.0.0.1:9/a.jpg",
        "l_dotdot": f"{root}/../{root.name}/random.jpg",
        "l_file_uri_dotdot": f"file://{root}/../{root.name}/random.jpg",
    }
    file_uri = {"l_file_uri": f"file://{lookbook['uri'][0]}"}  # allowed: read like the plain path
    extra = pa.table(
        {
            "image_id": [*bad, *forbidden, *file_uri],
            "uri": [str(root / name) for name, _ in bad.values()] + [*forbidden.values(), *file_uri.values()],
        }
    )
    pq.write_table(pa.concat_tables([lookbook, extra]), root / "lookbook.parquet")
    (root / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(2000))
    garments = pq.read_table(sample.garments_path).select(["garment_id", "uri", "text"])
    corrupt = pa.table(
        {"garment_id": ["g_corrupt", "g_gs"], "uri": [str(root / "corrupt.png"), "gs://bucket/g.jpg"], "text": ["", ""]}
    )
    pacsv.write_csv(pa.concat_tables([garments, corrupt]), root / "garments.csv")
    return {"lookbook": root / "lookbook.parquet", "garments": root / "garments.csv", "root": root}


@pytest.fixture(scope="module")
def run(inputs, model_overrides, local_ray, tmp_path_factory):
    output = tmp_path_factory.mktemp("run") / "out"
    args = [*model_overrides, f"lookbook={inputs['lookbook']}", f"garments={inputs['garments']}", f"output={output}"]
    summary = mine.main(
        [*args, "tiers.mode=count", "tiers.counts.high=2", "tiers.counts.mid=3", "tiers.counts.low=100"]
    )
    return {"summary": summary, "output": output}


def read(run, name: str) -> pa.Table:
    return pq.read_table(run["output"] / name, partitioning=None)


def ids(table: pa.Table, column: str) -> list[str]:
    return table[column].to_pylist()


def test_every_lookbook_image_is_in_crops_or_quarantine(run, inputs):
    manifest = set(ids(pq.read_table(inputs["lookbook"]), "image_id"))
    cropped = set(ids(read(run, schemas.CROPS_DIR), "image_id"))
    quarantined = ids(read(run, f"{schemas.QUARANTINE_DIR}/lookbook"), "id")
    assert "l_file_uri" in cropped
    assert len(quarantined) == len(set(quarantined))
    assert cropped.isdisjoint(quarantined)
    assert cropped | set(quarantined) == manifest


def test_every_image_with_crops_is_labelled_whole_once_in_scenes(run, vocab):
    """The detector's scene rows, described like crops, land in scenes/ (one per image that has
    crops, an occasion of the vocabulary with its probability) and never among the crops."""
    scenes, crops = read(run, schemas.SCENES_DIR), read(run, schemas.CROPS_DIR)
    assert scenes.schema == schemas.SCENES
    assert sorted(ids(scenes, "image_id")) == sorted(set(ids(crops, "image_id")))
    assert run["summary"]["counts"]["scenes"] == scenes.num_rows
    assert set(ids(scenes, "occasion")) <= set(vocab["occasion"])
    assert all(0 < c <= 1 for c in ids(scenes, schemas.OCCASION_CONFIDENCE))
    assert schemas.SCENE_CLASS not in ids(crops, "det_class")


def test_every_garment_is_paired_once_or_quarantined(run, inputs):
    manifest = ids(pacsv.read_csv(inputs["garments"]), "garment_id")
    paired = ids(read(run, schemas.PAIRS_DIR), "garment_id")
    quarantined = ids(read(run, f"{schemas.QUARANTINE_DIR}/garments"), "id")
    assert len(paired) == len(set(paired))
    assert sorted(paired + quarantined) == sorted(manifest)


def test_bad_files_are_quarantined_with_reasons(run, sample):
    lookbook = read(run, f"{schemas.QUARANTINE_DIR}/lookbook").to_pylist()
    reasons = {row["id"]: row["reason"] for row in lookbook}
    expected = {
        **dict.fromkeys(sample.bad_ids, DECODE_ERROR),  # a zero-byte file and a truncated JPEG
        "l_missing": NOT_FOUND,
        "l_random": DECODE_ERROR,
        "l_gif_as_jpg": UNSUPPORTED_FORMAT,
        "l_bomb": DECOMPRESSION_BOMB,
        **dict.fromkeys(["l_http", "l_dotdot", "l_file_uri_dotdot"], FORBIDDEN_URI),
    }
    assert reasons == expected
    assert all(row["stage"] == "lookbook" and row["error"] for row in lookbook)
    for row in lookbook:
        if row["reason"] == FORBIDDEN_URI:  # the error names the row and its uri
            assert f"row {row['id']!r}: " in row["error"] and row["uri"] in row["error"]
    garments = read(run, f"{schemas.QUARANTINE_DIR}/garments").to_pylist()
    assert sorted((g["id"], g["reason"]) for g in garments) == [("g_corrupt", DECODE_ERROR), ("g_gs", FORBIDDEN_URI)]
    assert run["summary"]["quarantine"]["lookbook"] == {
        DECODE_ERROR: 3,
        NOT_FOUND: 1,
        UNSUPPORTED_FORMAT: 1,
        DECOMPRESSION_BOMB: 1,
        FORBIDDEN_URI: 3,
    }


def test_output_schemas(run):
    crops = read(run, schemas.CROPS_DIR)
    dim = crops.schema.field("embedding").type.list_size
    assert crops.schema == schemas.crops(dim, "float16")  # conf/mine.yaml: embedder.store_dtype
    assert read(run, schemas.PAIRS_DIR).schema == schemas.PAIRS
    assert read(run, f"{schemas.QUARANTINE_DIR}/lookbook").schema == schemas.QUARANTINE
    vectors = np.stack(crops["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, rtol=2e-3)


def test_readme_documents_every_output_column(run):
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.M))
    crops = read(run, schemas.CROPS_DIR).schema
    for schema in (crops, schemas.SCENES, schemas.PAIRS, schemas.QUARANTINE):
        assert set(schema.names) <= documented, set(schema.names) - documented


def test_pairs_point_at_indexed_crops_and_count_tiers_are_exact(run):
    pairs = read(run, schemas.PAIRS_DIR).to_pandas()
    crops = read(run, schemas.CROPS_DIR).to_pandas().set_index("crop_id")
    matched = pairs[pairs["crop_id"].notna()]
    assert len(matched) == len(pairs)  # every garment had candidates in this run
    for column, crops_column in (("image_id", "image_id"), ("image_uri", "uri")):  # the lookbook image's own
        assert (crops.loc[matched["crop_id"], crops_column].to_numpy() == matched[column].to_numpy()).all()
    np.testing.assert_allclose(matched["score"], 0.5 * matched["s_vlm"] + 0.5 * matched["s_siglip"], rtol=1e-5)
    ranked = pairs.sort_values(["score", "garment_id"], ascending=[False, True])["tier"].tolist()
    assert ranked == ["high"] * 2 + ["mid"] * 3 + ["low"] * (len(pairs) - 5)  # counts set by the run fixture
    summary_tiers = run["summary"]["tiers"]
    assert sum(summary_tiers.values()) == len(pairs)
    assert all(summary_tiers[t] == (pairs["tier"] == t).sum() for t in (*TIERS, UNMATCHED))


def test_index_manifest_matches_shard_files(run):
    index_dir = run["output"] / schemas.INDEX_DIR
    manifest = IndexManifest.from_json((index_dir / "manifest.json").read_text())
    crops = read(run, schemas.CROPS_DIR).num_rows
    assert len(manifest.shards) == 2  # conf/demo.yaml: index.shards=2
    assert sum(s.rows for s in manifest.shards) == crops
    work_shards = sorted(int(w) for shard in manifest.shards for w in shard.work_shards)
    assert work_shards == sorted(int(p.name.split("=")[1]) for p in (run["output"] / schemas.CROPS_DIR).iterdir())
    for n, shard in enumerate(manifest.shards):
        assert sha256((index_dir / shard.index_file).read_bytes()) == shard.sha256
        ids = payload.read(str(index_dir / shard.payload_file))[payload.INDEX_ID].to_numpy()
        assert len(ids) == shard.rows and (np.diff(ids) > 0).all()
        assert {int(w) % 2 for w in work_shard_of(ids)} <= {n}  # index shard n holds work shards w % 2 == n


def test_summary_names_models_and_counts(run, inputs):
    summary = json.loads((run["output"] / "summary.json").read_text())
    assert summary == json.loads(json.dumps(run["summary"]))
    assert summary["models"]["detector"]["spec"] == "pkg://fall_detection/models/best.pt"
    assert summary["models"]["embedder"]["note"]
    counts = summary["counts"]
    assert counts["crops"] == counts["index_rows"] == read(run, schemas.CROPS_DIR).num_rows
    assert counts["lookbook_images"] == pq.read_table(inputs["lookbook"]).num_rows
    assert counts["garments"] == counts["garments_scored"] + 2  # g_corrupt and g_gs are quarantined
    assert set(summary["seconds"]) == {"validate", "lookbook", "index", "scoring", "tiering"}
    # one Ray Data execution per stage over its 4 work shards: each pool of one actor loaded once
    lookbook, garments = summary["load_seconds"]["lookbook"], summary["load_seconds"]["garments"]
    assert set(lookbook) == {"CropDetector", "CropEmbedder", "CropDescriber"}
    assert set(garments) == {"CropEmbedder", "CropDescriber", "IndexShard000", "IndexShard001"}
    for load in (*lookbook.values(), *garments.values()):
        assert load["actors"] == 1 and load["max_seconds"] == load["seconds"] >= 0
    index = summary["index"]  # a few hundred crops: exact search in the two shards of conf/demo.yaml
    assert (index["type"], index["shards"], index["nprobe"], index["recall_at_10"]) == ("Flat", 2, 0, 1.0)


def test_duplicate_ids_fail_before_any_compute(inputs, model_overrides, local_ray, tmp_path):
    lookbook = pq.read_table(inputs["lookbook"])
    pq.write_table(pa.concat_tables([lookbook, lookbook.slice(0, 1)]), tmp_path / "dup.parquet")
    output = tmp_path / "out"
    args = [
        *model_overrides,
        f"lookbook={tmp_path / 'dup.parquet'}",
        f"garments={inputs['garments']}",
        f"output={output}",
    ]
    with pytest.raises(ManifestError, match=f"duplicate ids: '{lookbook['image_id'][0]}' \\(x2\\)"):
        mine.main(args)
    assert not (output / schemas.CROPS_DIR).exists()


def test_candidates_are_stored_and_rescoring_them_reproduces_the_pairs(run):
    pairs = read(run, schemas.PAIRS_DIR)
    crops = read(run, schemas.CROPS_DIR).num_rows
    cfg = load_config([str(run["output"] / "config.yaml")])
    for column in ("candidate_crop_ids", "candidate_image_ids", "candidate_s_vlm", "candidate_s_siglip"):
        assert [len(c) for c in pairs[column].to_pylist()] == [min(cfg.scoring.top_k, crops)] * len(pairs)
    for crop_ids, image_ids in zip(pairs["candidate_crop_ids"].to_pylist(), pairs["candidate_image_ids"].to_pylist()):
        assert [c.rsplit(":", 1)[0] for c in crop_ids] == image_ids
    again = evaluation.rescored(pairs, cfg.scoring.lambda_vlm, cfg.scoring.lambda_siglip, cfg.tiers)
    columns = ("garment_id", "image_id", "crop_id", "s_vlm", "s_siglip", "score", "margin", "crop_margin", "tier")
    for column in columns:  # crop margins: the job's group-by and join against core.crop_rivals in memory
        assert again[column].to_pylist() == pairs[column].to_pylist(), column


def test_disabled_detector_makes_one_whole_image_crop_per_image(sample, model_overrides, local_ray, tmp_path):
    """The lookbook stage alone (the detector's only user)."""
    inputs = [f"lookbook={sample.lookbook_path}", "garments=x", f"output={tmp_path}"]
    cfg = load_config([*model_overrides, *inputs, "detector.enabled=false"])
    with attempt_ledger() as ledger:
        mine.mine_lookbook(cfg, ledger)
    crops = pq.read_table(tmp_path / schemas.CROPS_DIR, partitioning=None)
    assert crops.num_rows == sample.n_images - len(sample.bad_ids) == len(set(ids(crops, "image_id")))
    assert set(ids(crops, "det_class")) == {-1} and all(c.endswith(":0") for c in ids(crops, "crop_id"))
    assert all(box[:2] == [0.0, 0.0] for box in crops["box"].to_pylist())
    assert not (tmp_path / schemas.SCENES_DIR).exists()  # the whole-image crop is the image: no scene rows


def test_fused_lookbook_actor_with_fused_decode_makes_the_same_crops(run, inputs, model_overrides, local_ray, tmp_path):
    """fusion.lookbook with fusion.decode (manifest rows into one actor that reads, decodes, detects,
    embeds and describes), two batches at once on two copies of the models, gives the crops and
    quarantine rows of the separate stages."""
    args = [f"lookbook={inputs['lookbook']}", "garments=x", f"output={tmp_path}", "fusion.lookbook=true"]
    cfg = load_config([*model_overrides, *args, "fusion.decode=true", "fusion.pool.calls_per_actor=2"])
    with attempt_ledger() as ledger:
        mine.mine_lookbook(cfg, ledger)
    crops, expected = pq.read_table(tmp_path / schemas.CROPS_DIR, partitioning=None), read(run, schemas.CROPS_DIR)
    order = lambda table: table.sort_by("crop_id")  # noqa: E731
    for column in ("crop_id", "image_id", "box", "det_class", "caption"):
        assert order(crops)[column].to_pylist() == order(expected)[column].to_pylist(), column
    np.testing.assert_allclose(
        np.stack(order(crops)["embedding"].to_numpy(zero_copy_only=False)),
        np.stack(order(expected)["embedding"].to_numpy(zero_copy_only=False)),
        atol=2e-3,  # float16 storage
    )
    scenes = pq.read_table(tmp_path / schemas.SCENES_DIR, partitioning=None).sort_by("image_id")
    expected_scenes = read(run, schemas.SCENES_DIR).sort_by("image_id")
    for column in ("image_id", "caption", "occasion"):
        assert scenes[column].to_pylist() == expected_scenes[column].to_pylist(), column
    quarantine = lambda table: sorted(zip(table["id"].to_pylist(), table["reason"].to_pylist()))  # noqa: E731
    got = pq.read_table(tmp_path / schemas.QUARANTINE_DIR / "lookbook", partitioning=None)
    assert quarantine(got) == quarantine(read(run, f"{schemas.QUARANTINE_DIR}/lookbook"))


def test_the_data_card_describes_the_pairs_and_datasets_loads_them(run, tmp_path, monkeypatch):
    import datasets
    import yaml

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    card = (run["output"] / CARD).read_text()
    header = yaml.safe_load(card.split("---")[1])
    files = header["configs"][0]["data_files"][0]["path"]
    for tier in (*TIERS, UNMATCHED):
        assert f"| {tier} | {run['summary']['tiers'][tier]} |" in card
    assert "not estimated" in card and run["summary"]["config_hash"] in card
    loaded = datasets.load_dataset("parquet", data_files=str(run["output"] / files), cache_dir=str(tmp_path))
    pairs = read(run, schemas.PAIRS_DIR)
    assert loaded["train"].num_rows == pairs.num_rows
    for column in ("garment_uri", "image_uri", "box", "score", "tier", "confidence"):
        assert column in loaded["train"].column_names
    assert sorted(loaded["train"]["garment_id"]) == sorted(pairs["garment_id"].to_pylist())


def test_calibrate_fits_on_truth_and_its_overlay_tiers_the_next_run_alike(run, sample, page, tmp_path):
    from jobs import calibrate
    from jobs import report as report_job

    out = tmp_path / "calibrated"
    split = sample.truth_path.parent
    settings = calibrate.main([str(run["output"]), "--labels", str(split), "--out", str(out)])
    cut_offs = {cut["tier"]: cut["cutoff"] for cut in settings["tiers"]}
    assert cut_offs == settings["thresholds"]
    recalibrated = pq.read_table(out / schemas.PAIRS_DIR)
    assert recalibrated.schema == schemas.PAIRS and recalibrated.num_rows == read(run, schemas.PAIRS_DIR).num_rows
    cfg = load_config([str(run["output"] / "config.yaml"), str(out / "tiers.yaml")])
    assert cfg.tiers.mode == "calibrated" and cfg.tiers.thresholds == settings["thresholds"]
    # the next run's tiering stage would tier the same pairs the same way
    again = assign(recalibrated.drop_columns(["tier", "confidence"]), cfg.tiers, None)
    assert again["tier"].to_pylist() == recalibrated["tier"].to_pylist()
    np.testing.assert_allclose(
        again["confidence"].to_numpy(zero_copy_only=False), recalibrated["confidence"].to_numpy(zero_copy_only=False)
    )
    crops = read(run, schemas.CROPS_DIR).to_pandas().set_index("crop_id")  # re-picked pairs point at their crops
    matched = recalibrated.filter(recalibrated["crop_id"].is_valid()).to_pandas()
    assert (crops.loc[matched["crop_id"], "uri"].to_numpy() == matched["image_uri"].to_numpy()).all()
    applied = calibrate.main(
        [str(run["output"]), "--apply", str(out / "calibration.json"), "--out", str(tmp_path / "a")]
    )
    assert pq.read_table(tmp_path / "a" / schemas.PAIRS_DIR).equals(recalibrated)
    assert applied["thresholds"] == settings["thresholds"]
    assert "precision on the fitting benchmark truth labels" in (out / CARD).read_text()
    # the report of the re-tiered pairs shows the calibration (the README's picture of it)
    shown = tmp_path / "calibrated.html"
    report_job.main(
        [str(run["output"]), "--pairs", str(out / schemas.PAIRS_DIR), "--truth", str(split), "--out", str(shown)]
    )
    page.goto(shown.as_uri())
    assert page.locator("#calibration td").first.inner_text() == "high"
    save_screenshot(page, "calibrate", tmp_path, selector="#calibration")


def test_knowledge_on_ray_equals_the_counts_of_the_whole_crops_table(run):
    """jobs.knowledge (a Ray Data groupby and summed per-batch counts) against core.knowledge on the
    whole crops and scenes tables in memory: every image labelled once, by its scene row, the same counts."""
    summary = knowledge.main([str(run["output"]), "knowledge.min_confidence=0.3", "progress=false"])
    crops, scenes = read(run, schemas.CROPS_DIR).to_pandas(), read(run, schemas.SCENES_DIR).to_pandas()
    rows = pd.concat([crops.assign(**{kn.SCENE: False}), scenes.assign(**{kn.SCENE: True})], ignore_index=True)
    images = read(run, "knowledge/images").to_pandas().sort_values("image_id", ignore_index=True)
    expected_images = kn.image_labels(rows, 0.3).sort_values("image_id", ignore_index=True)
    assert images["occasion"].tolist() == scenes.sort_values("image_id")["occasion"].tolist()
    assert summary["images"] == len(images) == crops["image_id"].nunique() >= 10
    assert images["occasion"].tolist() == expected_images["occasion"].tolist()
    assert summary["confident_images"] == int(expected_images[kn.CONFIDENT].sum())
    for name, counts, keys in (
        ("category_occasion", kn.category_occasion_counts(expected_images), kn.CATEGORY_OCCASION_KEYS),
        ("attribute_pairs", kn.attribute_pair_counts(crops, 0.3), kn.ATTRIBUTE_PAIR_KEYS),
    ):
        table = read(run, f"knowledge/{name}.parquet").to_pandas()
        got = table[table[kn.LABELS] == kn.ALL_LABELS]
        expected = kn.restricted(counts, keys, confident_only=False)
        merged = expected.merge(got, on=[k for k in keys if k != kn.CONFIDENT], suffixes=("", "_got"))
        assert len(merged) == len(expected) == len(got) > 0 and (merged["count"] == merged["count_got"]).all()
    html = (run["output"] / "knowledge" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "Garment combinations per occasion" in html


def brute_force_scores(crops: pa.Table, vector: np.ndarray) -> dict[str, float]:
    """crop_id -> cosine of every stored crop embedding with the unit `vector`."""
    embeddings = np.asarray(crops["embedding"].to_pylist(), np.float32)
    return dict(zip(crops["crop_id"].to_pylist(), (embeddings @ vector).tolist()))


@pytest.fixture(scope="module")
def queries(run, tmp_path_factory) -> dict:
    """The run's best-scored pair (`chosen`), its crop's pixels as `crop` (a PNG) and its garment's
    sketch as `sketch` (a PNG)."""
    folder = tmp_path_factory.mktemp("queries")
    crops, pairs = read(run, schemas.CROPS_DIR), read(run, schemas.PAIRS_DIR)
    chosen = pairs.filter(pc.is_valid(pairs["crop_id"])).sort_by([("score", "descending")]).to_pylist()[0]
    crop = crops.filter(pc.equal(crops["crop_id"], chosen["crop_id"])).to_pylist()[0]
    Image.open(crop["uri"]).convert("RGB").crop(tuple(crop["box"])).save(folder / "crop.png")
    garment = np.asarray(Image.open(chosen["garment_uri"]).convert("RGB"))
    Image.fromarray(edge_map(garment, equalise=False, cfg=SketchConfig())).save(folder / "sketch.png")
    return {"chosen": chosen, "crop": folder / "crop.png", "sketch": folder / "sketch.png"}


def test_search_returns_the_exact_top_k_over_every_shard_with_the_crops_pairs(run, queries, tmp_path, monkeypatch):
    """quality.search over the run's 2 index shards against the cosine with every stored crop
    embedding, for a text, a crop image and a sketch-plus-text query; one searcher checksums and
    maps each shard once, at its first query; a crop that some garment chose carries that garment;
    jobs.search writes the table and the contact sheet."""
    cfg = run_config(str(run["output"]), ["search.k=5"])
    crops, pairs = read(run, schemas.CROPS_DIR), read(run, schemas.PAIRS_DIR)
    chosen, crop_path, sketch_path = queries["chosen"], queries["crop"], queries["sketch"]
    checksummed = []
    monkeypatch.setattr(shard_index, "file_sha256", lambda path: checksummed.append(path) or file_sha256(path))
    searcher = RunSearcher(cfg, 5)
    for query in (
        Query(text="a red dress"),
        Query(image=str(crop_path)),
        Query(sketch=str(sketch_path), text="a dress"),
    ):
        vector, _ = searcher.query_vectors(read_pictures(query, cfg), query.text)
        expected = brute_force_scores(crops, vector)
        found = searcher.search(query, 5).to_pylist()
        assert len(checksummed) == 2 and len(set(checksummed)) == 2  # the 2 shards, at the first query only
        assert [r["rank"] for r in found] == [1, 2, 3, 4, 5]
        assert [r["score"] for r in found] == pytest.approx(sorted(expected.values(), reverse=True)[:5], abs=2e-3)
        assert [r["score"] for r in found] == pytest.approx([expected[r["crop_id"]] for r in found], abs=2e-3)
        by_crop = {p["crop_id"]: p["garment_id"] for p in pairs.sort_by([("score", "ascending")]).to_pylist()}
        assert all(r["garment_id"] == by_crop.get(r["crop_id"]) for r in found)
    assert found and found[0]["crop_id"] != "" and query.kind == "sketch+text"
    out = tmp_path / "search"
    table = jobs_search.main([str(run["output"]), "--image", str(crop_path), "--out", str(out), "search.k=3"])
    assert table["crop_id"][0].as_py() == chosen["crop_id"]  # a crop's own pixels find it first
    assert table["garment_id"][0].as_py() == chosen["garment_id"]
    html = (out / "index.html").read_text()
    assert pq.read_table(out / "results.parquet").num_rows == 3 and html.count('class="card"') == 3
    with pytest.raises(SystemExit, match=FORBIDDEN_URI):  # outside storage.allowed_local_roots
        jobs_search.main([str(run["output"]), "--sketch", "/etc/hostname", "--text", "a dress"])


def test_search_page_in_the_review_app_draws_uploads_and_shows_results(run, queries, page, tmp_path):
    """The review app's search page in Chromium over the demo run: a drawn sketch plus a text gives
    k result cards, best first, whose images load; an uploaded crop finds that crop first; the
    app serves images of returned crops only."""
    settings = ReviewSettings(storage=run_config(str(run["output"])).storage)
    with serving(create_app(run["output"], tmp_path / "review.sqlite", settings)) as url:
        page.set_default_timeout(30_000)
        page.goto(f"{url}/search")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 60, box["y"] + 40)
        page.mouse.down()
        for x, y in ((200, 40), (220, 220), (40, 220), (60, 40)):
            page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
        page.mouse.up()
        page.fill("#text", "a dress")
        page.fill("#k", "6")
        page.click("#btn-search")
        page.wait_for_selector("#results[data-version='1']")
        assert "6 crops for picture+text" in page.inner_text("#status")
        cards = page.locator("#results figure")
        assert cards.count() == 6
        scores = [float(t.split("\u00b7")[1]) for t in page.locator("#results figcaption b").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)
        deadline = time.monotonic() + 30
        while not all(i.evaluate("i => i.complete && i.naturalWidth > 0") for i in page.locator("#results img").all()):
            assert time.monotonic() < deadline, "the results' images did not load"
            time.sleep(0.05)
        save_screenshot(page, "search", tmp_path)
        returned = set(page.eval_on_selector_all("#results figure", "fs => fs.map(f => f.dataset.cropId)"))

        page.set_input_files("#upload", str(queries["crop"]))
        page.fill("#text", "")
        page.wait_for_timeout(300)  # createImageBitmap draws the upload onto the canvas
        page.click("#btn-search")
        page.wait_for_selector("#results[data-version='2']")
        assert cards.first.get_attribute("data-crop-id") == queries["chosen"]["crop_id"]

        served = page.request.get(f"{url}/api/search-image?crop_id={queries['chosen']['crop_id']}&role=garment")
        assert served.status == 200 and served.headers["content-type"] == "image/jpeg"
        returned.update(page.eval_on_selector_all("#results figure", "fs => fs.map(f => f.dataset.cropId)"))
        never = next(c for c in read(run, schemas.CROPS_DIR)["crop_id"].to_pylist() if c not in returned)
        assert page.request.get(f"{url}/api/search-image?crop_id={never}&role=lookbook").status == 404
        empty = page.request.post(f"{url}/api/search", data={"picture": None, "text": " ", "k": 3})
        assert empty.status == 422 and "needs an image" in empty.text()
