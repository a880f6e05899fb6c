"""The contract every ``LexicalIndex`` implementation passes. Subclass ``LexicalIndexContract``
in a ``test_*.py`` module and implement ``make_index`` and ``reopen``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from citewell.core.models import AccessLabel, Chunk, SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.protocols import LexicalIndex

NO_FILTERS = SearchFilters()
EVERYONE = AccessScope(principal="all", max_rank=3, groups=frozenset({"everyone", "hr", "eng"}))
PUBLIC = AccessScope(principal="pub", max_rank=0, groups=frozenset({"everyone"}))
OPEN_LABEL = AccessLabel(classification="public", groups=frozenset({"everyone"}))


def make_chunk(
    chunk_id: str,
    text: str,
    *,
    doc_id: str | None = None,
    rank: int = 0,
    groups: tuple[str, ...] = ("everyone",),
    source: str = "wiki",
    doc_type: str = "md",
    modified_at: datetime | None = None,
) -> Chunk:
    return Chunk(
        chunk_id=chunk_id,
        doc_id=doc_id or f"doc-{chunk_id}",
        chunk_index=0,
        text=text,
        title="",
        source=source,
        source_uri=f"file:///{chunk_id}",
        doc_type=doc_type,
        char_start=0,
        char_end=len(text),
        classification="public",
        classification_rank=rank,
        groups=groups,
        modified_at=modified_at,
    )


# A small corpus where "falcon" is rare, so its chunks are clearly the best matches.
CORPUS = (
    make_chunk("a", "the falcon hunts over the river valley"),
    make_chunk("b", "river boats carry grain down the valley"),
    make_chunk("c", "a falcon nest on the cliff", rank=2, groups=("hr",)),
    make_chunk("d", "grain prices fell this year"),
    make_chunk("e", "falcon falcon training manual", groups=("eng",)),
    make_chunk("f", "weather report for the river delta"),
    # Filler, so that BM25Okapi's idf (zero for a term in half the chunks) stays positive.
    make_chunk("g", "quarterly budget review meeting notes"),
    make_chunk("h", "office opening hours and holidays"),
    make_chunk("i", "security badge policy for visitors"),
    make_chunk("j", "server maintenance window schedule"),
    make_chunk("k", "expense claims must include receipts"),
    make_chunk("l", "new starter onboarding checklist"),
)
FILLER = CORPUS[6:]


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [chunk_id for chunk_id, _ in hits]


class LexicalIndexContract:
    def make_index(self) -> LexicalIndex:
        raise NotImplementedError

    def reopen(self, index: LexicalIndex, directory: Path) -> LexicalIndex:
        """Persist ``index`` under ``directory`` and open it again."""
        raise NotImplementedError

    def filled(self) -> LexicalIndex:
        index = self.make_index()
        index.add(list(CORPUS))
        return index

    def test_is_a_lexical_index(self) -> None:
        assert isinstance(self.make_index(), LexicalIndex)

    def test_empty_index_finds_nothing(self) -> None:
        index = self.make_index()
        assert len(index) == 0
        assert index.search("falcon", EVERYONE, NO_FILTERS, 10) == []

    def test_results_best_first_positive_and_limited(self) -> None:
        hits = self.filled().search("falcon river", EVERYONE, NO_FILTERS, 3)
        assert len(hits) == 3
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(score > 0 for score in scores)
        assert ids(hits)[0] == "a"  # the only chunk with both terms

    def test_unknown_terms_find_nothing(self) -> None:
        assert self.filled().search("zeppelin", EVERYONE, NO_FILTERS, 10) == []

    def test_rank_above_clearance_is_invisible(self) -> None:
        index = self.filled()
        assert "c" in ids(index.search("falcon", EVERYONE, NO_FILTERS, 10))
        low = AccessScope(principal="low", max_rank=1, groups=frozenset({"everyone", "hr"}))
        assert "c" not in ids(index.search("falcon", low, NO_FILTERS, 10))

    def test_groups_must_intersect(self) -> None:
        index = self.filled()
        assert set(ids(index.search("falcon", PUBLIC, NO_FILTERS, 10))) == {"a"}
        eng = AccessScope(principal="eng", max_rank=0, groups=frozenset({"eng", "everyone"}))
        assert set(ids(index.search("falcon", eng, NO_FILTERS, 10))) == {"a", "e"}

    def test_chunk_without_groups_is_visible_to_nobody(self) -> None:
        index = self.filled()
        index.add([make_chunk("orphan", "falcon orphan", groups=())])
        assert "orphan" not in ids(index.search("falcon orphan", EVERYONE, NO_FILTERS, 10))

    def test_scope_matching_nothing_finds_nothing(self) -> None:
        index = self.filled()
        no_groups = AccessScope(principal="x", max_rank=3, groups=frozenset())
        assert index.search("falcon", no_groups, NO_FILTERS, 10) == []
        denied = AccessScope(principal="x", max_rank=-1, groups=frozenset({"everyone"}))
        assert index.search("falcon", denied, NO_FILTERS, 10) == []

    def test_invisible_chunks_do_not_change_scores(self) -> None:
        index = self.filled()
        before = index.search("falcon river grain", PUBLIC, NO_FILTERS, 10)
        index.add([make_chunk("secret", "falcon " * 20, rank=3, groups=("hr",))])
        assert index.search("falcon river grain", PUBLIC, NO_FILTERS, 10) == before

    def test_filters_narrow_results(self) -> None:
        day = datetime(2024, 5, 1, tzinfo=UTC)
        index = self.make_index()
        index.add(
            [
                make_chunk("s1", "falcon one", source="wiki", doc_type="md", modified_at=day),
                make_chunk("s2", "falcon two", source="drive", doc_type="pdf"),
                make_chunk("s3", "falcon three", source="drive", doc_type="md", doc_id="D"),
                *FILLER,
            ]
        )

        def found(**filters: object) -> set[str]:
            hits = index.search("falcon", EVERYONE, SearchFilters.model_validate(filters), 10)
            return set(ids(hits))

        assert found() == {"s1", "s2", "s3"}
        assert found(sources=frozenset({"drive"})) == {"s2", "s3"}
        assert found(doc_types=frozenset({"md"})) == {"s1", "s3"}
        assert found(sources=frozenset({"drive"}), doc_types=frozenset({"md"})) == {"s3"}
        assert found(doc_ids=frozenset({"D", "missing"})) == {"s3"}
        assert found(sources=frozenset({"nowhere"})) == set()
        # Chunks with no modification time never satisfy a time range.
        assert found(modified_from=datetime(2024, 1, 1, tzinfo=UTC)) == {"s1"}
        assert found(modified_to=datetime(2024, 1, 1, tzinfo=UTC)) == set()
        assert found(modified_to=datetime(2024, 6, 1, tzinfo=UTC)) == {"s1"}

    def test_add_replaces_by_chunk_id(self) -> None:
        index = self.filled()
        index.add([make_chunk("a", "completely different words")])
        assert len(index) == len(CORPUS)
        assert "a" not in ids(index.search("falcon", EVERYONE, NO_FILTERS, 10))
        assert ids(index.search("different", EVERYONE, NO_FILTERS, 10)) == ["a"]

    def test_delete_documents(self) -> None:
        index = self.filled()
        index.delete_documents(["doc-a", "doc-e", "no-such-doc"])
        assert len(index) == len(CORPUS) - 2
        assert set(ids(index.search("falcon", EVERYONE, NO_FILTERS, 10))) == {"c"}

    def test_delete_then_add_same_chunk(self) -> None:
        index = self.filled()
        index.delete_documents(["doc-a"])
        index.add([CORPUS[0]])
        assert "a" in ids(index.search("falcon", PUBLIC, NO_FILTERS, 10))

    def test_relabel_changes_visibility(self) -> None:
        index = self.filled()
        index.relabel_document("doc-a", AccessLabel(classification="restricted"), 3)
        assert "a" not in ids(index.search("falcon", PUBLIC, NO_FILTERS, 10))
        index.relabel_document("doc-c", OPEN_LABEL, 0)
        assert set(ids(index.search("falcon", PUBLIC, NO_FILTERS, 10))) == {"c"}
        assert len(index) == len(CORPUS)

    def test_relabel_equals_fresh_index(self) -> None:
        relabelled = self.filled()
        relabelled.relabel_document("doc-c", OPEN_LABEL, 0)
        fresh = self.make_index()
        fresh.add([*CORPUS[:2], make_chunk("c", CORPUS[2].text), *CORPUS[3:]])
        for query in ("falcon", "river valley", "falcon nest cliff"):
            assert relabelled.search(query, PUBLIC, NO_FILTERS, 10) == fresh.search(
                query, PUBLIC, NO_FILTERS, 10
            )

    def test_persistence_round_trip(self, tmp_path: Path) -> None:
        index = self.filled()
        index.delete_documents(["doc-b"])
        index.relabel_document("doc-e", AccessLabel(classification="public"), 0)
        reopened = self.reopen(index, tmp_path / "lexical")
        assert len(reopened) == len(index)
        for scope in (EVERYONE, PUBLIC):
            for query in ("falcon", "river grain", "weather"):
                assert reopened.search(query, scope, NO_FILTERS, 10) == index.search(
                    query, scope, NO_FILTERS, 10
                )
        reopened.add([make_chunk("z", "falcon again")])
        assert "z" in ids(reopened.search("falcon", PUBLIC, NO_FILTERS, 10))

    def test_document_terms_reads_only_visible_chunks_of_the_asked_documents(self) -> None:
        index = self.make_index()
        index.add(
            [
                *FILLER,
                make_chunk("cover", "Apple Inc. quarterly report", doc_id="filing"),
                make_chunk("body", "net sales rose in the services segment", doc_id="filing"),
                make_chunk("memo", "apple harvest memo", doc_id="secret", rank=2, groups=("hr",)),
            ]
        )
        asked = ("filing", "secret", "no-such-doc")
        # The term is found in another chunk of the document than the one that matched.
        terms = index.document_terms("Apple services 2023", PUBLIC, asked)
        assert set(terms) == {"filing"}
        assert len(terms["filing"]) == 2  # "apple" and "servic(es)" as the index stems them
        assert index.document_terms("Apple services", EVERYONE, asked)["secret"]
        # A document the scope cannot see holds nothing for it, and nothing is invented.
        assert "secret" not in index.document_terms("apple harvest", PUBLIC, asked)
        assert index.document_terms("zebra", EVERYONE, asked) == {}
        assert index.document_terms("apple", PUBLIC, ()) == {}
        nobody = AccessScope(principal="none", max_rank=3, groups=frozenset())
        assert index.document_terms("apple", nobody, asked) == {}
        # Withdrawn and relabelled documents answer for their current state.
        index.relabel_document("filing", AccessLabel(classification="restricted"), 3)
        assert index.document_terms("apple", PUBLIC, asked) == {}
        index.delete_documents(["filing"])
        assert "filing" not in index.document_terms("apple", EVERYONE, asked)
