"""Calibrating the answerability check (agent/answerability.py) from judged questions.

A knowledge-base owner's golden set (the format of ``citewell eval answers``: answerable
questions with their expected documents, unanswerable ones with ``"answerable": false`` or no
expected document) is asked as a principal; for each question the features of its candidate
sentences are computed exactly as the agent computes them. Then:

- with enough judgements of both kinds (``MIN_PER_CLASS_TO_FIT``), a logistic regression is
  fitted on the features of each question's most similar sentence (label: answerable);
  otherwise the current model's weights are kept and only its threshold is recalibrated;
- the threshold is the highest that refuses at most ``max_false_refusal`` of the answerable
  questions, where a question is answered when any of its candidates reaches it (as served).

The result carries its figures on the calibration data and is written as the index's
``answerability.json``, which serving picks up without a restart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from citewell.agent.agent import Agent
from citewell.agent.answerability import (
    FEATURES,
    AnswerabilityModel,
    CalibrationFigures,
    Candidate,
    TextAnalyzer,
    feature_rows,
    served_probabilities,
)
from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import Frozen, Principal

logger = logging.getLogger(__name__)

MIN_PER_CLASS_TO_FIT = 30
DEFAULT_MAX_FALSE_REFUSAL = 0.07


class JudgedCandidates(Frozen):
    """One judged question and the candidate sentences its retrieval gives (most similar
    first; instructions and headings already left out)."""

    question: str
    answerable: bool
    candidates: tuple[Candidate, ...]


class JudgedFeatures(Frozen):
    """The feature rows of one judged question's candidates (most similar first)."""

    question: str
    answerable: bool
    rows: tuple[tuple[float, ...], ...]


def question_candidates(
    agent: Agent, principal: Principal, question: str, answerable: bool
) -> JudgedCandidates:
    """The candidates the agent's first retrieval gives, as the check would see them."""
    return JudgedCandidates(
        question=question,
        answerable=answerable,
        candidates=tuple(agent.candidates(principal, question)),
    )


def collect_candidates(
    agent: Agent,
    principal: Principal,
    questions: Sequence[tuple[str, bool]],
    progress: Callable[[int, int], None] | None = None,
) -> list[JudgedCandidates]:
    out = []
    for i, (question, answerable) in enumerate(questions, start=1):
        out.append(question_candidates(agent, principal, question, answerable))
        if progress is not None:
            progress(i, len(questions))
    return out


def featurize(analyzer: TextAnalyzer, judged: Sequence[JudgedCandidates]) -> list[JudgedFeatures]:
    out = []
    for item in judged:
        rows = feature_rows(analyzer, analyzer.question(item.question), item.candidates)
        out.append(
            JudgedFeatures(
                question=item.question,
                answerable=item.answerable,
                rows=tuple(tuple(float(v) for v in row) for row in rows),
            )
        )
    return out


def confidences(model: AnswerabilityModel, judged: Sequence[JudgedFeatures]) -> np.ndarray:
    """The served confidence of each question: its best candidate's probability as the agent
    reads it (``served_probabilities``; 0: no candidate)."""
    return np.asarray(
        [
            float(served_probabilities(model, np.asarray(j.rows)).max()) if j.rows else 0.0
            for j in judged
        ]
    )


def threshold_for(answerable_confidences: np.ndarray, max_false_refusal: float) -> float:
    """The highest threshold (answer iff confidence >= it) refusing at most the budget's
    share of answerable questions: midway below the first answerable question it must keep."""
    ordered = np.sort(answerable_confidences)
    allowed = math.floor(max_false_refusal * len(ordered) + 1e-9)
    if allowed >= len(ordered):
        return 1.0
    keep = float(ordered[allowed])
    below = float(ordered[allowed - 1]) if allowed > 0 else 0.0
    return round(max(0.0, (below + keep) / 2 if allowed > 0 else keep * 0.999), 6)


def _fit_weights(
    judged: Sequence[JudgedFeatures],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    with_rows = [j for j in judged if j.rows]
    x = np.asarray([j.rows[0] for j in with_rows], dtype=np.float64)
    y = np.asarray([j.answerable for j in with_rows])
    if len(set(y.tolist())) < 2:
        raise EvaluationError("calibration needs answerable and unanswerable questions")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature: leave it unscaled (its weight stays ~0)
    classifier = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced")
    classifier.fit((x - mean) / scale, y)
    return mean, scale, classifier.coef_[0], float(classifier.intercept_[0])


def fit_model(
    judged: Sequence[JudgedFeatures],
    data: str,
    base: AnswerabilityModel,
    max_false_refusal: float = DEFAULT_MAX_FALSE_REFUSAL,
    min_per_class: int = MIN_PER_CLASS_TO_FIT,
) -> AnswerabilityModel:
    """A model calibrated on ``judged``: weights refitted when each class has at least
    ``min_per_class`` questions, else ``base``'s weights with a new threshold."""
    if not 0.0 <= max_false_refusal < 1.0:
        raise EvaluationError("max_false_refusal must be within [0, 1)")
    answerable = [j for j in judged if j.answerable]
    unanswerable = [j for j in judged if not j.answerable]
    if not answerable or not unanswerable:
        raise EvaluationError(
            "calibration needs answerable and unanswerable questions "
            f"(got {len(answerable)} answerable, {len(unanswerable)} unanswerable)"
        )
    refit = len(answerable) >= min_per_class and len(unanswerable) >= min_per_class
    model = base
    if refit:
        mean, scale, weights, bias = _fit_weights(judged)
        model = base.model_copy(
            update={
                "features": FEATURES,
                "mean": tuple(round(float(v), 6) for v in mean),
                "scale": tuple(round(float(v), 6) for v in scale),
                "weights": tuple(round(float(v), 6) for v in weights),
                "bias": round(bias, 6),
            }
        )
    conf_answerable = confidences(model, answerable)
    conf_unanswerable = confidences(model, unanswerable)
    threshold = threshold_for(conf_answerable, max_false_refusal)
    figures = CalibrationFigures(
        data=data,
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        answer_rate_answerable=round(float(np.mean(conf_answerable >= threshold)), 4),
        refusal_rate_unanswerable=round(float(np.mean(conf_unanswerable < threshold)), 4),
        max_false_refusal=max_false_refusal,
        weights_fitted=refit,
        fitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    calibrated = AnswerabilityModel.model_validate(
        {**model.model_dump(), "threshold": threshold, "figures": figures.model_dump()}
    )
    log_event(
        logger,
        logging.INFO,
        "eval.answerability_calibrated",
        answerable=figures.answerable,
        unanswerable=figures.unanswerable,
        threshold=threshold,
        weights_fitted=refit,
        answer_rate_answerable=figures.answer_rate_answerable,
        refusal_rate_unanswerable=figures.refusal_rate_unanswerable,
    )
    return calibrated


def rates(
    model: AnswerabilityModel, judged: Sequence[JudgedFeatures]
) -> tuple[float | None, float | None]:
    """(refusal rate on unanswerable, false refusal rate on answerable) under ``model``."""
    answerable = [j for j in judged if j.answerable]
    unanswerable = [j for j in judged if not j.answerable]
    refused = (
        float(np.mean(confidences(model, unanswerable) < model.threshold)) if unanswerable else None
    )
    false = float(np.mean(confidences(model, answerable) < model.threshold)) if answerable else None
    return refused, false
