"""HTML report: self-contained, escaped, and never shows documents above the owner's clearance."""

from __future__ import annotations

import pytest

from citewell.core.errors import EvaluationError
from citewell.core.models import AccessLabel, Principal
from citewell.evaluation.answers_eval import evaluate_answers
from citewell.evaluation.coverage import evaluate_coverage
from citewell.evaluation.golden_set import GoldenQuestion
from citewell.evaluation.report import bar_chart, make_bundle, render_html, write_report
from citewell.evaluation.squad import load_squad
from tests.evaluation.test_answers_eval import SECRET_TITLE, squad_kb  # noqa: F401

LOW = Principal(name="press-owner", clearance="public", groups=frozenset())
HIGH = Principal(name="sec-owner", clearance="restricted", groups=frozenset({"security"}))


def test_chart_text_is_escaped():
    svg = bar_chart("<script>alert(1)</script>", ["a&b"], {"s<1>": [0.5]})
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a&amp;b" in svg


@pytest.mark.slow
def test_low_clearance_report_never_shows_restricted_titles_or_text(
    squad_kb,  # noqa: F811
    shared_data,
    embedder,
    tmp_path,
):
    settings, questions = squad_kb
    subset = load_squad(
        shared_data / "qa" / "squad2_dev_small.json",
        AccessLabel(classification="public", groups=frozenset({"everyone"})),
        paragraphs=6,
        questions_per_paragraph=3,
    )
    secret_text = subset.documents[4].text
    secret_sentence = secret_text.split(". ")[0]
    # Ask about the restricted paragraphs too: an owner's golden set may target them.
    asked = [*questions[:4], GoldenQuestion(question=secret_sentence[:300], answerable=False)]

    def html_for(principal: Principal) -> str:
        answers = evaluate_answers(settings, principal, asked, "squad", embedder=embedder)
        coverage = evaluate_coverage(settings, principal, answers, "squad")
        bundle = make_bundle(
            principal.name, principal.clearance, "squad", answers=answers, coverage=coverage
        )
        html_path, json_path = write_report(bundle, tmp_path / principal.name / "report.html")
        assert json_path.is_file()
        return html_path.read_text(encoding="utf-8")

    low = html_for(LOW)
    assert SECRET_TITLE not in low
    for sentence in secret_text.split(". ")[1:4]:
        assert sentence.strip()[:60] not in low
    # Self-contained: no scripts, stylesheets or images fetched from anywhere.
    assert "<script" not in low and "<link" not in low and "src=" not in low
    assert "<svg" in low and "Corpus coverage" in low
    # The same run for a cleared owner does show the restricted documents: the filter is real.
    high = html_for(HIGH)
    assert SECRET_TITLE in high


def test_bundle_refuses_parts_made_for_another_principal(tmp_path):
    from datetime import UTC, datetime

    from citewell.evaluation.coverage import CoverageReport

    coverage = CoverageReport(
        index="kb",
        index_version=None,
        principal="someone-else",
        clearance="restricted",
        questions=0,
        stale_days=90,
        documents=0,
        groups=(),
        generated_at=datetime.now(UTC),
    )
    with pytest.raises(EvaluationError):
        make_bundle("owner", "public", "kb", coverage=coverage)
    html = render_html(make_bundle("someone-else", "restricted", "kb", coverage=coverage))
    # No empty sections: no failure heading without failures, no empty coverage lists.
    assert "failed parsing" not in html and "<h4>" not in html and "<table>" not in html


def _saved_parts() -> dict[str, dict]:
    import json

    from tests.evaluation.test_report_browser import _bundle

    bundle = _bundle()
    return {
        "answers": json.loads(bundle.answers.model_dump_json()),
        "retrieval": json.loads(bundle.retrieval.model_dump_json(by_alias=True)),
        "coverage": json.loads(bundle.coverage.model_dump_json()),
    }


def _damaged(kind: str, change) -> str:
    import json

    part = _saved_parts()[kind]
    change(part)
    return json.dumps(part)


def _set(path: tuple, value):
    def change(part):
        node = part
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        # Crashed: 'unexpected ValueError: cannot convert float NaN to integer'.
        pytest.param(
            "answers",
            _damaged("answers", _set(("questions", 0, "latency_ms"), float("nan"))),
            id="nan-latency",
        ),
        # Crashed: 'unexpected OverflowError' (1e999 reads as infinity).
        pytest.param(
            "answers",
            _damaged("answers", _set(("questions", 0, "latency_ms"), 7.0)).replace(
                '"latency_ms": 7.0', '"latency_ms": 1e999', 1
            ),
            id="overflowing-latency",
        ),
        # Written without a word: 'nan%' as the citation precision.
        pytest.param(
            "answers",
            _damaged("answers", _set(("citation_precision",), float("nan"))),
            id="nan-rate",
        ),
        pytest.param(
            "retrieval",
            _damaged("retrieval", _set(("modes", "bm25", "ndcg@10"), float("inf"))),
            id="infinite-ndcg",
        ),
        # Crashed: 'unexpected ValueError: math domain error' (the recall curve's log axis).
        pytest.param(
            "retrieval",
            _damaged("retrieval", _set(("modes", "bm25", "recall_curve"), {"0": 0.5})),
            id="recall-at-zero",
        ),
        # Crashed: 'unexpected RecursionError'.
        pytest.param("coverage", "[" * 100_000 + "]" * 100_000, id="deep-nesting"),
    ],
)
def test_eval_report_refuses_a_damaged_saved_file_with_a_clear_error(tmp_path, capsys, kind, text):
    from citewell.cli.main import main

    saved = tmp_path / f"{kind}.json"
    saved.write_text(text, encoding="utf-8")
    out = tmp_path / "report.html"
    assert main(["eval", "report", "--out", str(out), f"--{kind}", str(saved)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("citewell: error:") and "unexpected" not in err
    assert str(saved) in err
    assert not out.exists()


def test_eval_report_never_writes_over_its_inputs_or_its_own_html(tmp_path, capsys):
    """The report's data goes beside the HTML with a .json suffix: `--out answers.html
    --answers answers.json` replaced the saved answers with the bundle, and `--out report.json`
    wrote the HTML and then the JSON over it, each saying 'report written'."""
    import json

    from citewell.cli.main import main

    saved = tmp_path / "answers.json"
    saved.write_text(json.dumps(_saved_parts()["answers"]), encoding="utf-8")
    before = saved.read_bytes()
    for out in (tmp_path / "answers.html", tmp_path / "report.json"):
        code = main(["eval", "report", "--out", str(out), "--answers", str(saved)])
        captured = capsys.readouterr()
        assert saved.read_bytes() == before
        assert code == 2 and "report written" not in captured.out, captured.out
        assert captured.err.startswith("citewell: error:")


def test_bundle_refuses_answers_and_coverage_of_different_indexes():
    """A report is one knowledge base's: answers of index 'kb' and coverage of 'hr-kb' (same
    owner) were joined under the heading 'kb', hr-kb's documents listed as kb's."""
    from tests.evaluation.test_report_browser import _bundle

    bundle = _bundle()
    other = bundle.coverage.model_copy(update={"index": "hr-kb"})
    with pytest.raises(EvaluationError, match="hr-kb"):
        make_bundle(
            bundle.principal,
            bundle.clearance,
            bundle.index,
            answers=bundle.answers,
            coverage=other,
        )
