"""A question's key name may stand on a document's cover page only (a filing names its company
once, its later chunks never): the answerability check reads key terms at the document level,
from the index, under the caller's scope. A name no visible document holds still refuses."""

from __future__ import annotations

from typing import Any

import pytest

from citewell.agent.factory import build_agent
from citewell.agent.models import AgentConfig
from citewell.core.models import AccessLabel, Principal, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.service import ServingIndex

pytestmark = pytest.mark.slow

PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))
SECRET = AccessLabel(classification="restricted", groups=frozenset({"board"}))
READER = Principal(name="pat", clearance="public", groups=frozenset())
FILLER = [
    "The warehouse network was reorganised around three regional hubs during the period.",
    "Management reviewed the lease portfolio and renewed most contracts on similar terms.",
    "Customer contracts are recognised over time as the transport services are performed.",
    "The audit committee met four times and reviewed the internal control framework.",
    "Depreciation of vehicles follows the straight-line method over their useful lives.",
    "Insurance claims related to cargo damage remained within the expected range.",
]


def filing(company: str, body: str) -> str:
    cover = f"Quarterly report of {company}.\n\n{company} is a freight company."
    padding = " ".join(FILLER * 6)
    return f"{cover}\n\n{padding}\n\n{body}\n\n{padding}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any):
    settings = Settings(data_dir=tmp_path_factory.mktemp("doc-terms"), index="filings")
    docs = [
        TextDocument(
            doc_id="kestrel",
            title="Form Q report",
            text=filing("Kestrel Freight", "Fuel costs rose by 14 percent in the second quarter."),
            label=PUBLIC,
        ),
        TextDocument(
            doc_id="harrier",
            title="Form Q report",
            text=filing("Harrier Lines", "Fuel costs fell by 3 percent in the second quarter."),
            label=SECRET,
        ),
    ]
    Ingestor(settings, embedder=embedder).ingest_texts(docs, index="filings", source_name="q")
    service = ServingIndex(settings, embedder=embedder)
    yield settings, service
    service.close()


def test_search_reports_the_terms_each_visible_result_document_holds(served) -> None:
    _, service = served
    result = service.search(
        READER,
        SearchRequest(query="fuel costs second quarter", k=1, document_terms_of="Kestrel Harrier"),
    )
    assert len(result.results) == 1 and "Fuel costs rose" in result.results[0].chunk.text
    assert {r.chunk.doc_id for r in result.results} == {"kestrel"}
    # Held by a chunk other than the ones returned; the invisible filing is never consulted.
    assert result.document_terms == {"kestrel": frozenset({"kestrel"})}
    assert "kestrel" not in {t for r in result.results for t in r.chunk.text.lower().split()}
    plain = service.search(READER, SearchRequest(query="fuel costs second quarter", k=1))
    assert plain.document_terms == {}


def test_a_key_name_on_the_cover_page_only_is_answered(served, embedder: Any) -> None:
    settings, service = served
    agent = build_agent(settings, service, embedder, config=AgentConfig(time_budget_s=600))
    answer = agent.answer(
        READER, "How much did fuel costs at Kestrel Freight rise in the second quarter?"
    )
    assert not answer.refused, answer.refusal_reason
    assert "14 percent" in answer.answer
    assert {c.doc_id for c in answer.citations} == {"kestrel"}


def test_a_name_only_an_invisible_document_holds_is_refused(served, embedder: Any) -> None:
    settings, service = served
    agent = build_agent(settings, service, embedder, config=AgentConfig(time_budget_s=600))
    answer = agent.answer(
        READER, "How much did fuel costs at Harrier Lines fall in the second quarter?"
    )
    assert answer.refused
    assert answer.refusal_reason is not None and "Harrier" in answer.refusal_reason
    assert "3 percent" not in answer.answer
