"""Regression gate: compare an evaluation run's JSON with a stored baseline.

Both files are any evaluation JSON Citewell writes (``eval answers --json``, ``eval retrieval
--json``, ``eval report``'s JSON). Numeric leaves named like a known metric are compared by
dotted path (``modes.hybrid.ndcg@10``, ``answers.citation_precision``); a metric regresses when
it moves the wrong way by more than its tolerance (absolute, in the metric's own unit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from citewell.core.errors import EvaluationError
from citewell.core.models import Frozen

# Higher is better unless listed in LOWER_IS_BETTER. Tolerances are absolute.
DEFAULT_TOLERANCES: dict[str, float] = {
    "correct_source_rate": 0.02,
    "citation_coverage": 0.02,
    "citation_precision": 0.02,
    "refusal_rate": 0.03,
    "false_refusal_rate": 0.03,
    "ndcg@10": 0.01,
    "recall@10": 0.01,
    "recall@100": 0.01,
    "mrr@10": 0.01,
    "hit_rate": 0.02,
    "mrr": 0.02,
    "p95": 50.0,  # latency, milliseconds
    "latency_p95_ms": 50.0,
}
LOWER_IS_BETTER: frozenset[str] = frozenset({"false_refusal_rate", "p95", "latency_p95_ms"})
# Containers whose numbers describe a run's size or timing context, not quality.
_IGNORED_BRANCHES = frozenset({"questions", "groups", "per_question"})


class MetricChange(Frozen):
    path: str
    baseline: float
    current: float
    tolerance: float
    lower_is_better: bool

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    @property
    def regressed(self) -> bool:
        worse = -self.delta if not self.lower_is_better else self.delta
        return worse > self.tolerance + 1e-12


class RegressionResult(Frozen):
    changes: tuple[MetricChange, ...]
    missing: tuple[str, ...]  # metrics in the baseline but absent (or null) in the run
    unusable: tuple[str, ...] = ()  # baseline metrics that are NaN or infinite

    @property
    def regressions(self) -> tuple[MetricChange, ...]:
        return tuple(c for c in self.changes if c.regressed)

    @property
    def passed(self) -> bool:
        # A gate that compared nothing (empty, damaged or wrong baseline) lets any run through.
        return bool(self.changes) and not (self.regressions or self.missing or self.unusable)

    def diff(self) -> str:
        """A readable table: every compared metric, regressions marked."""
        if not self.changes and not self.missing and not self.unusable:
            return "FAIL: no comparable metrics found in the baseline\n"
        paths = [c.path for c in self.changes] + [*self.missing, *self.unusable]
        width = max([len(p) for p in paths] + [6])
        lines = [f"  {'metric':<{width}}  {'baseline':>10}  {'run':>10}  {'change':>9}  allowed"]
        for c in self.changes:
            mark = "!!" if c.regressed else "  "
            direction = "rise" if c.lower_is_better else "drop"
            lines.append(
                f"{mark}{c.path:<{width}}  {c.baseline:>10.4f}  {c.current:>10.4f}  "
                f"{c.delta:>+9.4f}  {direction} <= {c.tolerance:g}"
            )
        lines.extend(f"!!{m:<{width}}  missing from the run" for m in self.missing)
        lines.extend(f"!!{m:<{width}}  not a finite number in the baseline" for m in self.unusable)
        n = len(self.regressions)
        unusable = f", {len(self.unusable)} unusable in the baseline" if self.unusable else ""
        verdict = (
            "PASS: no metric moved beyond its tolerance"
            if self.passed
            else f"FAIL: {n} metric(s) regressed, {len(self.missing)} missing{unusable}"
        )
        return "\n".join([*lines, verdict]) + "\n"


def flatten_metrics(payload: Any, tolerances: Mapping[str, float]) -> dict[str, float]:
    """Finite numeric leaves whose last path segment is a known metric, by dotted path."""
    # NaN is never "worse": it would pass any gate.
    return {p: v for p, v in _metric_leaves(payload, tolerances).items() if math.isfinite(v)}


def _metric_leaves(payload: Any, tolerances: Mapping[str, float]) -> dict[str, float]:
    """Numeric leaves (finite or not) whose last path segment is a known metric."""
    out: dict[str, float] = {}
    # A stack, not recursion: a file nested past the recursion limit is still just missing
    # metrics. Children are pushed in reverse so paths come out in file order.
    stack: list[tuple[tuple[str, ...], Any]] = [((), payload)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(
                ((*path, str(key)), value)
                for key, value in reversed(list(node.items()))
                if str(key) not in _IGNORED_BRANCHES
            )
        elif (
            isinstance(node, int | float)
            and not isinstance(node, bool)
            and path
            and path[-1] in tolerances
        ):
            try:
                out[".".join(path)] = float(node)
            except OverflowError:  # an integer past float's range (JSON allows any digits)
                out[".".join(path)] = math.inf
    return out


def compare(
    run: Mapping[str, Any],
    baseline: Mapping[str, Any],
    tolerances: Mapping[str, float] | None = None,
) -> RegressionResult:
    """Compare every baseline metric with the run's; ``tolerances`` override the defaults by
    metric name (the path's last segment)."""
    merged = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    leaves = _metric_leaves(baseline, merged)
    base = {p: v for p, v in leaves.items() if math.isfinite(v)}
    current = flatten_metrics(run, merged)
    changes: list[MetricChange] = []
    missing: list[str] = []
    for path, value in base.items():
        name = path.rsplit(".", 1)[-1]
        if path not in current:
            missing.append(path)
            continue
        changes.append(
            MetricChange(
                path=path,
                baseline=value,
                current=current[path],
                tolerance=merged[name],
                lower_is_better=name in LOWER_IS_BETTER,
            )
        )
    unusable = tuple(p for p in leaves if p not in base)
    return RegressionResult(changes=tuple(changes), missing=tuple(missing), unusable=unusable)


# Read whole and parsed in memory: bound it before reading (far above any run's own output).
MAX_EVALUATION_JSON_BYTES = 256 * 1024 * 1024


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    # Python's reader accepts NaN and Infinity; charts, tables and the gate cannot use them.
    raise ValueError(f"{name} is not a finite number")


def load_json(path: Path) -> dict[str, Any]:
    """A saved evaluation JSON object; damaged files (not UTF-8, not JSON, NaN or infinite
    numbers, nesting past the recursion limit) raise :class:`EvaluationError`."""
    try:
        size = path.stat().st_size
        if size > MAX_EVALUATION_JSON_BYTES:
            raise EvaluationError(
                f"evaluation JSON {path} too large ({size} bytes > {MAX_EVALUATION_JSON_BYTES})"
            )
        payload = json.loads(
            path.read_text(encoding="utf-8"), parse_float=_finite, parse_constant=_no_constant
        )
    except (OSError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise EvaluationError(f"cannot read evaluation JSON {path}: {reason}") from exc
    if not isinstance(payload, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
    return payload


def parse_tolerances(items: list[str] | None) -> dict[str, float]:
    """``["ndcg@10=0.02", "citation_precision=0.05"]`` → mapping; malformed items raise."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            delta = float(value)
            if not sep or not name.strip() or not 0.0 <= delta < math.inf:
                raise ValueError(item)
            out[name.strip()] = delta
        except ValueError as exc:
            raise EvaluationError(f"tolerance must be METRIC=NUMBER, got {item!r}") from exc
    return out
