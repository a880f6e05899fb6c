"""One decision for what a refresh does with a document (pipeline and Airflow planner alike)."""

from datetime import UTC, datetime

import pytest

from citewell.retrieval.manifest import DocumentEntry, classify_change

PRIOR = DocumentEntry(
    doc_id="d",
    source="s",
    source_uri="file:///s/a.md",
    relative_path="a.md",
    title="A",
    doc_type="md",
    content_hash="h1",
    label_fingerprint="l1",
    classification="internal",
    classification_rank=1,
    groups=("everyone",),
    labelled=True,
    chunk_ids=("c",),
    modified_at=None,
    refreshed_at=datetime(2026, 1, 1, tzinfo=UTC),
    chunk_recipe="r1",
)


@pytest.mark.parametrize(
    ("prior", "content", "recipe", "label", "expected"),
    [
        (None, "h1", "r1", "l1", "new"),
        (PRIOR, "h2", "r1", "l1", "changed"),
        (PRIOR, "h1", "r2", "l1", "changed"),  # another chunking recipe re-chunks
        (PRIOR, "h2", "r1", "l2", "changed"),  # new content carries its new label anyway
        (PRIOR, "h1", "r1", "l2", "relabeled"),  # payload only, no re-embedding
        (PRIOR, "h1", "r1", "l1", "unchanged"),
    ],
)
def test_classify_change(prior, content, recipe, label, expected) -> None:
    assert classify_change(prior, content, recipe, label) == expected
