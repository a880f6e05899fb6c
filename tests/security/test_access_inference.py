"""Access and inference channels found by attacking retrieval and the agent: each test compares
what a principal gets with what it may get, and fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.errors import IndexIntegrityError
from citewell.core.models import AccessLabel, Principal, SearchMode, SearchRequest
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import Ingestor, TextDocument
from citewell.retrieval.service import ServingIndex
from tests.agent.fakes import HashingEmbedder

BOARD = TextDocument(
    doc_id="board-minutes",
    title="Board minutes",
    text="The merger with Initech closes in May after the board vote.",
    label=AccessLabel(classification="restricted", groups=frozenset({"everyone"})),
)
MEMO = TextDocument(
    doc_id="memo",
    title="Cafeteria memo",
    text="The cafeteria opens at noon; the merger of the two menus is planned.",
    label=AccessLabel(classification="confidential", groups=frozenset({"everyone"})),
)
INSERTED_LEVELS = ("public", "internal", "sensitive", "confidential", "restricted")
CONFIDENTIAL = Principal(name="carol", clearance="confidential", groups=frozenset())


def _ingested(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", index="kb")
    Ingestor(settings, embedder=HashingEmbedder()).ingest_texts(
        [BOARD, MEMO], index="kb", source_name="t"
    )
    return settings


def _doc_ids(service: ServingIndex, principal: Principal, mode: SearchMode) -> set[str]:
    request = SearchRequest(query="merger Initech board", mode=mode, rerank=False)
    return {r.chunk.doc_id for r in service.search(principal, request).results}


def test_levels_inserted_after_ingestion_never_lift_a_clearance_over_stored_ranks(
    tmp_path: Path,
) -> None:
    """Chunks store their level's rank. Inserting a level below existing ones in
    ``CITEWELL_CLASSIFICATION_LEVELS`` after ingestion shifted what every stored rank means: a
    confidential principal (now rank 3) saw restricted documents (stored at rank 3). A version
    whose stored ranks disagree with the configured levels is refused instead."""
    settings = _ingested(tmp_path)
    inserted = settings.model_copy(update={"classification_levels": INSERTED_LEVELS})
    service = ServingIndex(inserted, embedder=HashingEmbedder())
    try:
        for mode in SearchMode:
            with pytest.raises(IndexIntegrityError, match="classification levels"):
                _doc_ids(service, CONFIDENTIAL, mode)
    finally:
        service.close()


def test_a_level_appended_above_the_stored_ones_keeps_serving(tmp_path: Path) -> None:
    """The compatible change: a new most restrictive level moves no stored rank."""
    settings = _ingested(tmp_path)
    appended = settings.model_copy(
        update={"classification_levels": (*settings.classification_levels, "top-secret")}
    )
    service = ServingIndex(appended, embedder=HashingEmbedder())
    try:
        assert _doc_ids(service, CONFIDENTIAL, SearchMode.HYBRID) == {"memo"}
    finally:
        service.close()


def test_a_refresh_under_other_levels_is_refused_and_the_version_keeps_serving(
    tmp_path: Path,
) -> None:
    """A refresh would write new documents at the new ranks next to the old ones at the old
    ranks (their label fingerprints name levels, not ranks, so nothing is relabelled)."""
    settings = _ingested(tmp_path)
    inserted = settings.model_copy(update={"classification_levels": INSERTED_LEVELS})
    with pytest.raises(IndexIntegrityError, match="classification levels"):
        Ingestor(inserted, embedder=HashingEmbedder()).ingest_texts(
            [BOARD, MEMO], index="kb", source_name="t"
        )
    service = ServingIndex(settings, embedder=HashingEmbedder())
    try:
        assert _doc_ids(service, CONFIDENTIAL, SearchMode.HYBRID) == {"memo"}
    finally:
        service.close()
