"""Caches shared by the callers of one process must not tell one caller what another asked or
was told. The query-embedding LRU and the agent's question analyses are keyed by the exact text:
shared, a text that some other caller embedded returns in a few milliseconds instead of tens
(measured: 5 ms against 28 ms median for a hybrid search with the bundled model, and a guess
classified correctly 40 times out of 40 in one shot each). What they hold includes every claim
an LLM wrote from a high-clearance caller's restricted sources (the agent embeds and analyses
each claim to check it), so a low-clearance caller could confirm a guessed sentence of a
restricted document by timing one search."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from citewell.agent.agent import Agent
from citewell.agent.answerability import AnswerabilityChecker, TextAnalyzer
from citewell.agent.citations import MARKER_RE
from citewell.agent.llm import Completion
from citewell.agent.models import AgentConfig
from citewell.agent.scoring import ScoredSentence, SentenceScorer
from citewell.core.models import AccessLabel, Chunk, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
SECRET = AccessLabel(classification="restricted", groups=frozenset({"board"}))
BOARD = Principal(name="board-member", clearance="restricted", groups=frozenset({"board"}))
READER = Principal(name="reader", clearance="public", groups=frozenset())
QUESTION = "What is the budget of Project Falcon?"
# What an LLM writes from the restricted source, in its own words (not a sentence of the source).
CLAIM = "Project Falcon will cost the company 4.2 million dollars in total [1]."
CHECKED_CLAIM = " ".join(MARKER_RE.sub("", CLAIM).split())  # the text the agent checks
ASKED_BY_NOBODY = "What is the budget of the harbor canteen?"


class CountingEmbedder(HashingEmbedder):
    """Counts query texts the model itself embeds (cache misses)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def embed_query(self, text: str) -> np.ndarray:
        self.queries.append(text)
        return super().embed_query(text)


class ClaimingBackend:
    """An LLM backend that states one claim from its first source."""

    name = "fake-llm"
    uses_llm = True

    def generate(
        self,
        question: str,
        sources: Sequence[Chunk],
        sentences: Sequence[ScoredSentence],
        timeout_s: float,
    ) -> Completion:
        return Completion(text=CLAIM)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("partitions")
    settings = Settings(data_dir=root / "data", principals_file=root / "p.yaml")
    documents = [
        TextDocument(
            doc_id="falcon",
            title="Project Falcon",
            text="Project Falcon has a budget of 4.2 million dollars for the harbor expansion.",
            label=SECRET,
        ),
        TextDocument(
            doc_id="canteen",
            title="Canteen",
            text="The harbor canteen opens at noon and serves lunch until three.",
            label=PUBLIC,
        ),
    ]
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        documents, index=settings.index, source_name="notes"
    )
    return settings


@pytest.fixture
def model(tmp_path: Path) -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
def service(settings: Settings, model: CountingEmbedder, tmp_path: Path) -> Iterator[Any]:
    cached = CachingEmbedder(model, EmbeddingCache(tmp_path / "embeddings.sqlite"))
    serving = ServingIndex(settings, embedder=cached)
    try:
        yield serving
    finally:
        serving.close()


def _search(service: ServingIndex, principal: Principal, query: str) -> None:
    service.search(principal, SearchRequest(query=query, k=5, mode=SearchMode.HYBRID))


def test_a_query_embedded_for_one_caller_is_not_served_to_another(
    service: ServingIndex, model: CountingEmbedder
) -> None:
    _search(service, BOARD, QUESTION)
    assert model.queries == [QUESTION]
    _search(service, BOARD, QUESTION)
    assert model.queries == [QUESTION], "the same caller's repeated query is cached"
    _search(service, READER, QUESTION)
    assert model.queries == [QUESTION, QUESTION], "another caller's query was served from cache"


def test_what_the_agent_embedded_for_one_caller_is_not_served_to_another(
    service: ServingIndex, model: CountingEmbedder
) -> None:
    """The board member's question and the claim an LLM wrote from the restricted source are
    embedded while answering; the reader's search for either text embeds it anew."""
    agent = Agent(
        service,
        SentenceScorer(service.embedder),
        ClaimingBackend(),
        AgentConfig(refusal_threshold=0.0, max_retrievals=1),
    )
    answer = agent.answer(BOARD, QUESTION)
    assert answer.sources[0].doc_id == "falcon"
    claim = CHECKED_CLAIM
    assert claim in model.queries, "the agent checked the claim (else this test proves nothing)"
    before = len(model.queries)
    _search(service, READER, claim)
    _search(service, READER, QUESTION)
    assert model.queries[before:] == [claim, QUESTION]


def test_the_agent_analyses_each_callers_question_itself(
    service: ServingIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question analysis (spaCy, milliseconds) is cached too: the reader's answer must pay
    for its own question even when the board member asked (or an LLM claimed) the same text."""
    analyzer = TextAnalyzer()
    analysed: list[str] = []
    real = analyzer._profile

    def spy(text: str) -> Any:
        analysed.append(text)
        return real(text)

    monkeypatch.setattr(analyzer, "_profile", spy)
    agent = Agent(
        service,
        SentenceScorer(service.embedder),
        ClaimingBackend(),
        AgentConfig(refusal_threshold=0.0, max_retrievals=1),
        checker=AnswerabilityChecker(analyzer),
    )
    agent.answer(BOARD, QUESTION)
    claim = CHECKED_CLAIM
    assert analysed.count(QUESTION) == 1 and claim in analysed
    agent.answer(BOARD, QUESTION)
    assert analysed.count(QUESTION) == 1, "the same caller's question is cached"
    analysed.clear()
    agent.answer(READER, QUESTION)
    agent.answer(READER, claim)
    assert analysed[:1] == [QUESTION] and claim in analysed
    agent.answer(READER, ASKED_BY_NOBODY)
    assert ASKED_BY_NOBODY in analysed
