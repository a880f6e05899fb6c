"""Calibrating the answerability model: weights from enough judgements, else the threshold
only; the threshold keeps false refusals on the calibration questions within the budget; the
calibration file round-trips and a broken one never breaks answering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from citewell.agent.answerability import (
    FEATURES,
    AnswerabilityModel,
    CalibrationSource,
    default_model,
    load_model,
)
from citewell.core.errors import ConfigurationError, EvaluationError
from citewell.evaluation.answerability import JudgedFeatures, fit_model, rates, threshold_for


def judged(n_answerable: int, n_unanswerable: int, seed: int = 3) -> list[JudgedFeatures]:
    """Synthetic questions: answerable ones have a similar sentence that covers the key terms;
    unanswerable ones are as similar but miss a key term."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_answerable + n_unanswerable):
        answerable = i < n_answerable
        rows = []
        for _ in range(3):
            row = rng.uniform(0.0, 1.0, len(FEATURES))
            row[FEATURES.index("similarity")] = rng.uniform(0.4, 0.8)
            row[FEATURES.index("key_coverage_chunk")] = (
                rng.uniform(0.8, 1.0) if answerable else rng.uniform(0.0, 0.7)
            )
            # A count of key terms neither chunk nor document holds: any one vetoes the
            # candidate, so the synthetic passages hold them all and coverage separates.
            row[FEATURES.index("key_missing_chunk")] = 0.0
            rows.append(tuple(float(v) for v in row))
        out.append(JudgedFeatures(question=f"q{i}", answerable=answerable, rows=tuple(rows)))
    return out


def test_enough_judgements_refit_the_weights_within_the_false_refusal_budget():
    data = judged(60, 60)
    model = fit_model(data, "synthetic", default_model(), max_false_refusal=0.05)
    assert model.figures.weights_fitted and model.figures.answerable == 60
    assert model.weights != default_model().weights
    refused, false = rates(model, data)
    assert false is not None and false <= 0.05
    assert refused is not None and refused >= 0.9  # the key-coverage signal separates them
    assert model.figures.refusal_rate_unanswerable == pytest.approx(refused, abs=1e-4)
    assert 1 - model.figures.answer_rate_answerable == pytest.approx(false, abs=1e-4)
    weight = dict(zip(FEATURES, model.weights, strict=True))
    assert weight["key_coverage_chunk"] > 0


def test_few_judgements_recalibrate_only_the_threshold():
    base = default_model()
    model = fit_model(judged(8, 3), "few", base, max_false_refusal=0.0)
    assert not model.figures.weights_fitted
    assert model.weights == base.weights and model.bias == base.bias
    assert rates(model, judged(8, 3))[1] == 0.0  # budget 0: no answerable question refused


def test_calibration_needs_both_kinds_and_a_sane_budget():
    with pytest.raises(EvaluationError, match="answerable and unanswerable"):
        fit_model(judged(10, 0), "x", default_model())
    with pytest.raises(EvaluationError):
        fit_model(judged(10, 10), "x", default_model(), max_false_refusal=1.0)


def test_threshold_refuses_at_most_the_budget():
    confidences = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    t = threshold_for(confidences, 0.2)
    assert np.mean(confidences < t) == 0.2 and 0.1 < t < 0.2
    assert np.mean(confidences < threshold_for(confidences, 0.0)) == 0.0


def test_shipped_calibration_loads_and_says_what_it_was_fitted_on():
    model = default_model()
    assert model.features == FEATURES and 0 < model.threshold < 1
    assert "SQuAD" in model.figures.data and model.figures.answerable > 0


def test_calibration_file_round_trips_and_is_reloaded_when_it_changes(tmp_path: Path):
    path = tmp_path / "answerability.json"
    source = CalibrationSource(path)
    assert source() == default_model()  # no file yet: the shipped model
    custom = default_model().model_copy(update={"threshold": 0.123})
    path.write_text(custom.model_dump_json())
    assert load_model(path) == custom
    assert source().threshold == 0.123


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"features": ["similarity"], "threshold": 0.5}),
        json.dumps({**default_model().model_dump(), "threshold": 7}),
        json.dumps({**default_model().model_dump(), "weights": [1.0]}),
    ],
)
def test_a_broken_calibration_file_is_refused_and_serving_keeps_the_shipped_model(
    tmp_path: Path, content: str
):
    path = tmp_path / "answerability.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match="answerability calibration"):
        load_model(path)
    assert CalibrationSource(path)() == default_model()


def test_model_rejects_features_it_does_not_know():
    data = default_model().model_dump()
    data["features"] = list(reversed(FEATURES))
    with pytest.raises(ValueError, match="features must be"):
        AnswerabilityModel.model_validate(data)


@pytest.mark.parametrize(
    "question",
    [
        "How many weeks of parental leave do birth parents receive?",  # answered
        "How many weeks of parental leave do birth parents receive in Japan?",  # key term missing
    ],
)
def test_calibration_reads_the_confidence_the_agent_serves(question: str) -> None:
    # A threshold fitted on other confidences than the served ones refuses other questions
    # than it promised: the key-term veto must be in both.
    from citewell.agent.answerability import AnswerabilityChecker
    from citewell.agent.scoring import ScoredSentence, sentence_spans
    from citewell.evaluation.answerability import JudgedCandidates, confidences, featurize
    from tests.agent.fakes import make_chunk

    chunk = make_chunk(
        "leave", "Birth parents receive 20 weeks of parental leave at full pay. It is paid."
    )
    scored = [
        ScoredSentence(source_n=1, chunk=chunk, span=span, score=0.8 - 0.1 * i)
        for i, span in enumerate(sentence_spans(chunk))
    ]
    checker = AnswerabilityChecker()
    served = checker.assess(question, scored).confidence
    judged = JudgedCandidates(
        question=question, answerable=True, candidates=tuple(checker.candidates(scored))
    )
    [calibrated] = confidences(checker.model(), featurize(checker.analyzer, [judged]))
    assert calibrated == pytest.approx(served, abs=1e-4)
