from __future__ import annotations

import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi

import citewell.retrieval.lexical.storage as bm25_storage
from citewell.core.errors import ConfigurationError, InvalidArgumentError, StoreUnavailableError
from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical import BM25Index, Tokenizer
from tests.retrieval.contracts.lexical_index_contract import (
    CORPUS,
    EVERYONE,
    NO_FILTERS,
    OPEN_LABEL,
    PUBLIC,
    LexicalIndexContract,
    make_chunk,
)
from tests.retrieval.lexical.hidden_chunks import GROUPS, WORDS, alone_and_mixed, label_st, texts_st

REPO = Path(__file__).resolve().parents[3]


class TestBM25IndexContract(LexicalIndexContract):
    def make_index(self) -> BM25Index:
        return BM25Index()

    def reopen(self, index: BM25Index, directory: Path) -> BM25Index:
        index.save(directory)
        return BM25Index.load(directory)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ConfigurationError):
        BM25Index(k1=0)
    with pytest.raises(ConfigurationError):
        BM25Index(b=1.5)
    # A caller's bad argument is not a configuration problem.
    with pytest.raises(InvalidArgumentError):
        BM25Index().search("x", EVERYONE, NO_FILTERS, 0)
    with pytest.raises(InvalidArgumentError):
        BM25Index().add([CORPUS[0]], texts=["a", "b"])


def test_texts_override_chunk_text() -> None:
    index = BM25Index()
    index.add(list(CORPUS), texts=["Report Title then body", *(c.text for c in CORPUS[1:])])
    assert [c for c, _ in index.search("title", EVERYONE, NO_FILTERS, 5)] == ["a"]
    assert "a" not in [c for c, _ in index.search("falcon", EVERYONE, NO_FILTERS, 5)]


# ---------------------------------------------------------------- parity with rank_bm25


@pytest.fixture(scope="module")
def scifact_slice(shared_data: Path) -> list[dict[str, str]]:
    with gzip.open(shared_data / "ir" / "scifact" / "corpus.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in itertools.islice(fh, 400)]


def test_scores_equal_rank_bm25_on_visible_subcorpus(scifact_slice: list[dict[str, str]]) -> None:
    tokenizer = Tokenizer()
    index = BM25Index(k1=0.9, b=0.4, tokenizer=tokenizer)
    chunks, texts = [], []
    for i, doc in enumerate(scifact_slice):
        # Every third document is restricted to HR: invisible to the public scope.
        groups = ("hr",) if i % 3 == 0 else ("everyone",)
        chunks.append(make_chunk(doc["_id"], doc["text"], rank=i % 2, groups=groups))
        texts.append(f"{doc['title']} {doc['text']}")
    index.add(chunks, texts=texts)
    scope = AccessScope(principal="p", max_rank=1, groups=frozenset({"everyone"}))
    visible = [(c.chunk_id, t) for c, t in zip(chunks, texts, strict=True) if scope.allows_chunk(c)]
    reference = BM25Okapi([tokenizer(t) for _, t in visible], k1=0.9, b=0.4, epsilon=0.25)
    queries = [doc["title"] for doc in scifact_slice[1:60:3]] + ["cell cell protein the of"]
    for query in queries:
        expected = reference.get_scores(tokenizer(query))
        wanted = {visible[i][0]: s for i, s in enumerate(expected) if s > 0}
        hits = dict(index.search(query, scope, NO_FILTERS, 100))
        top = sorted(wanted.values(), reverse=True)[:100]
        assert len(hits) == len(top)
        for chunk_id, score in hits.items():
            assert abs(score - wanted[chunk_id]) < 1e-9
        assert np.allclose(sorted(hits.values(), reverse=True), top, rtol=0, atol=1e-9)


def test_negative_idf_floor_matches_rank_bm25() -> None:
    # "common" is in 3 of 4 documents → negative raw idf, replaced by epsilon * mean idf.
    texts = ["common alpha", "common beta", "common gamma", "delta"]
    index = BM25Index()
    index.add([make_chunk(str(i), t) for i, t in enumerate(texts)])
    tokenizer = Tokenizer()
    reference = BM25Okapi([tokenizer(t) for t in texts], k1=0.9, b=0.4)
    expected = reference.get_scores(tokenizer("common alpha"))
    hits = dict(index.search("common alpha", EVERYONE, NO_FILTERS, 10))
    assert hits.keys() == {str(i) for i, s in enumerate(expected) if s > 0}
    for chunk_id, score in hits.items():
        assert abs(score - expected[int(chunk_id)]) < 1e-12


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.tuples(texts_st, label_st), min_size=1, max_size=16),
    query=st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1, max_size=6).map(" ".join),
    limit=st.integers(min_value=1, max_value=8),
)
def test_the_top_is_the_head_of_every_score_ranked(
    docs: list[tuple[str, tuple[int, tuple[str, ...]]]], query: str, limit: int
) -> None:
    # Unfiltered searches keep only the best ``limit`` while scoring; filtered ones rank every
    # match. A filter that keeps everything must give the same head, ties cut by insertion.
    index = BM25Index()
    index.add([make_chunk(f"d{i}", t, rank=r, groups=g) for i, (t, (r, g)) in enumerate(docs)])
    everything = index.search(query, EVERYONE, SearchFilters(sources=frozenset({"wiki"})), 10**6)
    assert index.search(query, EVERYONE, NO_FILTERS, limit) == everything[:limit]


def test_ties_at_the_limit_are_cut_by_insertion_order() -> None:
    index = BM25Index()
    index.add([make_chunk(f"c{i:03d}", "falcon river") for i in range(300)])
    index.add([make_chunk(f"filler{i}", "grain barge") for i in range(900)])
    hits = index.search("falcon", EVERYONE, NO_FILTERS, 7)
    assert [chunk_id for chunk_id, _ in hits] == [f"c{i:03d}" for i in range(7)]


# ---------------------------------------------------------------- statistics independence


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(st.tuples(texts_st, label_st), min_size=1, max_size=12),
    extra=st.lists(st.tuples(texts_st, label_st), min_size=1, max_size=8),
    max_rank=st.integers(min_value=0, max_value=3),
    groups=st.frozensets(st.sampled_from(GROUPS), min_size=1),
    query=st.lists(st.sampled_from([*WORDS, "unknown"]), min_size=1, max_size=4).map(" ".join),
    interleave=st.booleans(),
)
def test_invisible_documents_never_change_results(
    docs: list[tuple[str, tuple[int, tuple[str, ...]]]],
    extra: list[tuple[str, tuple[int, tuple[str, ...]]]],
    max_rank: int,
    groups: frozenset[str],
    query: str,
    interleave: bool,
) -> None:
    scope = AccessScope(principal="p", max_rank=max_rank, groups=groups)
    base = [make_chunk(f"d{i}", t, rank=r, groups=g) for i, (t, (r, g)) in enumerate(docs)]
    hidden = [make_chunk(f"x{i}", t, rank=r, groups=g) for i, (t, (r, g)) in enumerate(extra)]
    hidden = [c for c in hidden if not scope.allows_chunk(c)]
    alone, mixed = alone_and_mixed(base, hidden, interleave)
    assert mixed.search(query, scope, NO_FILTERS, 50) == alone.search(query, scope, NO_FILTERS, 50)


# ---------------------------------------------------------------- persistence


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        BM25Index.load(tmp_path / "absent")


def saved(tmp_path: Path) -> tuple[BM25Index, Path, Path]:
    index = BM25Index()
    index.add(list(CORPUS))
    directory = tmp_path / "lexical"
    index.save(directory)
    version = directory / (directory / "CURRENT").read_text().strip()
    return index, directory, version


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    docs=st.lists(
        st.tuples(texts_st, label_st, st.integers(min_value=0, max_value=4)), max_size=20
    ),
    deleted=st.sets(st.integers(min_value=0, max_value=4)),
)
def test_a_loaded_index_holds_what_its_writes_built(
    docs: list[tuple[str, tuple[int, tuple[str, ...]], int]], deleted: set[int]
) -> None:
    # Loading restores the per-chunk state and class statistics in bulk; they must be what
    # adding the chunks one by one made.
    index = BM25Index()
    index.add(
        [
            make_chunk(f"c{i}", text, doc_id=f"D{d}", rank=rank, groups=groups)
            for i, (text, (rank, groups), d) in enumerate(docs)
        ]
    )
    index.delete_documents([f"D{d}" for d in deleted])
    with tempfile.TemporaryDirectory() as scratch:
        index.save(Path(scratch))  # compacts the index first
        loaded = BM25Index.load(Path(scratch))
    state = (
        "_vocab", "_chunk_ids", "_doc_ids", "_source_codes", "_doc_type_codes", "_modified",
        "_class_of", "_length", "_alive", "_slot_of_chunk", "_slots_of_doc", "_class_keys",
        "_class_docs", "_class_len", "_sources", "_doc_types",
    )  # fmt: skip
    for name in state:
        assert getattr(loaded, name) == getattr(index, name), name
    n_terms = len(index._vocab)
    assert [df[:n_terms].tolist() for df in loaded._class_df] == [
        df[:n_terms].tolist() for df in index._class_df
    ]
    assert [t.tolist() for t in loaded._terms] == [t.tolist() for t in index._terms]
    assert [c.tolist() for c in loaded._counts] == [c.tolist() for c in index._counts]


def test_a_read_only_index_searches_as_the_saved_one_and_refuses_writes(tmp_path: Path) -> None:
    # Served versions load read-only: the per-chunk arrays writes need are dropped.
    index, directory, _ = saved(tmp_path)
    served = BM25Index.load(directory, read_only=True)
    assert served._terms == [] and served._counts == []
    for scope in (EVERYONE, PUBLIC):
        for query in ("falcon", "river valley grain", "falcon falcon nest"):
            assert served.search(query, scope, NO_FILTERS, 10) == index.search(
                query, scope, NO_FILTERS, 10
            )
            assert served.document_search(query, scope, NO_FILTERS, 10) == (
                index.document_search(query, scope, NO_FILTERS, 10)
            )
    only_a = SearchFilters(doc_ids=frozenset({"doc-a"}))
    assert served.search("falcon", EVERYONE, only_a, 5) == index.search(
        "falcon", EVERYONE, only_a, 5
    )
    writes = (
        lambda: served.add([make_chunk("z", "new falcon")]),
        lambda: served.delete_documents(["doc-a"]),
        lambda: served.relabel_document("doc-a", OPEN_LABEL, 0),
        lambda: served.save(tmp_path / "copy"),
    )
    for write in writes:
        with pytest.raises(InvalidArgumentError, match="read-only"):
            write()
    assert len(served) == len(CORPUS)


def test_concurrent_searches_of_a_served_index_get_what_one_at_a_time_gets(tmp_path: Path) -> None:
    # The scoring loops release the GIL and run in parallel; each search has its own buffers.
    index = BM25Index()
    index.add(
        [
            make_chunk(
                f"c{i}", f"falcon river {'valley ' * (i % 5)}grain {i % 7}", doc_id=f"D{i % 40}"
            )
            for i in range(400)
        ]
    )
    index.save(tmp_path / "lexical")
    served = BM25Index.load(tmp_path / "lexical", read_only=True)
    queries = ["falcon valley", "river grain", "valley valley falcon", "grain 3", "falcon 6 river"]
    expected = {
        q: (
            served.search(q, EVERYONE, NO_FILTERS, 7),
            served.document_search(q, EVERYONE, NO_FILTERS, 7),
        )
        for q in queries
    }
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda q: (
                    q,
                    served.search(q, EVERYONE, NO_FILTERS, 7),
                    served.document_search(q, EVERYONE, NO_FILTERS, 7),
                ),
                queries * 40,
            )
        )
    for query, chunks, documents in answers:
        assert (chunks, documents) == expected[query]


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "pointer", "delete"])
def test_corrupt_files_raise_store_unavailable(tmp_path: Path, damage: str) -> None:
    _, directory, version = saved(tmp_path)
    arrays = version / "arrays.npz"
    if damage == "truncate":
        arrays.write_bytes(arrays.read_bytes()[:100])
    elif damage == "flip":
        raw = bytearray(arrays.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        arrays.write_bytes(bytes(raw))
    elif damage == "meta":
        (version / "meta.json").write_text("{not json")
    elif damage == "pointer":
        (directory / "CURRENT").write_text("../../etc")
    else:
        arrays.unlink()
    with pytest.raises(StoreUnavailableError):
        BM25Index.load(directory)


def test_inconsistent_arrays_raise_store_unavailable(tmp_path: Path) -> None:
    # A well-formed file whose contents disagree (term id out of range) must not load.
    _, directory, version = saved(tmp_path)
    with np.load(version / "arrays.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["indices"][0] = 10_000
    np.savez(version / "arrays.npz", **arrays)
    meta = json.loads((version / "meta.json").read_text())
    meta["arrays_sha256"] = bm25_storage.sha256_of(version / "arrays.npz")
    (version / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StoreUnavailableError, match="inconsistent"):
        BM25Index.load(directory)


def test_load_refuses_other_tokenizer(tmp_path: Path) -> None:
    _, directory, _ = saved(tmp_path)
    with pytest.raises(StoreUnavailableError, match="tokenizer"):
        BM25Index.load(directory, tokenizer=Tokenizer(stem=False))


def test_failed_save_keeps_previous_version(tmp_path: Path, monkeypatch) -> None:
    index, directory, _ = saved(tmp_path)
    expected = index.search("falcon", EVERYONE, NO_FILTERS, 10)
    index.add([make_chunk("new", "falcon falcon falcon")])

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bm25_storage.os, "replace", fail)
    with pytest.raises(StoreUnavailableError):
        index.save(directory)
    monkeypatch.undo()
    assert BM25Index.load(directory).search("falcon", EVERYONE, NO_FILTERS, 10) == expected
    index.save(directory)  # the next save cleans up and succeeds
    assert len(BM25Index.load(directory)) == len(CORPUS) + 1
    assert len([p for p in directory.iterdir() if p.name.startswith("v-")]) == 1


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import citewell.retrieval.lexical.bm25 as m
import citewell.retrieval.lexical.storage as storage
from tests.retrieval.contracts.lexical_index_contract import CORPUS, make_chunk
directory, point = Path(sys.argv[1]), sys.argv[2]
index = m.BM25Index()
index.add(list(CORPUS))
index.save(directory)
index.add([make_chunk(f"n{i}", "falcon " * 50) for i in range(2000)])

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "write":
    storage.os.fsync = die  # killed right after the arrays are written, before they are synced
elif point == "swap":
    storage.swap_pointer = die  # killed after the new version directory is complete
index.save(directory)
"""


@pytest.mark.parametrize("point", ["write", "swap"])
def test_kill_during_save_keeps_previous_version(tmp_path: Path, point: str) -> None:
    directory = tmp_path / "lexical"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(directory), point],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert any(p.name.startswith((".tmp-", "v-")) for p in directory.iterdir())
    reloaded = BM25Index.load(directory)
    assert len(reloaded) == len(CORPUS)
    reference = BM25Index()
    reference.add(list(CORPUS))
    assert reloaded.search("falcon", PUBLIC, NO_FILTERS, 10) == reference.search(
        "falcon", PUBLIC, NO_FILTERS, 10
    )
    reloaded.save(directory)  # leftovers of the killed save are removed
    assert sorted(p.name.startswith("v-") for p in directory.iterdir()) == [False, True]


def test_filters_do_not_change_statistics() -> None:
    index = BM25Index()
    index.add(list(CORPUS))
    everything = dict(index.search("falcon river", EVERYONE, NO_FILTERS, 10))
    only_a = index.search("falcon river", EVERYONE, SearchFilters(doc_ids=frozenset({"doc-a"})), 10)
    assert only_a == [("a", everything["a"])]


def test_load_retries_when_a_save_replaces_the_version(tmp_path: Path, monkeypatch) -> None:
    index, directory, _ = saved(tmp_path)
    real_read = bm25_storage.read_version
    raced: list[Path] = []

    def racing(path: Path):
        if not raced:
            raced.append(path)
            index.save(directory)  # swaps the pointer and removes `path` under the reader
        return real_read(path)

    monkeypatch.setattr(bm25_storage, "read_version", racing)
    assert len(BM25Index.load(directory)) == len(CORPUS)
    assert raced and not raced[0].exists()


@pytest.mark.parametrize(
    ("indexed", "query"),
    [
        ("The ﬁnancial report of the ﬂeet", "financial fleet"),  # PDF ligatures
        ("The financial report of the fleet", "ﬁnancial"),
        ("\uff21\uff50\uff50\uff4c\uff45 \uff29\uff2e\uff23 quarterly", "apple inc"),  # full-width
        ("Cafe\u0301 menu prices", "café"),  # decomposed accent (macOS file text)
        ("Café menu prices", "Cafe\u0301"),
        ("Form 10-Q for Q\uff13 \uff12\uff10\uff12\uff12", "Q3 2022"),  # full-width digits
    ],
    ids=[
        "ligature-indexed",
        "ligature-queried",
        "full-width",
        "nfd-indexed",
        "nfd-queried",
        "codes",
    ],
)
def test_a_word_is_found_in_any_of_its_unicode_forms(indexed: str, query: str) -> None:
    index = BM25Index()
    others = [make_chunk(f"other-{i}", f"An unrelated note on harbor {i}") for i in range(3)]
    index.add([make_chunk("hit", indexed), *others])
    assert [cid for cid, _ in index.search(query, EVERYONE, NO_FILTERS, 5)] == ["hit"]


@pytest.mark.parametrize(
    ("indexed", "query"),
    [
        ("東京都の会社は売上を報告した", "東京"),  # Japanese: no spaces between words
        ("東京都の会社は売上を報告した", "会社の売上"),
        ("北京大学的研究人员发表了论文", "北京大学"),  # Chinese
        ("iPhone用のケースを販売", "ケース"),  # Katakana after Latin, no space
    ],
    ids=["ja-word", "ja-phrase", "zh", "ja-mixed"],
)
def test_a_word_is_found_in_text_written_without_spaces(indexed: str, query: str) -> None:
    """Chinese and Japanese separate no words: a run of them was one token, found only by a
    query of exactly that whole run. Overlapping character pairs (Lucene's CJK bigrams) match
    any word of two or more characters inside it."""
    index = BM25Index()
    others = [make_chunk(f"other-{i}", f"京都の天気 {i}") for i in range(3)]
    index.add([make_chunk("hit", indexed), *others])
    assert [cid for cid, _ in index.search(query, EVERYONE, NO_FILTERS, 5)][:1] == ["hit"]


def test_an_index_built_before_normalisation_is_read_as_it_was_built(tmp_path: Path) -> None:
    """No outage and no silent mismatch: it loads, searches and refreshes in its own stream."""
    old = BM25Index(tokenizer=Tokenizer().legacy_stream())
    old.add([make_chunk("lig", "The ﬁnancial report"), make_chunk("plain", "A harbor note")])
    old.save(tmp_path / "bm25")
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.tokenizer.name == Tokenizer().legacy_stream().name != Tokenizer().name
    loaded.add([make_chunk("new", "Another ﬁnancial memo")])
    found = {cid for cid, _ in loaded.search("ﬁnancial", EVERYONE, NO_FILTERS, 5)}
    assert found == {"lig", "new"}
    with pytest.raises(StoreUnavailableError, match="tokenizer"):
        BM25Index.load(tmp_path / "bm25", tokenizer=Tokenizer(stem=False))
