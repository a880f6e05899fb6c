"""BM25 indexes a chunk's contextual header with its text, and keeps it across save/load."""

from __future__ import annotations

from citewell.retrieval.lexical import BM25Index, contextual_text
from tests.retrieval.contracts.lexical_index_contract import (
    EVERYONE,
    FILLER,
    NO_FILTERS,
    make_chunk,
)


def test_contextual_text_puts_the_header_on_its_own_line():
    assert contextual_text("Title | Section", "body") == "Title | Section\nbody"
    assert contextual_text("", "body") == "body"


def test_header_terms_are_searchable_and_survive_persistence(tmp_path):
    index = BM25Index()
    with_header = make_chunk("c1", "services revenue grew").model_copy(
        update={"context": "2023 Q3 AAPL"}
    )
    without = make_chunk("c2", "services revenue fell")
    index.add([with_header, without, *FILLER])  # filler keeps idf positive
    assert index.search("aapl services", EVERYONE, NO_FILTERS, 5)[0][0] == "c1"
    assert index.search("aapl", EVERYONE, NO_FILTERS, 5)[0][0] == "c1"
    index.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert [cid for cid, _ in loaded.search("aapl", EVERYONE, NO_FILTERS, 5)] == ["c1"]


def test_explicit_texts_override_the_header():
    index = BM25Index()
    chunk = make_chunk("c1", "body").model_copy(update={"context": "zebra"})
    index.add([chunk, *FILLER], ["giraffe body", *(c.text for c in FILLER)])
    assert index.search("zebra", EVERYONE, NO_FILTERS, 5) == []
    assert index.search("giraffe", EVERYONE, NO_FILTERS, 5)[0][0] == "c1"
