from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from citewell.core.errors import InputRejectedError, StoreUnavailableError
from citewell.retrieval.stores.edge import EdgeVectorStore
from citewell.retrieval.stores.shared import FilteredSearchPlanner
from tests.retrieval.contracts.vector_store_contract import (
    DIM,
    NO_FILTERS,
    VectorStoreContract,
    make_chunk,
    scope,
    unit_vectors,
)


class TestEdgeContract(VectorStoreContract):
    persistent = True

    def make_store(self, tmp_path):
        return EdgeVectorStore(tmp_path / "shard", DIM)


def test_constructor_touches_nothing(tmp_path):
    EdgeVectorStore(tmp_path / "shard", DIM)
    assert not (tmp_path / "shard").exists()


def test_second_open_in_same_process_is_unavailable(tmp_path):
    first = EdgeVectorStore(tmp_path / "shard", DIM)
    first.upsert([make_chunk("doc-a", 0)], unit_vectors(1, seed=0))
    second = EdgeVectorStore(tmp_path / "shard", DIM)
    with pytest.raises(StoreUnavailableError, match="WouldBlock"):
        second.count()
    first.close()
    assert second.count() == 1  # after close the path can be opened again
    second.close()


def test_dimension_mismatch_is_unavailable(tmp_path):
    store = EdgeVectorStore(tmp_path / "shard", DIM)
    store.upsert([make_chunk("doc-a", 0)], unit_vectors(1, seed=0))
    store.close()
    with pytest.raises(StoreUnavailableError):
        EdgeVectorStore(tmp_path / "shard", DIM * 2).count()


def test_query_of_wrong_dimension_is_rejected(tmp_path):
    store = EdgeVectorStore(tmp_path / "shard", DIM)
    with pytest.raises(InputRejectedError):
        store.search(np.zeros(DIM + 1, dtype=np.float32), scope(), NO_FILTERS, 5)
    store.close()


def test_non_uuid_chunk_id_is_rejected(tmp_path):
    store = EdgeVectorStore(tmp_path / "shard", DIM)
    bad = make_chunk("doc-a", 0).model_copy(update={"chunk_id": "doc-a#0"})
    with pytest.raises(InputRejectedError):
        store.upsert([bad], unit_vectors(1, seed=0))
    store.close()


@pytest.mark.slow
def test_copy_of_shard_held_by_another_process_opens(tmp_path):
    """Fact the index publisher relies on: copytree of a shard that another process has loaded
    (reading only) is a complete, openable, writable shard; the original path stays locked."""
    chunks = [make_chunk("doc-a", i) for i in range(20)]
    vectors = unit_vectors(20, seed=7)
    store = EdgeVectorStore(tmp_path / "shard", DIM)
    store.upsert(chunks, vectors)
    store.flush()
    store.close()

    holder = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from citewell.retrieval.stores.edge import EdgeVectorStore
        s = EdgeVectorStore(Path({str(tmp_path / "shard")!r}), {DIM})
        print(s.count(), flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "20"
        with pytest.raises(StoreUnavailableError, match="WouldBlock"):
            EdgeVectorStore(tmp_path / "shard", DIM).count()
        shutil.copytree(tmp_path / "shard", tmp_path / "copy")
        copy = EdgeVectorStore(tmp_path / "copy", DIM)
        assert copy.count() == 20
        assert copy.get_chunks([c.chunk_id for c in chunks]) == chunks
        assert copy.search(vectors[4], scope(), NO_FILTERS, 1)[0][0] == chunks[4]
        copy.upsert([make_chunk("doc-b", 0)], unit_vectors(1, seed=8))
        assert copy.count() == 21
        copy.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


GRAPH_POINTS, GRAPH_DIM, LIMIT = 5000, 32, 50


def _graph_without_payload_links(tmp_path, *, exact_search_max_points: int):
    """5,000 points in 25 groups and 4 ranks in a store whose HNSW graph was built before the
    payload indexes (as in an old shard), so it has no per-group links: the situation
    MEASURED.md describes. The engine's own full-scan threshold is 1 kB, so it never
    brute-forces a filter by itself. Returns the store, its chunks and their vectors."""
    import qdrant_edge as qe

    rng = np.random.default_rng(0)
    chunks = [
        make_chunk(f"doc-{i}", 0, rank=int(rng.integers(0, 4)), groups=(f"g{rng.integers(25)}",))
        for i in range(GRAPH_POINTS)
    ]
    vectors = unit_vectors(GRAPH_POINTS, seed=3, dim=GRAPH_DIM)
    store = EdgeVectorStore(
        tmp_path / "shard",
        vectors.shape[1],
        full_scan_threshold_kb=1,
        indexing_threshold_kb=1,
        exact_search_max_points=exact_search_max_points,
    )
    store.upsert(chunks, vectors)
    shard = store._open()
    for field in ("groups", "classification_rank"):
        shard.update(qe.UpdateOperation.delete_field_index(field))
    store.optimize()
    shard.update(qe.UpdateOperation.create_field_index("groups", qe.PayloadSchemaType.Keyword))
    shard.update(
        qe.UpdateOperation.create_field_index("classification_rank", qe.PayloadSchemaType.Integer)
    )
    return store, chunks, vectors


def _queries_and_true_tops(chunks, vectors, access):
    """Ten query vectors, each with the chunk ids of its exact top ``LIMIT`` among the chunks
    ``access`` may see."""
    visible = np.array([access.allows_chunk(c) for c in chunks])
    queries = unit_vectors(10, seed=11, dim=GRAPH_DIM)
    wanted = []
    for query in queries:
        top = np.argsort(-np.where(visible, vectors @ query, -np.inf))[:LIMIT]
        wanted.append([chunks[i].chunk_id for i in top])
    return queries, wanted, int(visible.sum())


@pytest.mark.slow
def test_restrictive_filter_still_fills_limit(tmp_path):
    """HNSW whose graph lacks payload-aware links (built before the payload indexes, as in an
    old shard) returns a handful of points for a ~4% filter although ~190 match. With planning
    off, the store's count-and-exact fallback must still return the true top ``LIMIT`` for every
    short answer; with the default plan the filter is searched exactly in the first place."""
    import qdrant_edge as qe

    from citewell.retrieval.stores.filters import edge_filter

    store, chunks, vectors = _graph_without_payload_links(tmp_path, exact_search_max_points=0)
    shard = store._open()
    access = scope(max_rank=3, groups=("g1",))
    queries, wanted, visible = _queries_and_true_tops(chunks, vectors, access)
    assert 150 < visible < 250

    for query, best in zip(queries, wanted, strict=True):
        raw = shard.query(
            qe.QueryRequest(
                limit=LIMIT,
                query=qe.Query.Nearest(query.tolist(), using="dense"),
                filter=edge_filter(access, NO_FILTERS),
            )
        )
        if len(raw) < LIMIT:  # the fallback's case (a full answer is the planner's, below)
            got = store.search(query, access, NO_FILTERS, LIMIT)
            assert [c.chunk_id for c, _ in got] == best
    # Whether the engine comes back short varies between graph builds (it did in most runs,
    # not in all); the fallback's decision itself is covered deterministically by spies in
    # test_search_plan.py, so a build without short answers is no failure here.

    store._planner = FilteredSearchPlanner()  # the default plan
    for query, best in zip(queries, wanted, strict=True):
        got = store.search(query, access, NO_FILTERS, LIMIT)
        assert [c.chunk_id for c, _ in got] == best
    store.close()


@pytest.mark.slow
def test_full_but_approximate_hnsw_answer_is_replaced_by_exact_top(tmp_path):
    """On a graph without links among a filter's points, HNSW for a ~12% filter returns full
    lists (50 of 50) that miss a quarter of the true top 50, so the short-answer check cannot
    notice. A filter matching at most ``exact_search_max_points`` points must be searched
    exactly: the store returns the true filtered top ``LIMIT``, in order."""
    store, chunks, vectors = _graph_without_payload_links(tmp_path, exact_search_max_points=1000)
    access = scope(max_rank=3, groups=("g0", "g1", "g2"))
    queries, wanted, visible = _queries_and_true_tops(chunks, vectors, access)
    assert 500 < visible < 1000  # under the threshold, far above LIMIT

    planned = store._planner
    # Precondition: without planning the same store answers full but approximate lists.
    store._planner = FilteredSearchPlanner(0)
    full_but_wrong = 0
    for query, best in zip(queries, wanted, strict=True):
        got = [c.chunk_id for c, _ in store.search(query, access, NO_FILTERS, LIMIT)]
        full_but_wrong += len(got) == LIMIT and got != best
    if full_but_wrong == 0:
        # Seen once in a fresh clone: that HNSW build answered all ten queries exactly (the graph
        # is built by threads, not deterministically), so the premise does not hold for it.
        pytest.skip("this HNSW build answered the filter exactly; nothing to replace")

    store._planner = planned
    for query, best in zip(queries, wanted, strict=True):
        got = store.search(query, access, NO_FILTERS, LIMIT)
        assert [c.chunk_id for c, _ in got] == best
    store.close()


def test_ties_at_the_limit_do_not_depend_on_invisible_points(tmp_path):
    # The same boilerplate in several public documents embeds to one vector. Which of those
    # chunks made the limit depended on the engine's internal order, which every point in the
    # store moves, restricted ones too: a public caller's results changed when a restricted
    # document was added. Ties are cut by chunk id instead.
    same = unit_vectors(1, seed=5)
    public = [make_chunk(f"pub-{i}", 0) for i in range(6)]
    hidden = [make_chunk(f"sec-{i}", 0, rank=3, groups=("board",)) for i in range(40)]
    layouts = {
        "alone": public,
        "hidden first": [*hidden, *public],
        "interleaved": [*hidden[:20], *public, *hidden[20:]],
        "hidden after": [*public, *hidden],
    }
    found = {}
    for name, chunks in layouts.items():
        store = EdgeVectorStore(tmp_path / name, DIM)
        try:
            store.upsert(chunks, np.repeat(same, len(chunks), axis=0))
            hits = store.search(same[0], scope(max_rank=0), NO_FILTERS, 3)
            found[name] = [c.chunk_id for c, _ in hits]
        finally:
            store.close()
    expected = sorted(c.chunk_id for c in public)[:3]
    assert found == dict.fromkeys(layouts, expected)
