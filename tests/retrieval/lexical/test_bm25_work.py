"""The BM25 leg's work depends only on what the caller may see: the postings it reads (counted,
not timed) are the same whether or not invisible chunks hold the query's terms, and a term that
occurs only in invisible chunks costs exactly what an absent term costs. Also: the filter
semantics are those of ``retrieval/access.py`` (an empty set is no filter, as in Qdrant)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope, filters_allow
from citewell.retrieval.lexical import BM25Index
from citewell.retrieval.lexical.scoring import SearchTrace
from tests.retrieval.contracts.lexical_index_contract import CORPUS, FILLER, PUBLIC, make_chunk

SECRET = "zylophant"
NO_FILTERS = SearchFilters()
Search = Callable[[BM25Index, str, SearchTrace], list[tuple[str, float]]]
LEGS: dict[str, Search] = {
    "chunks": lambda index, query, trace: index.search(query, PUBLIC, NO_FILTERS, 10, trace=trace),
    "documents": lambda index, query, trace: index.document_search(
        query, PUBLIC, NO_FILTERS, 10, trace=trace
    ),
}


def visible_index() -> BM25Index:
    index = BM25Index()
    index.add(
        [
            make_chunk("v1", "the falcon hunts over the river valley"),
            make_chunk("v2", "river boats carry grain down the valley"),
            *FILLER,
        ]
    )
    return index


def with_invisible(index: BM25Index, copies: int) -> BM25Index:
    """Add restricted chunks that hold the secret term and the shared one ("river") often."""
    index.add(
        [
            make_chunk(
                f"x{i}",
                f"{SECRET} {SECRET} river falcon restricted dossier {i}",
                rank=3,
                groups=("security",),
            )
            for i in range(copies)
        ]
    )
    return index


def work(leg: str, index: BM25Index, query: str) -> tuple[int, list[tuple[str, float]]]:
    trace = SearchTrace()
    hits = LEGS[leg](index, query, trace)
    return trace.postings_read, hits


@pytest.mark.parametrize("leg", sorted(LEGS))
def test_postings_read_do_not_depend_on_invisible_chunks(leg: str) -> None:
    alone = work(leg, visible_index(), "river falcon")
    crowded = work(leg, with_invisible(visible_index(), 500), "river falcon")
    assert alone[0] > 0
    assert crowded == alone  # the same postings read, the same results and scores


@pytest.mark.parametrize("leg", sorted(LEGS))
def test_a_term_only_in_invisible_chunks_costs_what_an_absent_term_costs(leg: str) -> None:
    index = with_invisible(visible_index(), 500)
    assert work(leg, index, SECRET) == (0, [])
    assert work(leg, index, "nonexistentterm") == (0, [])
    # Mixed with a visible term: the secret adds no postings read.
    assert work(leg, index, f"falcon {SECRET}") == work(leg, index, "falcon")


@pytest.mark.parametrize(
    "filters",
    [
        SearchFilters(sources=frozenset(), doc_types=frozenset({"md"})),
        SearchFilters(doc_ids=frozenset(), sources=frozenset({"wiki"})),
        SearchFilters(doc_types=frozenset({"pdf", "md"})),
        SearchFilters(sources=frozenset({"drive"})),
    ],
)
def test_filters_mean_what_retrieval_access_says(filters: SearchFilters) -> None:
    # One definition of every filter field: an empty set is "no filter" in BM25 as it is in the
    # Qdrant filters (before, BM25 read an empty set as "match nothing").
    index = BM25Index()
    index.add(list(CORPUS))
    everyone = AccessScope(principal="all", max_rank=3, groups=frozenset({"everyone", "hr", "eng"}))
    expected = {c.chunk_id for c in CORPUS if "falcon" in c.text and filters_allow(filters, c)}
    hits = index.search("falcon", everyone, filters, 10)
    assert {chunk_id for chunk_id, _ in hits} == expected


def test_a_class_whose_terms_array_is_shorter_than_the_vocabulary_still_scores() -> None:
    # Regression: the public class's per-term counts stop growing while restricted chunks keep
    # adding vocabulary; summing them used to raise a numpy broadcast error on every search.
    index = BM25Index()
    index.add([make_chunk("pub", "falcon river valley"), *FILLER])
    index.add(
        [
            make_chunk(f"r{i}", f"term{i}a term{i}b term{i}c", rank=3, groups=("security",))
            for i in range(1500)
        ]
    )
    hits = index.search("falcon", PUBLIC, NO_FILTERS, 5)
    assert [chunk_id for chunk_id, _ in hits] == ["pub"]
    assert index.document_search("falcon", PUBLIC, NO_FILTERS, 5)[0][0] == "doc-pub"
