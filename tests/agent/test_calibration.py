import pytest

from citewell.agent.calibration import calibrate_threshold
from citewell.core.errors import EvaluationError


def test_threshold_separates_scores_and_reports_balanced_accuracy():
    c = calibrate_threshold([0.8, 0.7, 0.65, 0.4], [0.3, 0.5, 0.2])
    assert 0.5 < c.threshold <= 0.65
    assert c.answer_rate_answerable == 0.75 and c.refusal_rate_unanswerable == 1.0
    assert c.balanced_accuracy == 0.875


def test_needs_both_kinds():
    with pytest.raises(EvaluationError):
        calibrate_threshold([0.5], [])


def test_false_refusal_budget_caps_refusals_of_answerable_questions():
    answerable = [0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.2]
    unanswerable = [0.55, 0.5, 0.42, 0.38, 0.33, 0.3, 0.25, 0.1]
    free = calibrate_threshold(answerable, unanswerable)
    capped = calibrate_threshold(answerable, unanswerable, max_false_refusal=0.1)
    assert 1 - free.answer_rate_answerable > 0.1  # unconstrained refuses more answerables
    assert 1 - capped.answer_rate_answerable <= 0.1
    assert capped.threshold <= free.threshold
    assert capped.balanced_accuracy <= free.balanced_accuracy
    with pytest.raises(EvaluationError):
        calibrate_threshold(answerable, unanswerable, max_false_refusal=1.5)
