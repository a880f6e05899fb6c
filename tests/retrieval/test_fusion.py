import pytest

from retrieval.fusion import reciprocal_rank_fusion, weighted_fusion


def test_rrf_matches_hand_computed_scores():
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert max(scores, key=scores.__getitem__) == "b"


def test_rrf_rejects_bad_k():
    with pytest.raises(ValueError):
        reciprocal_rank_fusion([["a"]], k=0)


def test_weighted_fusion_normalises_each_leg():
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    lexical = [("c", 30.0), ("a", 10.0)]
    scores = weighted_fusion(dense, lexical, dense_weight=0.25)
    assert scores["a"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert scores["b"] == pytest.approx(0.25 * 0.5)
    assert scores["c"] == pytest.approx(0.25 * 0.0 + 0.75 * 1.0)


def test_weighted_fusion_single_value_leg_and_empty_leg():
    assert weighted_fusion([("a", 0.3)], [], dense_weight=0.5) == {"a": 0.5}
    with pytest.raises(ValueError):
        weighted_fusion([], [], dense_weight=1.5)
