"""``citewell eval retrieval``: argument parsing and the JSON contract scripts depend on."""

import argparse
import json
from functools import partial

import pytest

import citewell.cli.evaluate
from citewell.evaluation.retrieval_eval import evaluate_retrieval
from tests.evaluation.beir_files import write_beir
from tests.evaluation.test_retrieval_eval import DOCS, QRELS, QUERIES, FakeIndex, FakeWriter


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="citewell")
    citewell.cli.evaluate.register(root.add_subparsers(dest="command", required=True))
    return root


@pytest.fixture
def doubles(monkeypatch, tmp_path):
    monkeypatch.setenv("CITEWELL_DATA_DIR", str(tmp_path / "data"))
    fake = partial(evaluate_retrieval, writer=FakeWriter(), opener=lambda name: FakeIndex())
    monkeypatch.setattr(citewell.cli.evaluate, "evaluate_retrieval", fake)
    return write_beir(tmp_path / "mini", DOCS, QUERIES, QRELS)


def test_json_contract(doubles, capsys):
    args = parser().parse_args(
        ["eval", "retrieval", "--dataset", str(doubles), "--modes", "bm25,dense", "--json"]
    )
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["modes"]) == {"bm25", "dense"}
    for metrics in payload["modes"].values():
        assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms"} <= set(metrics)
        assert set(metrics["latency_ms"]) == {"p50", "p95"}
        assert all(isinstance(metrics[key], float) for key in ("ndcg@10", "mrr@10"))
    assert payload["split"] == "test" and payload["dataset"] == "mini"


def test_table_lists_modes_and_skipped(doubles, capsys):
    args = parser().parse_args(["eval", "retrieval", "--dataset", str(doubles)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "nDCG@10" in out and "\nbm25 " in out and "\nhybrid " in out
    assert "hybrid+rerank skipped: no trained reranker" in out


def test_errors_exit_non_zero_with_message(doubles, capsys):
    args = parser().parse_args(
        ["eval", "retrieval", "--dataset", str(doubles), "--modes", "splade", "--json"]
    )
    assert args.func(args) == 2
    assert "unknown retrieval mode" in capsys.readouterr().err


def test_eval_requires_a_kind():
    with pytest.raises(SystemExit):
        parser().parse_args(["eval"])


def test_coverage_refuses_a_damaged_answers_file_with_a_clear_error(tmp_path, monkeypatch, capsys):
    """`eval coverage --answers` with a JSON object that is not an answers evaluation ended in
    'unexpected ValidationError' and pydantic's whole dump (exit 1)."""
    from citewell.cli.main import main

    monkeypatch.setenv("CITEWELL_DATA_DIR", str(tmp_path / "data"))
    saved = tmp_path / "answers.json"
    saved.write_text(json.dumps({"principal": "cli", "questions": "all"}), encoding="utf-8")
    code = main(["eval", "coverage", "--answers", str(saved), "--clearance", "public"])
    err = capsys.readouterr().err
    assert code == 2 and "unexpected" not in err, err
    assert str(saved) in err and "not an evaluation JSON file" in err
