"""The recency-intent detector and how the agent uses it: it only sets prefer_recent on its own
searches; the principal, the filters and the refusal decision stay as they were."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from citewell.agent.agent import REFUSAL_TEXT, Agent
from citewell.agent.backends import ExtractiveAnswerer
from citewell.agent.models import AgentConfig
from citewell.agent.recency import wants_recent
from citewell.agent.scoring import SentenceScorer
from citewell.core.models import Principal
from tests.agent.fakes import FakeSearch, HashingEmbedder, make_chunk


@pytest.mark.parametrize(
    "question",
    [
        "What significant changes were reported by NVIDIA in its most recent 10-Q?",
        "In the latest 10-Q, how did foreign exchange rates affect Amazon's financials?",
        "In the latest quarter, what were the sales of the gaming segment?",
        "What does the newest version of the travel policy say about rail travel?",
        "Summarise the latest quarterly report.",
        "Is this the current policy on remote work?",
        "What changed in the last revision of the handbook?",
        "How did revenue develop last quarter?",
        "Which risks does the most up-to-date filing list?",
    ],
)
def test_questions_asking_for_the_newest_document(question: str):
    assert wants_recent(question)


@pytest.mark.parametrize(
    "question",
    [
        # A recency word about something other than a document or a period.
        "The latest research shows that sleep improves memory; what does the study say?",
        "What are Apple's current assets and current liabilities?",
        "How is the current ratio computed?",
        "Did Microsoft report any recent acquisitions?",
        "What was the last step of the incident response?",
        "How did revenue change compared with last year?",
        # No recency word at all, or a named period.
        "What was Intel's R&D expenditure in Q1 2023?",
        "In Microsoft's Q3 2022 report, what were the inventory levels?",
        "Who gave their name to Normandy?",
    ],
)
def test_questions_that_do_not(question: str):
    assert not wants_recent(question)


OLD = datetime(2023, 1, 15, tzinfo=UTC)
CHUNKS = [
    make_chunk("report-q1", "The quarterly report shows revenue of 10 million for the quarter."),
    make_chunk(
        "report-board",
        "The quarterly report shows revenue of 12 million for the quarter.",
        classification="restricted",
        groups=("board",),
    ),
]
CHUNKS = [c.model_copy(update={"document_date": OLD}) for c in CHUNKS]
READER = Principal(name="pat", clearance="public", groups=frozenset())


def _agent(**cfg: object) -> tuple[Agent, FakeSearch]:
    search = FakeSearch(CHUNKS)
    config = AgentConfig.model_validate({"refusal_threshold": 0.2, **cfg})
    return Agent(search, SentenceScorer(HashingEmbedder()), ExtractiveAnswerer(), config), search


def test_agent_prefers_recent_only_when_asked_and_keeps_the_principal():
    agent, search = _agent()
    answer = agent.answer(READER, "What revenue does the latest quarterly report show?")
    assert search.requests and all(r.prefer_recent for _, r in search.requests)
    assert all(p == READER for p, _ in search.requests)
    assert {c.doc_id for c in answer.citations} == {"report-q1"}
    assert answer.citations[0].document_date == OLD
    assert answer.sources[0].document_date == OLD
    assert any("most recent" in note for note in answer.notes)

    agent.answer(READER, "What revenue does the quarterly report show?")
    assert not search.requests[-1][1].prefer_recent


def test_recency_never_overrides_refusal():
    agent, search = _agent()
    answer = agent.answer(READER, "Which quarterback won the latest edition of the Super Bowl?")
    assert search.requests[0][1].prefer_recent
    assert answer.refused and answer.answer == REFUSAL_TEXT and answer.citations == ()


def test_detection_can_be_switched_off():
    agent, search = _agent(detect_recency=False)
    agent.answer(READER, "What revenue does the latest quarterly report show?")
    assert not any(r.prefer_recent for _, r in search.requests)
