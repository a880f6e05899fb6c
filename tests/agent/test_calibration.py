import pytest

from agent.calibration import calibrate_threshold
from core.errors import EvaluationError


def test_threshold_separates_scores_and_reports_balanced_accuracy():
    c = calibrate_threshold([0.8, 0.7, 0.65, 0.4], [0.3, 0.5, 0.2])
    assert 0.5 < c.threshold <= 0.65
    assert c.answer_rate_answerable == 0.75 and c.refusal_rate_unanswerable == 1.0
    assert c.balanced_accuracy == 0.875


def test_needs_both_kinds():
    with pytest.raises(EvaluationError):
        calibrate_threshold([0.5], [])
