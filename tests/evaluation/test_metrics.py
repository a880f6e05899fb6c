import math

import numpy as np
import pytest

from citewell.core.errors import EvaluationError
from citewell.evaluation.metrics import (
    dcg,
    mean,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    rank_run,
    recall_at_k,
)

GRADED = {"a": 3, "b": 1, "c": 2}


def test_ndcg_exponential_gain_hand_computed():
    # DCG = (2^1-1)/log2(2) + 0 + (2^3-1)/log2(4) = 1 + 3.5 = 4.5
    # IDCG = 7/log2(2) + 3/log2(3) + 1/log2(4) = 7 + 1.8928 + 0.5 = 9.3928
    assert ndcg_at_k(["b", "x", "a"], GRADED, 3) == pytest.approx(4.5 / 9.392789, rel=1e-6)
    assert ndcg_at_k(["b", "x", "a"], GRADED, 3) == pytest.approx(0.479091, abs=1e-6)


def test_ndcg_linear_gain_hand_computed():
    # DCG = 1 + 3/2 = 2.5; IDCG = 3 + 2/log2(3) + 1/2 = 4.761860
    assert ndcg_at_k(["b", "x", "a"], GRADED, 3, gain="linear") == pytest.approx(0.525005, abs=1e-6)


def test_ndcg_cutoff_only_counts_top_k_and_ideal_is_cut_too():
    # k=1: DCG = 1 (b), IDCG = 7 (a)
    assert ndcg_at_k(["b", "a"], GRADED, 1) == pytest.approx(1 / 7)
    assert ndcg_at_k(["a", "c", "b"], GRADED, 10) == pytest.approx(1.0)


def test_ndcg_binary_gains_agree():
    qrels = {"a": 1, "b": 1}
    ranked = ["x", "a", "y", "b"]
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranked, qrels, 10, gain="linear") == pytest.approx(expected)


def test_duplicates_count_once_at_first_position():
    qrels = {"a": 1, "b": 1}
    assert recall_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert ndcg_at_k(["a", "a", "b"], qrels, 2) == pytest.approx(1.0)


def test_empty_cases_score_zero():
    assert ndcg_at_k([], GRADED, 10) == 0.0
    assert recall_at_k([], GRADED, 10) == 0.0
    assert mrr_at_k([], GRADED, 10) == 0.0
    for qrels in ({}, {"a": 0, "b": -1}):
        assert ndcg_at_k(["a", "b"], qrels, 10) == 0.0
        assert recall_at_k(["a", "b"], qrels, 10) == 0.0
        assert mrr_at_k(["a", "b"], qrels, 10) == 0.0


def test_non_positive_grades_are_not_relevant():
    qrels = {"a": 1, "b": 1, "c": 0, "d": -1}
    assert recall_at_k(["c", "d", "a"], qrels, 3) == 0.5
    assert mrr_at_k(["c", "d", "a"], qrels, 3) == pytest.approx(1 / 3)


def test_mrr_respects_cutoff():
    assert mrr_at_k(["x", "y", "a"], {"a": 1}, 2) == 0.0
    assert mrr_at_k(["x", "a"], {"a": 1}, 2) == 0.5


def test_invalid_k_raises():
    with pytest.raises(EvaluationError):
        ndcg_at_k(["a"], {"a": 1}, 0)


def test_rank_run_breaks_ties_by_descending_doc_id_like_trec_eval():
    assert rank_run({"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.5}) == ["c", "b", "a", "d"]
    assert rank_run({}) == []


def test_dcg_of_nothing_is_zero():
    assert dcg([]) == 0.0


def test_percentile_matches_numpy_linear_interpolation():
    values = [12.0, 3.0, 7.5, 1.0, 40.0, 9.0]
    for q in (0, 25, 50, 90, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([5.0], 95) == 5.0


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(EvaluationError):
        percentile([], 50)
    with pytest.raises(EvaluationError):
        percentile([1.0], 101)


def test_mean():
    assert mean([]) == 0.0
    assert mean([1.0, 2.0]) == 1.5
