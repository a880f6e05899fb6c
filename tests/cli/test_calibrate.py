"""``citewell eval calibrate`` as the README runs it: asks a KB owner's judged questions
(answerable lines with their document, unanswerable lines without), writes the index's
calibration file with its figures, and the agent uses it from the next answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citewell.agent.answerability import CalibrationSource, default_model, load_model
from citewell.agent.factory import calibration_path
from citewell.cli.main import main as cli_main
from citewell.core.settings import Settings
from tests.cli.test_ask import demo  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

QUESTIONS = [
    {
        "question": "How many weeks of parental leave do birth parents receive?",
        "expected_doc": "hr/parental-leave-policy.txt",
    },
    {
        "question": "Can parental leave weeks be split into blocks?",
        "expected_doc": "hr/parental-leave-policy.txt",
    },
    {"question": "What causes ocean tides?", "expected_doc": "tides.txt"},
    {
        "question": "How many weeks of parental leave do employees in Japan get?",
        "expected_doc": None,
    },
    {"question": "Who won the 2024 company hackathon?", "expected_doc": None},
]


def test_calibrate_writes_the_index_calibration_and_the_agent_uses_it(
    demo: Path,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    args = ["eval", "calibrate", "--questions", str(questions), "--index", "demo"]
    args += ["--user", "carol", "--max-false-refusal", "0"]
    assert cli_main([*args, "--dry-run"]) == 0
    settings = Settings(index="demo")  # data dir from CITEWELL_DATA_DIR (the fixture)
    target = calibration_path(settings)
    assert not target.exists()
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "3 answerable and 2 unanswerable questions as carol on index demo" in out
    assert "threshold only (few judgements)" in out and f"wrote {target}" in out
    model = load_model(target)
    assert not model.figures.weights_fitted and model.weights == default_model().weights
    assert model.figures.answerable == 3 and model.figures.answer_rate_answerable == 1.0
    assert CalibrationSource(target)() == model


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-false-refusal", "1.5"], "must be within [0, 1)"),
        (["--max-false-refusal", "x"], "not a number"),
    ],
)
def test_calibrate_rejects_bad_arguments(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["eval", "calibrate", "--questions", "q.jsonl", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
