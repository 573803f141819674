"""Evaluation metrics on hand-made tiny cases: every expected value is worked out in the comments."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.boxes import iou, match_by_iou
from core.config import TierConfig
from core.tiering import by_cutoffs, cutoffs_in_memory
from core.vocab import ATTRIBUTES
from jobs import evaluate
from quality import evaluation as ev

# Truth of the tiny benchmark used below:
#   img1: gA [0,0,10,10], gB [20,0,30,10];  img2: gA [0,0,10,10];  img3: a distractor coat [5,5,15,15];
#   img4: gC [0,0,4,4].  Catalogue: gA gB gC gD (gD is in no scene).  Matchable: gA gB gC -> 3.
TRUTH = pa.table(
    {
        "image_id": ["img1", "img1", "img2", "img3", "img4"],
        "garment_id": ["gA", "gB", "gA", "", "gC"],
        "x0": pa.array([0, 20, 0, 5, 0], pa.float32()),
        "y0": pa.array([0, 0, 0, 5, 0], pa.float32()),
        "x1": pa.array([10, 30, 10, 15, 4], pa.float32()),
        "y1": pa.array([10, 10, 10, 15, 4], pa.float32()),
        "category": ["", "", "", "coat", ""],
        "colour": ["", "", "", "black", ""],
        "pattern": ["", "", "", "", ""],
    }
)
GARMENTS = pa.table(
    {
        "garment_id": ["gA", "gB", "gC", "gD"],
        "category": ["dress", "t-shirt", "jeans", "skirt"],
        "colour": ["red", "blue", "blue", "black"],
        "pattern": ["solid", "striped", "solid", "solid"],
        **{name: [""] * 4 for name in ("sleeve", "length", "occasion")},
    }
)
# Pairs: gA->img2 high (true), gB->img3 high (false), gC->img4 mid (true), gD->img1 low (false),
# gE (no candidate) unmatched. Candidates: gA [img3, img1, img2] (first true at 1), gB [img2, img4]
# (none true), gC [img4] (first true at 0), gD [img1] (not matchable), gE [].
PAIRS = pa.table(
    {
        "garment_id": ["gA", "gB", "gC", "gD", "gE"],
        "image_id": ["img2", "img3", "img4", "img1", None],
        "score": pa.array([0.9, 0.8, 0.7, 0.6, None], pa.float32()),
        "tier": ["high", "high", "mid", "low", "unmatched"],
        "candidate_image_ids": [["img3", "img1", "img2"], ["img2", "img4"], ["img4"], ["img1"], []],
    }
)


def _crops(rows: list[tuple[str, list[float], str, str, str]]) -> pa.Table:
    return pa.table(
        {
            "crop_id": [f"{image}:{k}" for k, (image, *_) in enumerate(rows)],
            "image_id": [r[0] for r in rows],
            "box": pa.array([r[1] for r in rows], pa.list_(pa.float32(), 4)),
            "category": [r[2] for r in rows],
            "colour": [r[3] for r in rows],
            "pattern": [r[4] for r in rows],
            **{name: ["unknown"] * len(rows) for name in ("sleeve", "length", "occasion")},
        }
    )


# img1: c0 = gA's box (IoU 1), c1 = [20,0,30,20] against gB [20,0,30,10]: 100 / 200 = IoU 0.5 exactly (kept);
# img2: [0,0,20,20] against [0,0,10,10]: 100 / 400 = 0.25 (missed); img3: the distractor's box; img4: no crop.
CROPS = _crops(
    [
        ("img1", [0, 0, 10, 10], "dress", "blue", "solid"),
        ("img1", [20, 0, 30, 20], "t-shirt", "blue", "checked"),
        ("img2", [0, 0, 20, 20], "dress", "red", "solid"),
        ("img3", [5, 5, 15, 15], "coat", "white", "floral"),
    ]
)


def test_wilson_interval_known_cases():
    # 8/10: the textbook Wilson 95 % interval (0.4902, 0.9433)
    low, high = ev.wilson_interval(8, 10)
    assert low == pytest.approx(0.490162, abs=1e-6) and high == pytest.approx(0.943318, abs=1e-6)
    # p = 1: the lower bound reduces to n / (n + z^2) = 10 / 13.841459, the upper is 1
    assert ev.wilson_interval(10, 10) == (pytest.approx(10 / (10 + ev.Z_95**2)), pytest.approx(1.0))
    assert ev.wilson_interval(0, 10)[0] == 0.0
    assert all(math.isnan(x) for x in ev.wilson_interval(0, 0))


def test_proportion_as_dict():
    assert ev.Proportion(1, 2).as_dict() == {
        "value": 0.5,
        "hits": 1,
        "total": 2,
        "ci95": [pytest.approx(0.094531, abs=1e-6), pytest.approx(0.905469, abs=1e-6)],
    }
    assert ev.Proportion(0, 0).as_dict() == {"value": None, "hits": 0, "total": 0, "ci95": [None, None]}


def test_true_pairs_and_matchable_garments():
    assert sorted(ev.matchable_garments(TRUTH).to_pylist()) == ["gA", "gB", "gC"]
    assert len(ev.true_pair_keys(TRUTH)) == 4  # gA@img1, gB@img1, gA@img2, gC@img4
    true = ev.is_true_pair(PAIRS["garment_id"].combine_chunks(), PAIRS["image_id"].combine_chunks(), TRUTH)
    assert true.tolist() == [True, False, True, False, False]


def test_tier_metrics_per_tier_and_cumulative():
    m = ev.tier_metrics(PAIRS, TRUTH)
    got = {t: {k: (p.hits, p.total) for k, p in v.items()} for t, v in m.items()}
    assert got == {
        "high": {"precision": (1, 2), "cumulative_precision": (1, 2), "cumulative_recall": (1, 3)},
        "mid": {"precision": (1, 1), "cumulative_precision": (2, 3), "cumulative_recall": (2, 3)},
        "low": {"precision": (0, 1), "cumulative_precision": (2, 4), "cumulative_recall": (2, 3)},
    }


def test_retrieval_recall_at_k():
    assert ev.first_true_rank(PAIRS, TRUTH).tolist() == [1, -1, 0, -1, -1]
    recall = ev.retrieval_recall(PAIRS, TRUTH, (1, 2, 10))
    assert {k: (p.hits, p.total) for k, p in recall.items()} == {1: (1, 3), 2: (2, 3), 10: (2, 3)}


def test_iou_hand_cases():
    a = np.array([[0, 0, 2, 2]], float)
    b = np.array([[1, 1, 3, 3], [2, 0, 4, 2], [0, 0, 2, 2], [5, 5, 5, 5]], float)
    # overlap 1x1 over 4 + 4 - 1; touching edge; identical; zero-area box far away
    np.testing.assert_allclose(iou(a, b), [[1 / 7, 0.0, 1.0, 0.0]])
    assert iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_match_by_iou_is_greedy_one_to_one_and_keeps_the_threshold():
    truth = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    # found 0 = truth 0 exactly (IoU 1; 80 / 120 with truth 1); found 1 = truth 1 twice as tall: IoU 100 / 200
    found = np.array([[0, 0, 10, 10], [2, 0, 12, 20]], float)
    np.testing.assert_allclose(iou(truth, found), [[1.0, 80 / 220], [80 / 120, 0.5]])
    t, f = match_by_iou(truth, found, 0.5)
    assert (t.tolist(), f.tolist()) == ([0, 1], [0, 1])  # truth 1 loses found 0 to truth 0, takes found 1
    t, f = match_by_iou(truth, found, 0.51)
    assert (t.tolist(), f.tolist()) == ([0], [0])


def test_detection_recall_and_attribute_accuracy():
    matched_truth, matched_crops = ev.match_truth_to_crops(TRUTH, CROPS, 0.5)
    assert sorted(zip(matched_truth.tolist(), matched_crops.tolist())) == [(0, 0), (1, 1), (3, 3)]
    values = ev.truth_attributes(TRUTH, GARMENTS)
    assert values["category"].tolist() == ["dress", "t-shirt", "dress", "coat", "jeans"]
    assert values["colour"].tolist() == ["red", "blue", "red", "black", "blue"]
    assert values["pattern"].tolist() == ["solid", "striped", "solid", "", "solid"]
    accuracy = ev.attribute_accuracy(values, CROPS, matched_truth, matched_crops)
    # gA@img1 vs c0: dress ok, red/blue no, solid ok; gB vs c1: ok, ok, striped/checked no;
    # coat vs c3: ok, black/white no, pattern unknown (skipped); sleeve/length/occasion unknown everywhere
    assert {a: (p.hits, p.total) for a, p in accuracy.items()} == {
        "category": (3, 3),
        "colour": (1, 3),
        "pattern": (1, 2),
        "sleeve": (0, 0),
        "length": (0, 0),
        "occasion": (0, 0),
    }


# Scores exact in float32. Sorted: 0.875 T, 0.75 T, 0.75 F, 0.5 T, 0.25 F (NaN left out):
# precision 1, 1, 2/3, 3/4, 3/5 at ranks 1..5.
SCORES = np.array([0.25, 0.875, 0.75, np.nan, 0.75, 0.5], np.float32)
TRUE = np.array([False, True, True, False, False, True])


def test_precision_coverage_curve():
    curve = ev.precision_coverage(SCORES, TRUE)
    assert curve["rank"].tolist() == [1, 2, 3, 4, 5]
    assert curve["score"].tolist() == [0.875, 0.75, 0.75, 0.5, 0.25]
    assert curve["true"].tolist() == [True, True, False, True, False]
    np.testing.assert_allclose(curve["precision"], [1, 1, 2 / 3, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve["coverage"], [0.2, 0.4, 0.6, 0.8, 1.0])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.95, 0.875),  # 0.75 would take both tied pairs: 2/3
        (0.7, 0.5),  # precision is not monotone: 0.75 gives 2/3, 0.5 gives 3/4
        (0.6, 0.25),
        (1.01, None),
    ],
)
def test_threshold_for_precision(target, expected):
    assert ev.threshold_for_precision(SCORES, TRUE, target) == expected


def test_cutoffs_in_memory_rank_by_score_then_id():
    scores = np.array([0.5, 0.75, 0.5, np.nan], np.float32)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    cutoffs = cutoffs_in_memory(scores, ids, {"high": 1, "mid": 1, "low": 5})
    assert cutoffs == [(0.75, "b"), (0.5, "a"), None]
    assert by_cutoffs(scores, ids, cutoffs).tolist() == ["mid", "high", "low", "unmatched"]
    assert cutoffs_in_memory(scores, ids, {"high": 0, "mid": 2, "low": 0})[0] == (float("inf"), "")


# g1: s_vlm [0.5, 1.0], s_siglip [1.0, 0.25]; g2: one candidate (0.25, 0.5); g3: none.
CANDIDATES = pa.table(
    {
        "garment_id": ["g1", "g2", "g3"],
        "candidate_crop_ids": [["i1:0", "i2:0"], ["i3:1"], []],
        "candidate_image_ids": [["i1", "i2"], ["i3"], []],
        "candidate_s_vlm": pa.array([[0.5, 1.0], [0.25], []], pa.list_(pa.float32())),
        "candidate_s_siglip": pa.array([[1.0, 0.25], [0.5], []], pa.list_(pa.float32())),
    }
)
COUNT_TIERS = TierConfig(mode="count", counts={"high": 1, "mid": 1, "low": 5})


@pytest.mark.parametrize(
    ("lambdas", "image", "score", "margin"),
    [
        ((0.0, 1.0), "i1", [1.0, 0.5], 0.75),  # S_SigLIP alone: candidate 0
        ((1.0, 0.0), "i2", [1.0, 0.25], 0.5),  # S_VLM alone: candidate 1
        ((0.5, 0.5), "i1", [0.75, 0.375], 0.125),  # combined: [0.75, 0.625] and [0.375]
    ],
)
def test_rescored_picks_the_best_candidate_and_tiers_by_count(lambdas, image, score, margin):
    out = ev.rescored(CANDIDATES, *lambdas, COUNT_TIERS)
    assert out["image_id"].to_pylist() == [image, "i3", None]
    assert out["crop_id"].to_pylist() == [f"{image}:0", "i3:1", None]
    assert out["score"].to_pylist()[:2] == score and math.isnan(out["score"][2].as_py())
    assert out["margin"][0].as_py() == margin and math.isnan(out["margin"][1].as_py())
    assert out["tier"].to_pylist() == ["high", "mid", "unmatched"]


def test_rescored_by_crop_margin_ranks_a_crop_another_garment_claims_better_lower():
    """g1 and g2 both pick crop i1:0 (S_SigLIP 0.9 and 0.8); g3 picks i3:0 at 0.7, which g2 holds
    only at 0.1. By score g1 > g2 > g3; by score plus crop margin g3 (0.7 + 0.6) > g1 (0.9 + 0.1) >
    g2 (0.8 - 0.1): g2's crop is g1's."""
    pairs = pa.table(
        {
            "garment_id": ["g1", "g2", "g3"],
            "candidate_crop_ids": [["i1:0"], ["i1:0", "i3:0"], ["i3:0"]],
            "candidate_image_ids": [["i1"], ["i1", "i3"], ["i3"]],
            "candidate_s_vlm": pa.array([[0.0], [0.0, 0.0], [0.0]], pa.list_(pa.float32())),
            "candidate_s_siglip": pa.array([[0.9], [0.8, 0.1], [0.7]], pa.list_(pa.float32())),
        }
    )
    by_score = ev.rescored(pairs, 0.0, 1.0, replace(COUNT_TIERS, key="score"))
    by_both = ev.rescored(pairs, 0.0, 1.0, replace(COUNT_TIERS, key="score_plus_crop_margin"))
    np.testing.assert_allclose(by_both["crop_margin"].to_pylist(), [0.1, -0.1, 0.6], atol=1e-6)
    assert by_score["tier"].to_pylist() == ["high", "mid", "low"]
    assert by_both["tier"].to_pylist() == ["mid", "low", "high"]


def test_rescored_threshold_tiers():
    thresholds = TierConfig(mode="threshold", thresholds={"high": 0.7, "mid": 0.5, "low": 0.3})
    assert ev.rescored(CANDIDATES, 0.5, 0.5, thresholds)["tier"].to_pylist() == ["high", "low", "unmatched"]
    assert ev.rescored(CANDIDATES, 0.0, 1.0, thresholds)["tier"].to_pylist() == ["high", "mid", "unmatched"]


def test_ablation_lambdas_keep_the_score_range():
    assert ev.ablation_lambdas(0.3, 0.5) == {
        "siglip_only": (0.0, 0.8),
        "vlm_only": (0.8, 0.0),
        "combined": (0.3, 0.5),
    }


def test_report_puts_it_together():
    out = ev.report(PAIRS, TRUTH, GARMENTS, CROPS, top_k=2, settings=ev.EvalSettings(ks=(1, 2, 10)))
    assert out["counts"] == {
        "pairs": 5,
        "scored_pairs": 4,
        "true_pairs_found": 2,
        "matchable_garments": 3,
        "true_pairs": 4,
        "truth_boxes": 5,
        "top_k": 2,
    }
    assert out["tiers"]["high"]["precision"]["value"] == 0.5
    assert out["retrieval_recall"]["2"]["hits"] == 2 and out["retrieval_recall"]["10"] is None  # 10 > top_k
    # scores 0.9 T, 0.8 F, 0.7 T, 0.6 F: only the top pair reaches 95 % -> 1 of 4 scored pairs
    assert out["precision_threshold"] == {"target": 0.95, "score": pytest.approx(0.9), "coverage": 0.25}
    assert (out["detection_recall"]["hits"], out["detection_recall"]["total"]) == (3, 5)
    assert set(out["attribute_accuracy"]) == set(ATTRIBUTES)
    assert ev.report(PAIRS, TRUTH, GARMENTS, None, 2, ev.EvalSettings())["detection_recall"] is None


def test_evaluate_job_reads_a_run_folder_and_writes_json_and_curve(tmp_path, capsys):
    run, split = tmp_path / "run", tmp_path / "split"
    for folder, table in (("pairs", PAIRS), ("crops", CROPS)):
        (run / folder / "shard=00000").mkdir(parents=True)
        pq.write_table(table, run / folder / "shard=00000" / "part-000000.parquet")
    split.mkdir()
    pq.write_table(TRUTH, split / "truth.parquet")
    pq.write_table(GARMENTS, split / "garments.parquet")
    report = evaluate.main(["--pairs", str(run), "--truth", str(split), "--ks", "1", "2", "10"])
    assert json.loads((run / "evaluation.json").read_text()) == json.loads(json.dumps(report))
    assert report["counts"]["top_k"] == 3  # no config.yaml: the longest candidate list
    assert [report["retrieval_recall"][k]["hits"] for k in ("1", "2")] == [1, 2] and report["retrieval_recall"][
        "10"
    ] is None
    assert report["detection_recall"]["hits"] == 3
    assert pq.read_table(run / "evaluation.curve.parquet")["precision"].to_pylist() == [1.0, 0.5, 2 / 3, 0.5]
    assert "retrieval recall@2   0.667 [" in capsys.readouterr().out


def test_ablate_mines_each_run_in_a_process_of_its_own_once(tmp_path, monkeypatch):
    """#13, item 11: the two mining jobs of an ablation ran in the ablation's own process."""
    from core.config import config_hash, load_config
    from jobs import ablate

    args = ["lookbook=l.parquet", "garments=g.parquet", f"output={tmp_path / 'run'}"]
    commands = []

    def mined(command, check):
        commands.append(command)
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "summary.json").write_text(json.dumps({"config_hash": config_hash(load_config(args))}))

    monkeypatch.setattr(ablate.subprocess, "run", mined)
    first, again = ablate.mine_once(args), ablate.mine_once(args)
    assert commands == [[sys.executable, "-m", "jobs.mine", *args]]  # the second call reuses the run
    assert first == again
