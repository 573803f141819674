"""Pure tests for core/scoring.py: exact top-k merge across shards and best-match scoring."""

import math

import numpy as np
import pytest

from core.candidates import Candidates
from core.index import merge_topk
from core.scoring import NO_CANDIDATE, best_candidate, best_match, vlm_prefiltered


def _brute_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per row, sort the union's valid (score, id) pairs with Python's sort, pad with (-inf, -1)."""
    all_scores = np.concatenate(scores, axis=1)
    all_ids = np.concatenate(ids, axis=1)
    out_scores = np.full((len(all_scores), k), -np.inf, np.float32)
    out_ids = np.full((len(all_scores), k), -1, np.int64)
    for row in range(len(all_scores)):
        pairs = [(float(np.float32(s)), int(i)) for s, i in zip(all_scores[row], all_ids[row]) if i >= 0]
        pairs.sort(key=lambda p: (-p[0], p[1]))
        for j, (s, i) in enumerate(pairs[:k]):
            out_scores[row, j], out_ids[row, j] = s, i
    return out_scores, out_ids


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 7, 40])
def test_merge_topk_equals_brute_force_with_ties_and_missing(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    b, shard_ks = 6, [5, 3, 8]
    scores, ids = [], []
    next_id = 0
    for k_i in shard_ks:
        # few distinct score values -> many exact ties inside and across shards
        s = rng.choice(np.array([0.1, 0.25, 0.5, 0.5, 0.9], np.float32), size=(b, k_i))
        # distinct ids per row, drawn from this shard's own id range
        shard_ids = next_id + rng.permuted(np.tile(np.arange(100), (b, 1)), axis=1)[:, :k_i]
        next_id += 100
        missing = rng.random((b, k_i)) < 0.25
        # missing results carry id -1 and an arbitrary (even very high) score that must be ignored
        s = np.where(missing, np.float32(5.0), s)
        scores.append(s.astype(np.float32))
        ids.append(np.where(missing, -1, shard_ids).astype(np.int64))
    got_scores, got_ids = merge_topk(scores, ids, k)
    want_scores, want_ids = _brute_topk(scores, ids, k)
    assert got_scores.shape == got_ids.shape == (b, k)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores)


def test_merge_topk_hand_example_tie_by_id_and_padding() -> None:
    scores = [np.array([[0.9, 0.5, 0.0]], np.float32), np.array([[0.5, 0.7]], np.float32)]
    ids = [np.array([[8, 4, -1]]), np.array([[2, -1]])]
    got_scores, got_ids = merge_topk(scores, ids, 5)
    # valid: (0.9, 8), (0.5, 4), (0.5, 2); the tie at 0.5 goes to the lower id; then two pads
    np.testing.assert_array_equal(got_ids, [[8, 2, 4, -1, -1]])
    np.testing.assert_array_equal(got_scores, np.array([[0.9, 0.5, 0.5, -np.inf, -np.inf]], np.float32))


def test_merge_topk_missing_ranked_below_any_real_score() -> None:
    scores = [np.array([[-0.99, 3.0]], np.float32)]
    ids = [np.array([[11, -1]])]
    got_scores, got_ids = merge_topk(scores, ids, 2)
    np.testing.assert_array_equal(got_ids, [[11, -1]])
    np.testing.assert_array_equal(got_scores, np.array([[-0.99, -np.inf]], np.float32))


def test_merge_topk_pads_when_union_is_narrower_than_k() -> None:
    scores = [np.array([[0.3], [0.1]], np.float32), np.array([[0.2], [0.4]], np.float32)]
    ids = [np.array([[1], [5]]), np.array([[2], [6]])]
    got_scores, got_ids = merge_topk(scores, ids, 4)
    np.testing.assert_array_equal(got_ids, [[1, 2, -1, -1], [6, 5, -1, -1]])
    np.testing.assert_array_equal(
        got_scores, np.array([[0.3, 0.2, -np.inf, -np.inf], [0.4, 0.1, -np.inf, -np.inf]], np.float32)
    )
    assert got_scores.dtype == np.float32 and got_ids.dtype == np.int64


# best_match on hand-made unit vectors in 2D: u(a) = (cos a, sin a), so u(a) . u(b) = cos(a - b).


def _u(angle_deg: float) -> list[float]:
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


def _arrays(garment_img, garment_cap, cand_img, cand_cap, valid):
    return (
        np.array(garment_img, np.float32),
        np.array(garment_cap, np.float32),
        np.array(cand_img, np.float32),
        np.array(cand_cap, np.float32),
        np.array(valid, bool),
    )


def _cos(deg: float) -> float:
    return math.cos(math.radians(deg))


def test_best_match_exact_scores_index_and_margin() -> None:
    # one garment at image angle 0, caption angle 90; three candidates
    # candidate j: image angle ai[j], caption angle ac[j]
    ai, ac = [60.0, 0.0, 90.0], [90.0, 180.0, 30.0]
    args = _arrays([_u(0)], [_u(90)], [[_u(a) for a in ai]], [[_u(a) for a in ac]], [[True, True, True]])
    lv, ls = 0.3, 0.7
    m = best_match(*args, lambda_vlm=lv, lambda_siglip=ls)
    s_vlm = [_cos(90 - a) for a in ac]  # [1, 0, 0.5]
    s_sig = [_cos(0 - a) for a in ai]  # [0.5, 1, 0]
    total = [lv * v + ls * s for v, s in zip(s_vlm, s_sig)]
    # by hand: S = [0.3*1 + 0.7*0.5, 0.3*0 + 0.7*1, 0.3*0.5 + 0.7*0] = [0.65, 0.70, 0.15]
    np.testing.assert_allclose(total, [0.65, 0.70, 0.15], atol=1e-12)
    assert m.index.tolist() == [1]
    np.testing.assert_allclose(m.score, [0.70], atol=1e-6)
    np.testing.assert_allclose(m.s_vlm, [0.0], atol=1e-6)
    np.testing.assert_allclose(m.s_siglip, [1.0], atol=1e-6)
    np.testing.assert_allclose(m.margin, [0.70 - 0.65], atol=1e-6)


def test_best_match_invalid_candidates_are_skipped_and_batch_rows_independent() -> None:
    # row 0: the best raw candidate (index 0) is invalid, so index 2 wins over index 1
    # row 1: only candidate 1 is valid -> NaN margin; row 2: none valid -> NO_CANDIDATE, NaN scores
    g = [_u(0), _u(0), _u(0)]
    cand = [
        [_u(0), _u(80), _u(40)],
        [_u(0), _u(60), _u(10)],
        [_u(0), _u(0), _u(0)],
    ]
    valid = [[False, True, True], [False, True, False], [False, False, False]]
    args = _arrays(g, g, cand, cand, valid)
    m = best_match(*args, lambda_vlm=0.5, lambda_siglip=0.5)
    assert m.index.tolist() == [2, 1, NO_CANDIDATE]
    # with image == caption vectors and weights 0.5 + 0.5, S = cos(angle)
    np.testing.assert_allclose(m.score[:2], [_cos(40), _cos(60)], atol=1e-6)
    np.testing.assert_allclose(m.s_vlm[:2], [_cos(40), _cos(60)], atol=1e-6)
    np.testing.assert_allclose(m.s_siglip[:2], [_cos(40), _cos(60)], atol=1e-6)
    np.testing.assert_allclose(m.margin[0], _cos(40) - _cos(80), atol=1e-6)
    assert np.isnan(m.margin[1])
    assert np.isnan(m.score[2]) and np.isnan(m.s_vlm[2]) and np.isnan(m.s_siglip[2]) and np.isnan(m.margin[2])


def test_best_match_single_candidate_column() -> None:
    args = _arrays([_u(0), _u(0)], [_u(0), _u(0)], [[_u(30)], [_u(30)]], [[_u(60)], [_u(60)]], [[True], [False]])
    m = best_match(*args, lambda_vlm=1.0, lambda_siglip=2.0)
    assert m.index.tolist() == [0, NO_CANDIDATE]
    np.testing.assert_allclose(m.score[0], 1.0 * _cos(60) + 2.0 * _cos(30), atol=1e-6)
    assert np.isnan(m.margin).all() and np.isnan(m.score[1])


def test_best_match_ties_go_to_lower_index() -> None:
    # candidates 1 and 3 are identical and best; 0 and 2 are worse
    cand = [[_u(50), _u(10), _u(20), _u(10)]]
    args = _arrays([_u(0)], [_u(0)], cand, cand, [[True, True, True, True]])
    m = best_match(*args, lambda_vlm=0.5, lambda_siglip=0.5)
    assert m.index.tolist() == [1]
    assert m.margin[0] == 0.0  # best minus an equal runner-up


def test_best_match_tie_with_invalid_lower_index_goes_to_valid_one() -> None:
    cand = [[_u(10), _u(10), _u(10)]]
    args = _arrays([_u(0)], [_u(0)], cand, cand, [[False, True, True]])
    m = best_match(*args, lambda_vlm=0.5, lambda_siglip=0.5)
    assert m.index.tolist() == [1]
    assert m.margin[0] == 0.0


@pytest.mark.parametrize(("lv", "ls"), [(0.0, 1.0), (1.0, 0.0)])
def test_best_match_zero_lambda_reduces_to_one_part(lv: float, ls: float) -> None:
    # image similarity prefers candidate 0, caption similarity prefers candidate 1
    ai, ac = [0.0, 70.0], [80.0, 20.0]
    args = _arrays([_u(0)], [_u(0)], [[_u(a) for a in ai]], [[_u(a) for a in ac]], [[True, True]])
    m = best_match(*args, lambda_vlm=lv, lambda_siglip=ls)
    s_vlm, s_sig = [_cos(a) for a in ac], [_cos(a) for a in ai]
    part = s_sig if lv == 0.0 else s_vlm
    best = int(np.argmax(part))
    assert m.index.tolist() == [best] == [0 if lv == 0.0 else 1]
    np.testing.assert_allclose(m.score, [part[best]], atol=1e-6)
    np.testing.assert_allclose(m.margin, [part[best] - part[1 - best]], atol=1e-6)
    # both parts are still reported for the chosen candidate
    np.testing.assert_allclose(m.s_vlm, [s_vlm[best]], atol=1e-6)
    np.testing.assert_allclose(m.s_siglip, [s_sig[best]], atol=1e-6)


def test_best_match_random_against_brute_force() -> None:
    rng = np.random.default_rng(7)
    b, k, d = 20, 6, 8

    def unit(*shape: int) -> np.ndarray:
        v = rng.normal(size=(*shape, d))
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    gi, gc, ci, cc = unit(b), unit(b), unit(b, k), unit(b, k)
    valid = rng.random((b, k)) < 0.6
    valid[0] = False
    valid[1] = [True] + [False] * (k - 1)
    lv, ls = 0.4, 0.6
    m = best_match(gi, gc, ci, cc, valid, lambda_vlm=lv, lambda_siglip=ls)
    for row in range(b):
        cands = [
            (lv * float(gc[row] @ cc[row, j]) + ls * float(gi[row] @ ci[row, j]), j) for j in range(k) if valid[row, j]
        ]
        if not cands:
            assert m.index[row] == NO_CANDIDATE and np.isnan(m.score[row]) and np.isnan(m.margin[row])
            continue
        cands.sort(key=lambda c: (-c[0], c[1]))
        assert m.index[row] == cands[0][1]
        assert m.score[row] == pytest.approx(cands[0][0], abs=1e-5)
        if len(cands) == 1:
            assert np.isnan(m.margin[row])
        else:
            assert m.margin[row] == pytest.approx(cands[0][0] - cands[1][0], abs=1e-5)


def test_vlm_prefilter_ranks_only_the_candidates_the_vlm_likes_most() -> None:
    """Candidate 0 is the best by S_SigLIP but the VLM ranks it third: a pre-filter keeping two
    drops it, and the better S_SigLIP of the two left wins; the margin is to the other one."""
    s_vlm = np.array([[0.1, 0.9, 0.5, 0.3, 0.9]], np.float32)
    s_siglip = np.array([[0.9, 0.2, 0.6, 0.8, 0.1]], np.float32)
    valid = np.array([[True, True, True, True, False]])  # the invalid one would win the pre-filter
    assert vlm_prefiltered(s_vlm, valid, 2).tolist() == [[False, True, True, False, False]]
    assert vlm_prefiltered(s_vlm, valid, 0).tolist() == valid.tolist()
    plain = best_candidate(s_vlm, s_siglip, valid, 0.0, 1.0)
    narrowed = best_candidate(s_vlm, s_siglip, valid, 0.0, 1.0, vlm_prefilter=2)
    assert (plain.index[0], narrowed.index[0]) == (0, 2)
    assert narrowed.margin[0] == pytest.approx(0.6 - 0.2)


def test_vlm_prefilter_keeps_ties_at_the_lower_index() -> None:
    s_vlm = np.array([[0.5, 0.5, 0.5]], np.float32)
    assert vlm_prefiltered(s_vlm, np.ones((1, 3), bool), 2).tolist() == [[True, True, False]]


# --- core/candidates.py: a garment's shortlist across index shards -------------------------------


def _candidates(ids: list[list[int]], scores: list[list[float]]) -> Candidates:
    ids_array = np.array(ids, np.int64)
    return Candidates(
        ids=ids_array,
        s_siglip=np.array(scores, np.float32),
        s_vlm=np.array(scores, np.float32) / 2,
        crop_ids=np.array([[f"c{i}" if i >= 0 else None for i in row] for row in ids], dtype=object),
        image_ids=np.array([[f"i{i}" if i >= 0 else None for i in row] for row in ids], dtype=object),
        image_uris=np.array([[f"/l/i{i}.jpg" if i >= 0 else None for i in row] for row in ids], dtype=object),
        boxes=np.repeat(ids_array[..., None].astype(np.float32), 4, axis=2),
    )


def test_shortlists_merge_by_score_then_lower_id_and_keep_their_columns_together() -> None:
    first = _candidates([[5, 9, -1], [1, 2, 3]], [[0.9, 0.4, -np.inf], [0.5, 0.5, 0.1]])
    second = _candidates([[7, 8, -1], [0, -1, -1]], [[0.4, 0.95, -np.inf], [0.5, -np.inf, -np.inf]])
    merged = first.merged(second, 3)
    assert merged.ids.tolist() == [[8, 5, 7], [0, 1, 2]]  # 0.4 tie: id 7 before 9; 0.5 ties: 0, 1, 2
    assert merged.crop_ids.tolist() == [["c8", "c5", "c7"], ["c0", "c1", "c2"]]
    assert merged.boxes[:, :, 0].tolist() == merged.ids.tolist()
    np.testing.assert_allclose(merged.s_vlm, merged.s_siglip / 2)
    batch = {"x": np.zeros(2), **merged.columns()}
    back = Candidates.of(batch, 3)  # string fields are lists of k per row in a batch
    assert back.crop_ids.tolist() == merged.crop_ids.tolist()
    assert back.image_uris.tolist() == [
        ["/l/i8.jpg", "/l/i5.jpg", "/l/i7.jpg"],
        ["/l/i0.jpg", "/l/i1.jpg", "/l/i2.jpg"],
    ]
    assert Candidates.of({"x": np.zeros(2)}, 3).ids.tolist() == [[-1] * 3] * 2  # none yet


def test_candidates_of_some_garments_are_placed_in_the_batch() -> None:
    placed = _candidates([[4, 6]], [[0.7, 0.2]]).placed(np.array([False, True, False]))
    assert placed.ids.tolist() == [[-1, -1], [4, 6], [-1, -1]]
    assert placed.crop_ids.tolist() == [[None, None], ["c4", "c6"], [None, None]]
    assert np.isnan(placed.boxes[0]).all() and np.isneginf(placed.s_siglip[2]).all()
