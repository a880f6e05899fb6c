"""Regression gate: metric drops beyond tolerance fail with a readable diff and exit code 1."""

from __future__ import annotations

import json

import pytest

from citewell.cli.main import main
from citewell.core.errors import EvaluationError
from citewell.evaluation.regression import compare, parse_tolerances

BASELINE = {
    "correct_source_rate": 0.80,
    "citation_precision": 0.90,
    "refusal_rate": 0.50,
    "false_refusal_rate": 0.10,
    "latency_ms": {"p50": 100.0, "p95": 200.0},
    "modes": {"hybrid": {"ndcg@10": 0.70, "recall@100": 0.95}},
    "questions": [{"latency_ms": 5.0, "sentences": 3}],  # per-question detail is not gated
}


def test_within_tolerance_passes():
    run = json.loads(json.dumps(BASELINE))
    run["correct_source_rate"] = 0.79  # drop 0.01 <= 0.02
    run["modes"]["hybrid"]["ndcg@10"] = 0.75  # improvement
    result = compare(run, BASELINE)
    assert result.passed
    assert "PASS" in result.diff()


def test_drop_beyond_tolerance_fails_and_names_the_metric():
    run = json.loads(json.dumps(BASELINE))
    run["modes"]["hybrid"]["ndcg@10"] = 0.65
    run["false_refusal_rate"] = 0.20  # lower is better: a rise regresses
    result = compare(run, BASELINE)
    assert not result.passed
    assert {c.path for c in result.regressions} == {"modes.hybrid.ndcg@10", "false_refusal_rate"}
    diff = result.diff()
    assert "!!modes.hybrid.ndcg@10" in diff and "-0.0500" in diff and "FAIL: 2" in diff
    # A looser tolerance for that metric lets the nDCG drop through.
    looser = compare(run, BASELINE, {"ndcg@10": 0.06, "false_refusal_rate": 0.2})
    assert looser.passed


def test_missing_or_null_metric_fails():
    run = json.loads(json.dumps(BASELINE))
    run["citation_precision"] = None
    result = compare(run, BASELINE)
    assert result.missing == ("citation_precision",) and not result.passed


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), pytest.param(10**400, id="huge-int")]
)
def test_non_finite_metric_in_the_run_fails_like_a_missing_one(value):
    # JSON readers accept NaN and Infinity; a NaN compared with anything is never "worse", so
    # a run whose precision was NaN passed the gate. An integer past float's range (JSON allows
    # any number of digits) raised OverflowError.
    run = json.loads(json.dumps(BASELINE))
    run["citation_precision"] = value
    result = compare(run, BASELINE)
    assert result.missing == ("citation_precision",) and not result.passed


def test_parse_tolerances_rejects_garbage():
    assert parse_tolerances(["ndcg@10=0.02"]) == {"ndcg@10": 0.02}
    with pytest.raises(EvaluationError):
        parse_tolerances(["ndcg@10"])
    for garbage in ("ndcg@10=nan", "ndcg@10=inf", "ndcg@10=-0.1"):
        with pytest.raises(EvaluationError):
            parse_tolerances([garbage])


def test_cli_compare_exit_codes(tmp_path, capsys):
    base = tmp_path / "baseline.json"
    run = tmp_path / "run.json"
    base.write_text(json.dumps(BASELINE), encoding="utf-8")
    run.write_text(json.dumps({**BASELINE, "citation_precision": 0.80}), encoding="utf-8")
    assert main(["eval", "compare", str(run), str(base)]) == 1
    out = capsys.readouterr().out
    assert "!!citation_precision" in out and "0.9000" in out and "0.8000" in out
    assert main(["eval", "compare", str(base), str(base)]) == 0
    assert (
        main(["eval", "compare", str(run), str(base), "--tolerance", "citation_precision=0.2"]) == 0
    )
    with pytest.raises(SystemExit) as missing:  # rejected while parsing arguments
        main(["eval", "compare", str(tmp_path / "nope.json"), str(base)])
    assert missing.value.code == 2


@pytest.mark.parametrize(
    "baseline",
    [
        {},  # an empty or truncated baseline
        {"index": "kb", "documents": 12},  # a coverage file: no metric in it
        {"correct_source_rate": None},  # a metric that was never measured
    ],
)
def test_a_baseline_with_nothing_to_compare_fails(tmp_path, capsys, baseline):
    """The gate passed (exit 0, 'no comparable metrics found') when the baseline held no metric
    it could compare: a damaged or wrong baseline file let every run through."""
    base = tmp_path / "baseline.json"
    run = tmp_path / "run.json"
    base.write_text(json.dumps(baseline), encoding="utf-8")
    run.write_text(json.dumps({**BASELINE, "correct_source_rate": 0.0}), encoding="utf-8")
    assert not compare(json.loads(run.read_text()), baseline).passed
    assert main(["eval", "compare", str(run), str(base)]) == 1
    assert "no comparable metrics" in capsys.readouterr().out


def test_a_non_finite_baseline_metric_fails():
    """A NaN baseline metric was dropped, so that metric was never gated."""
    baseline = {**BASELINE, "citation_precision": float("nan")}
    run = {**BASELINE, "citation_precision": 0.0}
    result = compare(run, baseline)
    assert not result.passed and "citation_precision" in result.diff()


def test_a_run_nested_past_the_recursion_limit_is_missing_its_metrics(tmp_path, capsys):
    """A run file nested about a thousand objects deep was read, then crashed the gate's walk
    ('unexpected RecursionError'); anything nested deeper is refused as unreadable."""
    base = tmp_path / "baseline.json"
    run = tmp_path / "run.json"
    base.write_text(json.dumps(BASELINE), encoding="utf-8")
    for depth in (990, 100_000):
        run.write_text('{"a":' * depth + "1" + "}" * depth, encoding="utf-8")
        assert main(["eval", "compare", str(run), str(base)]) in (1, 2)
        captured = capsys.readouterr()
        assert "unexpected" not in captured.err
        assert "missing from the run" in captured.out or "nested too deeply" in captured.err


def test_compare_refuses_nan_and_infinite_numbers_in_a_saved_file(tmp_path, capsys):
    base = tmp_path / "baseline.json"
    run = tmp_path / "run.json"
    base.write_text(json.dumps(BASELINE), encoding="utf-8")
    for bad in ("NaN", "-Infinity", "1e999"):
        run.write_text(json.dumps(BASELINE).replace("0.9", bad, 1), encoding="utf-8")
        assert main(["eval", "compare", str(run), str(base)]) == 2
        assert f"{bad} is not a finite number" in capsys.readouterr().err
