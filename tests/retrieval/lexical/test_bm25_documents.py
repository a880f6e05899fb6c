"""Document-granularity BM25 (``BM25Index.document_search``): formula, chunk/document
equivalence, and the access guarantee that invisible chunks never move a document score."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from citewell.core.errors import InvalidArgumentError
from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical import BM25Index, Tokenizer
from tests.retrieval.contracts.lexical_index_contract import EVERYONE, NO_FILTERS, make_chunk
from tests.retrieval.lexical.hidden_chunks import GROUPS, WORDS, alone_and_mixed, label_st, texts_st

PUBLIC_ONLY = AccessScope(principal="p", max_rank=0, groups=frozenset({"everyone"}))


def test_matches_the_formula_by_hand() -> None:
    index = BM25Index(k1=0.9, b=0.4)
    index.add(
        [
            make_chunk("a1", "falcon river", doc_id="A"),
            make_chunk("a2", "valley valley", doc_id="A"),
            make_chunk("b1", "river boats grain", doc_id="B"),
        ]
    )

    # Documents: A = 4 tokens (falcon 1, river 1), B = 3 tokens (river 1); avgdl 3.5, N 2.
    def weight(tf: float, df: int, length: int) -> float:
        idf = math.log(1 + (2 - df + 0.5) / (df + 0.5))
        return idf * tf * 1.9 / (tf + 0.9 * (0.6 + 0.4 * length / 3.5))

    hits = dict(index.document_search("falcon river", EVERYONE, NO_FILTERS, 10))
    assert hits.keys() == {"A", "B"}
    assert hits["A"] == pytest.approx(weight(1, 1, 4) + weight(1, 2, 4), abs=1e-12)
    assert hits["B"] == pytest.approx(weight(1, 2, 3), abs=1e-12)


def test_a_chunked_document_scores_as_its_concatenation() -> None:
    parts = ["intel reports revenue", "the segment margin fell", "revenue rose in the quarter"]
    chunked, whole = BM25Index(), BM25Index()
    chunked.add([make_chunk(f"c{i}", t, doc_id="INTC") for i, t in enumerate(parts)])
    whole.add([make_chunk("w", " ".join(parts), doc_id="INTC")])
    for other in (chunked, whole):
        other.add([make_chunk("o", "apple revenue services quarter", doc_id="AAPL")])
    query = "intel quarter revenue margin"
    assert chunked.document_search(query, EVERYONE, NO_FILTERS, 5) == whole.document_search(
        query, EVERYONE, NO_FILTERS, 5
    )


def test_a_term_rare_across_documents_lifts_chunks_that_never_say_it() -> None:
    index = BM25Index()
    # The company is named once per filing, in one chunk; the gross margin chunks do not say it.
    index.add(
        [
            make_chunk("i0", "intel quarterly report", doc_id="INTC"),
            make_chunk("i1", "gross margin decreased on lower volume", doc_id="INTC"),
            make_chunk("a0", "apple quarterly report", doc_id="AAPL"),
            make_chunk("a1", "gross margin increased gross margin percentage", doc_id="AAPL"),
            *(make_chunk(f"f{i}", f"cash flow risk factor {i}", doc_id="AAPL") for i in range(4)),
        ]
    )
    chunk_order = [c for c, _ in index.search("intel gross margin", EVERYONE, NO_FILTERS, 10)]
    # Chunk BM25 alone ranks the other company's margin chunk above Intel's.
    assert chunk_order.index("a1") < chunk_order.index("i1")
    doc_hits = index.document_search("intel gross margin", EVERYONE, NO_FILTERS, 10)
    assert [d for d, _ in doc_hits] == ["INTC", "AAPL"]


def test_limit_and_empty_cases() -> None:
    index = BM25Index()
    with pytest.raises(InvalidArgumentError):
        index.document_search("x", EVERYONE, NO_FILTERS, 0)
    assert index.document_search("falcon", EVERYONE, NO_FILTERS, 5) == []
    index.add([make_chunk(f"c{i}", f"falcon word{i}", doc_id=f"D{i}") for i in range(5)])
    assert len(index.document_search("falcon", EVERYONE, NO_FILTERS, 3)) == 3
    assert index.document_search("unknownterm", EVERYONE, NO_FILTERS, 5) == []
    nobody = AccessScope(principal="n", max_rank=3, groups=frozenset())
    assert index.document_search("falcon", nobody, NO_FILTERS, 5) == []


def test_filters_restrict_the_documents_counted() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    kept = [
        make_chunk("a", "falcon river", doc_id="A", source="wiki", modified_at=when),
        make_chunk("b", "falcon valley", doc_id="B", source="wiki", modified_at=when),
    ]
    dropped = [make_chunk("c", "falcon falcon", doc_id="C", source="mail", modified_at=when)]
    mixed, alone = BM25Index(), BM25Index()
    mixed.add([*kept, *dropped])
    alone.add(kept)
    for filters in (
        SearchFilters(sources=frozenset({"wiki"})),
        SearchFilters(doc_ids=frozenset({"A", "B"})),
    ):
        assert mixed.document_search("falcon river", EVERYONE, filters, 10) == (
            alone.document_search("falcon river", EVERYONE, NO_FILTERS, 10)
        )


def test_persisted_index_gives_the_same_document_scores(tmp_path) -> None:
    index = BM25Index()
    index.add(
        [
            make_chunk("a1", "falcon river", doc_id="A"),
            make_chunk("a2", "valley", doc_id="A"),
            make_chunk("b1", "river boats", doc_id="B"),
        ]
    )
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path, tokenizer=Tokenizer())
    query = "falcon river valley"
    assert loaded.document_search(query, EVERYONE, NO_FILTERS, 5) == index.document_search(
        query, EVERYONE, NO_FILTERS, 5
    )


def test_deleting_a_document_removes_it_from_the_statistics() -> None:
    index, alone = BM25Index(), BM25Index()
    index.add([make_chunk("a", "falcon river", doc_id="A"), make_chunk("x", "falcon", doc_id="X")])
    alone.add([make_chunk("a", "falcon river", doc_id="A")])
    index.delete_documents(["X"])
    assert index.document_search("falcon", EVERYONE, NO_FILTERS, 5) == alone.document_search(
        "falcon", EVERYONE, NO_FILTERS, 5
    )


# ---------------------------------------------------------------- access independence

chunk_st = st.tuples(texts_st, label_st, st.integers(min_value=0, max_value=4))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(chunk_st, min_size=1, max_size=12),
    extra=st.lists(chunk_st, min_size=1, max_size=8),
    max_rank=st.integers(min_value=0, max_value=3),
    groups=st.frozensets(st.sampled_from(GROUPS), min_size=1),
    query=st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1, max_size=4).map(" ".join),
    interleave=st.booleans(),
)
def test_invisible_chunks_never_change_document_scores(
    docs: list[tuple[str, tuple[int, tuple[str, ...]], int]],
    extra: list[tuple[str, tuple[int, tuple[str, ...]], int]],
    max_rank: int,
    groups: frozenset[str],
    query: str,
    interleave: bool,
) -> None:
    # Hidden chunks share document ids with visible ones (doc D0..D4): an invisible chunk of a
    # visible document must not add to its tf or length either.
    scope = AccessScope(principal="p", max_rank=max_rank, groups=groups)
    base = [
        make_chunk(f"d{i}", t, doc_id=f"D{d}", rank=r, groups=g)
        for i, (t, (r, g), d) in enumerate(docs)
    ]
    hidden = [
        make_chunk(f"x{i}", t, doc_id=f"D{d}" if i % 2 else f"X{d}", rank=r, groups=g)
        for i, (t, (r, g), d) in enumerate(extra)
    ]
    hidden = [c for c in hidden if not scope.allows_chunk(c)]
    alone, mixed = alone_and_mixed(base, hidden, interleave)
    assert mixed.document_search(query, scope, NO_FILTERS, 50) == alone.document_search(
        query, scope, NO_FILTERS, 50
    )


def test_restricted_chunks_of_a_public_document_are_not_counted() -> None:
    secret = make_chunk("s", "merger merger merger", doc_id="A", rank=3, groups=("board",))
    public = [make_chunk("a", "falcon river", doc_id="A"), make_chunk("b", "river", doc_id="B")]
    with_secret, without = BM25Index(), BM25Index()
    with_secret.add([*public, secret])
    without.add(public)
    for query in ("merger", "merger falcon river", "river"):
        assert with_secret.document_search(query, PUBLIC_ONLY, NO_FILTERS, 5) == (
            without.document_search(query, PUBLIC_ONLY, NO_FILTERS, 5)
        )
    assert with_secret.document_search("merger", PUBLIC_ONLY, NO_FILTERS, 5) == []


# ---------------------------------------------------------------- two ways to the same scores

ALL_FROM_WIKI = SearchFilters(sources=frozenset({"wiki"}))  # keeps every chunk below


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.tuples(texts_st, st.integers(min_value=0, max_value=5)), max_size=16),
    labels=st.lists(label_st, min_size=6, max_size=6),
    max_rank=st.integers(min_value=0, max_value=3),
    groups=st.frozensets(st.sampled_from(GROUPS), min_size=1),
    query=st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1, max_size=4).map(" ".join),
    limit=st.integers(min_value=1, max_value=6),
)
def test_whole_document_postings_score_as_grouping_the_chunks_does(
    docs: list[tuple[str, int]],
    labels: list[tuple[int, tuple[str, ...]]],
    max_rank: int,
    groups: frozenset[str],
    query: str,
    limit: int,
) -> None:
    # Without filters, documents are scored from postings summed per document at compile time;
    # a filter (here one that keeps everything) groups the chunks per query instead. Same
    # documents, same scores to the bit, same order and cut.
    index = BM25Index()
    index.add(
        [
            make_chunk(f"c{i}", text, doc_id=f"D{d}", rank=labels[d][0], groups=labels[d][1])
            for i, (text, d) in enumerate(docs)
        ]
    )
    scope = AccessScope(principal="p", max_rank=max_rank, groups=groups)
    assert index.document_search(query, scope, NO_FILTERS, limit) == index.document_search(
        query, scope, ALL_FROM_WIKI, limit
    )


def test_a_document_relabelled_part_way_is_scored_from_its_visible_chunks() -> None:
    # A document whose chunks sit in two access classes (a relabel in progress) cannot be one
    # row of per-document postings; its visible chunks alone make its score.
    index, visible_only = BM25Index(), BM25Index()
    public = [make_chunk("a1", "falcon river", doc_id="A"), make_chunk("b", "river", doc_id="B")]
    index.add([*public, make_chunk("a2", "falcon falcon", doc_id="A", rank=3, groups=("hr",))])
    visible_only.add(public)
    assert index.document_search("falcon river", PUBLIC_ONLY, NO_FILTERS, 5) == (
        visible_only.document_search("falcon river", PUBLIC_ONLY, NO_FILTERS, 5)
    )


def test_ties_at_the_limit_are_cut_by_document_id() -> None:
    index = BM25Index()
    names = [f"D{i:03d}" for i in range(200)]
    index.add([make_chunk(f"c{i}", "falcon river", doc_id=name) for i, name in enumerate(names)])
    index.add([make_chunk(f"filler{i}", "grain barge", doc_id=f"Z{i}") for i in range(900)])
    hits = index.document_search("falcon", EVERYONE, NO_FILTERS, 7)
    assert [doc for doc, _ in hits] == names[:7]
