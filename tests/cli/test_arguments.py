"""Every argument of every subcommand is validated at parse time: a bad value ends in one line
on stderr and exit status 2, never a traceback (issue 16 item 13)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from citewell.cli.arguments import (
    ExistingPath,
    FloatRange,
    IntRange,
    OutputPath,
    Pattern,
    Text,
)
from citewell.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]

# Free-form strings checked when the command runs (principal names, configurable clearance
# levels, qrels split names): their errors are CitewellErrors, also one line and exit 2.
FREE_TEXT = {"user", "clearance", "groups", "users", "host", "split", "modes"}
PASSIVE = (
    argparse._HelpAction,
    argparse._VersionAction,
    argparse._StoreTrueAction,
    argparse._StoreFalseAction,
    argparse._SubParsersAction,
)


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_parsers(child, (*path, name))


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, PASSIVE)]


def valid_value(action: argparse.Action, tmp: Path) -> str:
    kind = action.type
    if action.choices is not None:
        return str(next(iter(action.choices)))
    if isinstance(kind, IntRange | FloatRange):
        return str(kind.low)
    if isinstance(kind, ExistingPath):
        return str(tmp / ("folder" if kind.kind == "dir" else "file.jsonl"))
    if isinstance(kind, OutputPath):
        return str(tmp / "out" / ("model" if kind.directory else "report.html"))
    if isinstance(kind, Pattern):
        return kind.example
    return "x"


def bad_values(action: argparse.Action, tmp: Path) -> list[str]:
    kind = action.type
    if action.choices is not None:
        return ["bogus", ""]
    if isinstance(kind, IntRange):
        return [str(kind.low - 1), str(kind.high + 1), "10" * 20, "abc", "", "1.5"]
    if isinstance(kind, FloatRange):
        return [f"{kind.low - 1}", f"{kind.high * 10 + 1}", "nan", "inf", "-inf", "abc", ""]
    if isinstance(kind, ExistingPath):
        wrong = {"dir": "file.jsonl", "file": "folder", "any": "missing"}[kind.kind]
        return [str(tmp / "missing"), str(tmp / wrong), ""]
    if isinstance(kind, OutputPath):
        return [
            str(tmp / ("file.jsonl" if kind.directory else "folder")),
            "",
            str(tmp / "file.jsonl" / "x"),
        ]
    if isinstance(kind, Pattern):
        # A trailing newline: ``$`` matches before one, so "kb\n" passed as a source name.
        return ["../escape", "", "a b", "x" * 200, kind.example + "\n"]
    if isinstance(kind, Text):
        return ["", "   ", "q" * (kind.max_length + 1)]
    return []


def cases(tmp: Path) -> Iterator[tuple[str, list[str]]]:
    for path, parser in leaf_parsers(build_parser()):
        actions = arguments(parser)
        for target in actions:
            for bad in bad_values(target, tmp):
                argv = list(path)
                for action in actions:
                    value = bad if action is target else valid_value(action, tmp)
                    if action is not target and not action.required and action.option_strings:
                        continue  # optional and not under test: left out
                    if action.option_strings:
                        argv += [action.option_strings[-1], value]
                    else:
                        argv.append(value)
                yield f"{' '.join(path)} {target.dest}={bad!r}", argv


@pytest.fixture
def fixture_paths(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.jsonl").write_text('{"question": "q"}\n', encoding="utf-8")
    return tmp_path


def test_every_argument_is_validated(
    fixture_paths: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tried = 0
    for label, argv in cases(fixture_paths):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, f"{label}: exit {exit_info.value.code}"
        assert "Traceback" not in err, label
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], f"{label}: {err!r}"
        tried += 1
    assert tried > 100  # every subcommand contributed


def test_no_argument_escapes_validation() -> None:
    """Numbers, paths and names go through a validating type; the rest is listed free text."""
    unchecked = []
    for path, parser in leaf_parsers(build_parser()):
        for action in arguments(parser):
            validated = action.choices is not None or isinstance(
                action.type, IntRange | FloatRange | ExistingPath | OutputPath | Pattern | Text
            )
            if not validated and action.dest not in FREE_TEXT and action.dest != "tolerance":
                unchecked.append(f"{' '.join(path)} {action.dest} ({action.type!r})")
    assert unchecked == []


def test_tolerance_must_be_metric_equals_delta(
    fixture_paths: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = str(fixture_paths / "file.jsonl")
    for bad in ["ndcg@10", "=0.1", "ndcg@10=abc", "ndcg@10=-1", "ndcg@10=nan"]:
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "compare", run, run, "--tolerance", bad])
        assert exit_info.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def _citewell(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citewell.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_search_negative_k_is_one_line_exit_2() -> None:
    done = _citewell("search", "--k", "-1", "parental leave", "--clearance", "public")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "citewell search: error: argument --k: must be between 1 and 100, got -1 "
        "(see citewell search --help)"
    ]


def test_runtime_errors_are_one_line(tmp_path: Path) -> None:
    """Errors found only when running (bad settings, unknown user) are one line too."""
    bad_env = _citewell("search", "q", "--clearance", "public", env={"CITEWELL_DENSE_WEIGHT": "7"})
    assert bad_env.returncode == 2, bad_env.stderr
    assert "Traceback" not in bad_env.stderr
    assert len(bad_env.stderr.strip().splitlines()) == 1
    assert "dense_weight" in bad_env.stderr
    bad_list = _citewell(
        "search", "q", "--clearance", "public", env={"CITEWELL_CLASSIFICATION_LEVELS": "[public"}
    )
    assert bad_list.returncode == 2, bad_list.stderr
    assert bad_list.stderr.strip().splitlines() == [
        "citewell: error: invalid settings (CITEWELL_* variables): classification_levels: "
        "Value error, Expecting value: line 1 column 2 (char 1)"
    ]
    unknown = _citewell(
        "search",
        "q",
        "--user",
        "nobody",
        "--data-dir",
        str(tmp_path),
        env={"CITEWELL_PRINCIPALS_FILE": str(ROOT / "examples" / "principals.yaml")},
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        f"citewell: error: unknown user 'nobody' in {ROOT / 'examples' / 'principals.yaml'}"
    ]


def test_version() -> None:
    done = _citewell("--version")
    assert done.returncode == 0
    assert done.stdout.strip().startswith("citewell ")
