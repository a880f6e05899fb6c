"""Answers evaluation: citation judging, and an end-to-end run on a small SQuAD 2.0 slice and
one docugami 10-Q ingested through the pipeline (golden sets:
tests/evaluation/test_golden_set.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from citewell.agent.models import Answer, Citation, Source
from citewell.core.models import AccessLabel, Principal
from citewell.core.settings import Settings
from citewell.evaluation.answers_eval import evaluate_answers, judge_answer
from citewell.evaluation.golden_set import load_golden_set
from citewell.evaluation.squad import load_squad
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.service import ServingIndex

PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
READER = Principal(name="owner", clearance="public", groups=frozenset())
SECRET_TITLE = "Zanzibar Merger Dossier"


def build_squad_kb(shared: Path, data_dir: Path, embedder: Any) -> tuple[Settings, Any]:
    """4 SQuAD paragraphs as public documents plus 2 as restricted (security group) documents
    under a distinctive title; returns settings and the public documents' questions."""
    settings = Settings(data_dir=data_dir, index="squad")
    subset = load_squad(
        shared / "qa" / "squad2_dev_small.json", PUBLIC, paragraphs=6, questions_per_paragraph=3
    )
    restricted = AccessLabel(classification="restricted", groups=frozenset({"security"}))
    docs = [
        d
        if i < 4
        else TextDocument(doc_id=f"secret-{i}", title=SECRET_TITLE, text=d.text, label=restricted)
        for i, d in enumerate(subset.documents)
    ]
    Ingestor(settings, embedder=embedder).ingest_texts(docs, index="squad", source_name="squad")
    public_ids = {d.doc_id for d in docs[:4]}
    return settings, [
        q
        for q in subset.questions
        if not q.expected_sources or set(q.expected_sources) <= public_ids
    ]


@pytest.fixture(scope="module")
def squad_kb(shared_data, embedder, tmp_path_factory):
    settings, questions = build_squad_kb(shared_data, tmp_path_factory.mktemp("squad"), embedder)
    return settings, questions


class _KeywordJudge:
    """Supports a sentence iff the passage shares its first word (deterministic)."""

    name = "keyword"
    threshold = 1.0

    def score(self, sentence: str, passages: Sequence[str]) -> list[float]:
        head = sentence.split()[0].lower()
        return [1.0 if head in p.lower() else 0.0 for p in passages]


def _answer(text: str, quotes: dict[int, str], refused: bool = False) -> Answer:
    def where(n: int) -> dict[str, str | int]:
        # Source n and citation [n] point at the same chunk.
        return {"n": n, "chunk_id": f"c{n}", "doc_id": f"d{n}", "title": "t", "source_uri": "u"}

    span = {"char_start": 0, "char_end": 1, "classification_rank": 0, "groups": ("everyone",)}
    sources = tuple(Source.model_validate(where(n) | span | {"score": 0.5}) for n in range(1, 3))
    citations = tuple(
        Citation.model_validate(where(n) | span | {"quote": q}) for n, q in quotes.items()
    )
    return Answer(
        question="q",
        answer=text,
        citations=citations,
        sources=sources,
        refused=refused,
        backend="test",
    )


def test_judge_answer_counts_sentences_markers_and_support():
    answer = _answer(
        "Normans settled in Normandy. [1] Rollo was a chief. [2] Unsourced claim here.",
        {1: "The Normans gave their name to Normandy.", 2: "A Viking leader swore fealty."},
    )
    assert judge_answer(answer, _KeywordJudge()) == (3, 2, 2, 1)
    assert judge_answer(_answer("refused", {}, refused=True), _KeywordJudge()) == (0, 0, 0, 0)


@pytest.mark.slow
def test_squad_slice_end_to_end(squad_kb, embedder):
    settings, questions = squad_kb
    service = ServingIndex(settings, "squad", embedder=embedder)
    try:
        report = evaluate_answers(
            settings,
            READER,
            questions,
            "squad",
            service=service,
            embedder=embedder,
            golden_set="squad-slice",
        )
    finally:
        service.close()
    assert report.n_questions == len(questions) and report.n_unanswerable > 0
    assert report.judge.startswith("embedding-similarity")  # no reranker in a fresh index
    # The offline extractive agent copies cited sentences: every sentence is cited and the
    # quotes support them; some answerable questions find their paragraph.
    assert report.citation_coverage == pytest.approx(1.0)
    assert report.citation_precision is not None and report.citation_precision > 0.9
    assert report.correct_source_rate is not None and report.correct_source_rate > 0.3
    assert report.refusal_rate is not None and 0.0 <= report.refusal_rate <= 1.0
    assert report.latency_ms.p95 >= report.latency_ms.p50 > 0
    cited = {d for q in report.questions for d in q.cited_doc_ids}
    assert not any(d.startswith("secret-") for d in cited)


@pytest.mark.slow
def test_cli_eval_answers_json_contract(squad_kb, tmp_path, capsys):
    from citewell.cli.main import main

    settings, questions = squad_kb
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "".join(
            json.dumps(
                {
                    "question": q.question,
                    "expected": list(q.expected_sources),
                    "answerable": q.answerable,
                }
            )
            + "\n"
            for q in questions[:6]
        ),
        encoding="utf-8",
    )
    code = main(
        [
            "eval",
            "answers",
            "--questions",
            str(golden),
            "--clearance",
            "public",
            "--groups",
            "everyone",
            "--index",
            "squad",
            "--data-dir",
            str(settings.data_dir),
            "--report",
            str(tmp_path / "out.html"),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    for key in ("correct_source_rate", "citation_coverage", "citation_precision", "refusal_rate"):
        assert key in payload
    assert payload["n_questions"] == 6
    assert (tmp_path / "out.html").is_file() and (tmp_path / "out.json").is_file()
    assert SECRET_TITLE not in (tmp_path / "out.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_one_docugami_filing_with_its_questions(shared_data, embedder, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(shared_data / "qa" / "docugami_sec10q" / "docs" / "2022 Q3 AAPL.pdf", folder)
    (folder / "citewell.labels.yaml").write_text(
        "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
    )
    settings = Settings(data_dir=tmp_path / "data", index="docugami")
    Ingestor(settings, embedder=embedder).ingest_folder(folder, index="docugami")
    golden = load_golden_set(shared_data / "qa" / "docugami_sec10q" / "qna_data.csv")
    mine = [q for q in golden if q.expected_sources == ("*2022 Q3 AAPL*",)]
    assert mine
    report = evaluate_answers(settings, READER, mine, "docugami", embedder=embedder)
    assert report.n_questions == len(mine) and report.n_unanswerable == 0
    # Only one filing is indexed: any citation is to it, so cited answers count as correct.
    answered = [q for q in report.questions if q.cited_doc_ids]
    assert report.correct_source_rate == pytest.approx(len(answered) / len(mine))
    assert report.false_refusal_rate is not None


def test_questions_outside_the_users_groups_are_not_false_refusals(tmp_path):
    """Issue 18.8: a question whose expected document the evaluating user may not see (other
    groups, whatever the clearance) is "not answerable for this user", counted apart."""
    from citewell.evaluation.golden_set import GoldenQuestion
    from tests.agent.fakes import HashingEmbedder

    settings = Settings(data_dir=tmp_path / "data", index="kb")
    finance = AccessLabel(classification="confidential", groups=frozenset({"finance"}))
    docs = [
        TextDocument(
            doc_id="leave",
            title="Parental leave",
            text="Parents receive sixteen weeks of paid parental leave.",
            label=AccessLabel(classification="public", groups=frozenset({"everyone"})),
        ),
        TextDocument(
            doc_id="forecast",
            title="Q3 forecast",
            text="The third quarter revenue forecast is 4.2 million euros.",
            label=finance,
        ),
    ]
    embedder = HashingEmbedder()
    Ingestor(settings, embedder=embedder).ingest_texts(docs, index="kb", source_name="kb")
    questions = [
        GoldenQuestion(question="How many weeks of parental leave?", expected_sources=("leave",)),
        GoldenQuestion(question="What is the Q3 revenue forecast?", expected_sources=("forecast",)),
        GoldenQuestion(question="Who founded the company?", answerable=False),
    ]
    security = Principal(name="dana", clearance="restricted", groups=frozenset({"security"}))
    report = evaluate_answers(
        settings, security, questions, "kb", embedder=embedder, judge=_KeywordJudge()
    )
    assert (report.n_answerable, report.n_unanswerable) == (1, 1)
    assert report.n_not_answerable_for_user == 1
    by_question = {q.question: q for q in report.questions}
    assert by_question["What is the Q3 revenue forecast?"].answerable_for_user is False
    assert by_question["What is the Q3 revenue forecast?"].refused  # never answered from it
    assert report.not_answerable_refused_rate == 1.0
    # The false refusal rate is over the one question this user can be answered.
    leave_refused = by_question["How many weeks of parental leave?"].refused
    assert report.false_refusal_rate == (1.0 if leave_refused else 0.0)

    carol = Principal(name="carol", clearance="confidential", groups=frozenset({"finance"}))
    cleared = evaluate_answers(
        settings, carol, questions, "kb", embedder=embedder, judge=_KeywordJudge()
    )
    assert cleared.n_not_answerable_for_user == 0 and cleared.n_answerable == 2


def test_a_question_the_agent_would_reject_is_named_before_any_question_is_asked(tmp_path):
    # Before, the run asked every question up to it (hours on a large set), then stopped with
    # the agent's "question is longer than 2000 characters", naming no question.
    from citewell.core.errors import EvaluationError
    from citewell.evaluation.golden_set import GoldenQuestion
    from tests.agent.fakes import HashingEmbedder

    settings = Settings(data_dir=tmp_path / "data", index="kb")
    embedder = HashingEmbedder()
    leave = TextDocument(
        doc_id="leave",
        title="Parental leave",
        text="Parents receive sixteen weeks of paid parental leave.",
        label=PUBLIC,
    )
    Ingestor(settings, embedder=embedder).ingest_texts([leave], index="kb", source_name="kb")
    questions = [
        GoldenQuestion(question="How many weeks of parental leave?", expected_sources=("leave",)),
        GoldenQuestion(question="How long? " + "x" * 3000, answerable=False),
    ]
    asked: list[int] = []
    with pytest.raises(EvaluationError, match=r"question 2 .*longer than 2000"):
        evaluate_answers(
            settings,
            READER,
            questions,
            "kb",
            embedder=embedder,
            judge=_KeywordJudge(),
            progress=lambda i, n: asked.append(i),
        )
    assert asked == []
