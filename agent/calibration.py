"""Choosing the refusal threshold from data: pure functions over support scores."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from citewell.core.errors import EvaluationError
from citewell.core.models import Frozen


class Calibration(Frozen):
    threshold: float
    balanced_accuracy: float
    answer_rate_answerable: float  # share of answerable questions at or above the threshold
    refusal_rate_unanswerable: float  # share of unanswerable questions below it
    answerable: int
    unanswerable: int


def calibrate_threshold(
    answerable: Sequence[float],
    unanswerable: Sequence[float],
    max_false_refusal: float | None = None,
) -> Calibration:
    """The threshold (answer iff score >= threshold) that maximises balanced accuracy, among
    those that refuse at most ``max_false_refusal`` of the answerable questions when given.
    Candidates are midpoints between consecutive distinct scores; ties go to the lower one."""
    if not answerable or not unanswerable:
        raise EvaluationError("calibration needs answerable and unanswerable questions")
    if max_false_refusal is not None and not 0.0 <= max_false_refusal <= 1.0:
        raise EvaluationError("max_false_refusal must be within [0, 1]")
    values = sorted(set(answerable) | set(unanswerable))
    candidates = [values[0] - 1e-6]
    candidates += [(a + b) / 2 for a, b in itertools.pairwise(values)]
    candidates.append(values[-1] + 1e-6)
    best: Calibration | None = None
    for t in candidates:
        tpr = sum(s >= t for s in answerable) / len(answerable)
        tnr = sum(s < t for s in unanswerable) / len(unanswerable)
        bal = (tpr + tnr) / 2
        if max_false_refusal is not None and 1.0 - tpr > max_false_refusal + 1e-12:
            continue
        if best is None or bal > best.balanced_accuracy:
            best = Calibration(
                threshold=round(t, 4),
                balanced_accuracy=round(bal, 4),
                answer_rate_answerable=round(tpr, 4),
                refusal_rate_unanswerable=round(tnr, 4),
                answerable=len(answerable),
                unanswerable=len(unanswerable),
            )
    if best is None:  # unreachable: candidates is never empty
        raise EvaluationError("no threshold candidates")
    return best
