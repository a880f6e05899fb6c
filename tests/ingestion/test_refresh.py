from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citewell.core.errors import ConfigurationError
from citewell.ingestion.refresh import (
    discover,
    finalize,
    plan,
    process_batch,
    run_dir,
)
from citewell.ingestion.sources_config import SourceConfig

LABELS = "default: {classification: internal, groups: [everyone]}\n"


def _folder(root: Path) -> Path:
    """A source folder of three documents, labelled internal for everyone."""
    root.mkdir(parents=True)
    (root / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (root / "a.md").write_text("# Alpha\n\nThe alpha pump needs oil monthly.\n", encoding="utf-8")
    (root / "b.md").write_text("# Beta\n\nBeta valves are replaced yearly.\n", encoding="utf-8")
    (root / "c.txt").write_text("Gamma sensors report every minute.\n", encoding="utf-8")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return _folder(tmp_path / "docs")


def _source(folder: Path, **extra: Any) -> SourceConfig:
    return SourceConfig(name="s", path=folder, index="idx", batch_size=2, **extra)


def test_run_dir_is_safe_for_airflow_run_ids(make_settings: Any, folder: Path) -> None:
    settings = make_settings()
    path = run_dir(settings, _source(folder), "manual__2024-01-01T00:00:00+00:00")
    assert path.parent == settings.data_dir / "runs" / "idx" / "s"
    assert path.name == "manual__2024-01-01T00_00_00_00_00"


def test_discover_refuses_a_missing_folder(make_settings: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        discover(make_settings(), _source(tmp_path / "absent"), "r1")


@pytest.mark.slow
def test_plan_process_finalize_then_plan_changes(
    make_settings: Any, folder: Path, embedder: Any, tmp_path: Path
) -> None:
    from citewell.retrieval.embedding_cache import CachingEmbedder, EmbeddingCache

    settings = make_settings()
    source = _source(folder)
    # Its own embedding cache: other tests embed the same folder's texts (the rebuild smoke
    # test), and "the batches computed the embeddings" must not depend on test order.
    embedder = CachingEmbedder(embedder.inner, EmbeddingCache(tmp_path / "embeddings.sqlite"))

    snapshot = discover(settings, source, "r1")
    assert [e.relative_path for e in snapshot.entries] == ["a.md", "b.md", "c.txt"]
    summary = plan(settings, source, Path(snapshot.path))
    assert summary.new == ("a.md", "b.md", "c.txt") and summary.base_version is None
    assert len(summary.batch_paths) == 2
    batch = json.loads(Path(summary.batch_paths[1]).read_text(encoding="utf-8"))
    assert batch == {"relative_paths": ["c.txt"]}
    computed = sum(process_batch(settings, source, Path(p), embedder) for p in summary.batch_paths)
    assert computed > 0
    report = finalize(settings, source, Path(summary.path), embedder)
    assert set(report.added) == {"a.md", "b.md", "c.txt"}
    assert report.embeddings_computed == 0  # everything was prepared by the batches
    again = finalize(settings, source, Path(summary.path), embedder)  # a retried finalize
    assert set(again.unchanged) == {"a.md", "b.md", "c.txt"} and again.chunks_written == 0

    (folder / "a.md").write_text("# Alpha\n\nThe alpha pump needs oil weekly.\n", "utf-8")
    (folder / "b.md").unlink()
    (folder / "d.md").write_text("# Delta\n\nDelta doors lock at night.\n", encoding="utf-8")
    (folder / "c.txt.labels.yaml").write_text("groups: [ops]\n", encoding="utf-8")
    second = plan(settings, source, Path(discover(settings, source, "r2").path))
    assert second.base_version == again.index_version
    assert (second.new, second.changed, second.deleted, second.relabeled) == (
        ("d.md",),
        ("a.md",),
        ("b.md",),
        ("c.txt",),
    )
    assert second.unchanged == 0 and len(second.batch_paths) == 1


@pytest.mark.slow
def test_a_retried_finalize_keeps_the_report_of_what_the_run_published(
    make_settings: Any, folder: Path, embedder: Any
) -> None:
    # Airflow retries a finalize that published and then failed (a lost worker, a timeout):
    # the retry finds nothing to change, and its report replaced the one naming the version
    # and documents the run published.
    settings = make_settings()
    source = _source(folder)
    summary = plan(settings, source, Path(discover(settings, source, "r1").path))
    first = finalize(settings, source, Path(summary.path), embedder)
    retried = finalize(settings, source, Path(summary.path), embedder)
    assert set(first.added) == {"a.md", "b.md", "c.txt"} and not retried.added

    directory = Path(summary.path).parent
    kept = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    assert sorted(kept["added"]) == ["a.md", "b.md", "c.txt"]
    assert kept["index_version"] == first.index_version
    beside = json.loads((directory / "report-2.json").read_text(encoding="utf-8"))
    assert beside["added"] == [] and len(beside["unchanged"]) == 3


def test_a_folder_emptied_is_refused_unless_the_source_allows_empty(
    make_settings: Any, folder: Path, embedder: Any
) -> None:
    """An unmounted share or a folder emptied by mistake must not publish a version without
    every document of the source (S3 sources refused this; folders did not)."""
    from citewell.core.errors import InputRejectedError
    from citewell.retrieval.index import IndexLayout

    settings = make_settings()
    source = _source(folder)

    def refresh(run: str) -> Any:
        summary = plan(settings, source, Path(discover(settings, source, run).path))
        return finalize(settings, source, Path(summary.path), embedder)

    first = refresh("r1")
    for document in ("a.md", "b.md", "c.txt"):
        (folder / document).unlink()
    with pytest.raises(InputRejectedError, match="no document"):
        refresh("r2")
    assert IndexLayout(settings, source.index).current_version() == first.index_version

    allowed = _source(folder, allow_empty=True)
    summary = plan(settings, allowed, Path(discover(settings, allowed, "r3").path))
    emptied = finalize(settings, allowed, Path(summary.path), embedder)
    assert set(emptied.deleted) == {"a.md", "b.md", "c.txt"}


def test_sources_sharing_an_index_keep_their_run_files_apart(
    make_settings: Any, folder: Path, tmp_path: Path
) -> None:
    """Two sources of one index on one schedule run with the same Airflow run id
    ('scheduled__<time>'): each DAG's plan must read its own snapshot, and one plan must not
    delete the batch files the other's process tasks are reading."""
    settings = make_settings()
    other = tmp_path / "other"
    other.mkdir()
    (other / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    (other / "z.md").write_text("# Zeta\n\nZeta pipes are flushed daily.\n", encoding="utf-8")
    first = SourceConfig(name="s", path=folder, index="idx", batch_size=2)
    second = SourceConfig(name="t", path=other, index="idx", batch_size=2)
    run = "scheduled__2025-01-01T10:00:00+00:00"

    first_snapshot = discover(settings, first, run)
    discover(settings, second, run)
    first_plan = plan(settings, first, Path(first_snapshot.path))
    plan(settings, second, Path(discover(settings, second, run).path))

    assert first_plan.new == ("a.md", "b.md", "c.txt")
    for batch in first_plan.batch_paths:  # still there for the first source's process tasks
        assert Path(batch).is_file()


@pytest.mark.slow
def test_a_source_moved_to_another_index_mid_run_is_refused(
    make_settings: Any, folder: Path, embedder: Any
) -> None:
    """The sources config is re-read by every task: a source whose index was edited after
    the run planned must not be finalized into the other index against the old plan."""
    from citewell.retrieval.index import IndexLayout

    settings = make_settings()
    source = _source(folder)
    snapshot = discover(settings, source, "r1")
    summary = plan(settings, source, Path(snapshot.path))
    moved = source.model_copy(update={"index": "elsewhere"})
    with pytest.raises(ConfigurationError, match="sources config changed"):
        finalize(settings, moved, Path(summary.path), embedder=embedder)
    assert IndexLayout(settings, "elsewhere").current_version() is None


def test_run_folders_older_than_the_retention_are_removed_once_a_run_completes(
    make_settings: Any, folder: Path, embedder: Any
) -> None:
    # Every run kept its snapshot, plan and batches for ever: an hourly refresh of a large
    # source filled the index's disk until the disk guard refused refreshes.
    import os
    import time

    settings = make_settings(keep_runs_days=7)
    source = _source(folder)
    for run_id, age_days in (("r-old", 20), ("r-recent", 2)):
        summary = plan(settings, source, Path(discover(settings, source, run_id).path))
        finalize(settings, source, Path(summary.path), embedder)
        stamp = time.time() - age_days * 86_400
        for entry in Path(summary.path).parent.rglob("*"):
            os.utime(entry, (stamp, stamp))
    summary = plan(settings, source, Path(discover(settings, source, "r-now").path))
    finalize(settings, source, Path(summary.path), embedder)
    runs = sorted(p.name for p in Path(summary.path).parent.parent.iterdir())
    assert runs == ["r-now", "r-recent"]
