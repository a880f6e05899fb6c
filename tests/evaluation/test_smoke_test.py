"""The rebuild smoke test (golden questions asked of the staged version) and the golden-file
input check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citewell.core.errors import ConfigurationError, GoldenSetError
from citewell.core.settings import Settings
from citewell.evaluation.smoke_test import check_golden_sets, smoke_tested_rebuild
from citewell.ingestion.refresh import RebuildValidationError, discover, plan, rebuild
from citewell.ingestion.sources_config import SourceConfig
from citewell.retrieval.index import IndexLayout
from tests.ingestion.test_refresh import _folder, _source


def _golden(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _planned(
    settings: Settings, root: Path, rows: list[dict[str, Any]], **rebuild: Any
) -> tuple[SourceConfig, Path]:
    """A folder source whose rebuild is validated on ``rows``, and its plan (all new)."""
    golden = _golden(root / "golden.jsonl", rows)
    source = _source(_folder(root / "docs"), rebuild={"golden": golden, **rebuild})
    planned = plan(settings, source, Path(discover(settings, source, "r1").path), fresh=True)
    return source, Path(planned.path)


@pytest.mark.slow
def test_rebuild_validates_before_publishing(
    make_settings: Any, tmp_path: Path, embedder: Any
) -> None:
    settings = make_settings()
    rows: list[dict[str, Any]] = [
        {"question": "how often do beta valves get replaced", "expected": "b.md"},
        # Globs match the manifest's relative paths too.
        {"question": "how often does the alpha pump need oil", "expected": ["old/*.md", "a.*"]},
    ]
    source, first = _planned(settings, tmp_path, rows, k=3, min_hit_rate=1.0)
    layout = IndexLayout(settings, "idx")
    built = smoke_tested_rebuild(settings, source, first, embedder=embedder)
    assert built.version == layout.current_version() and built.previous_version is None
    assert (built.documents, built.smoke_hits, built.smoke_questions) == (3, 2, 2)

    # The folder gains a document after planning: counts no longer match the plan.
    folder = source.folder
    (folder / "late.md").write_text("# Late\n\nArrived after the plan.\n", encoding="utf-8")
    second = plan(settings, source, Path(discover(settings, source, "r2").path), fresh=True)
    (folder / "later.md").write_text("# Later\n\nArrived even later.\n", encoding="utf-8")
    with pytest.raises(RebuildValidationError, match="document count mismatch"):
        smoke_tested_rebuild(settings, source, Path(second.path), embedder=embedder)
    assert layout.current_version() == built.version
    assert layout.versions() == [built.version]


@pytest.mark.slow
def test_a_version_failing_the_smoke_test_is_not_published(
    make_settings: Any, tmp_path: Path, embedder: Any
) -> None:
    settings = make_settings()
    rows = [{"question": "gamma sensors", "expected": "zzz.md"}]
    source, planned = _planned(settings, tmp_path, rows, k=3, min_hit_rate=1.0)
    with pytest.raises(RebuildValidationError, match=r"retrieval smoke test: 0 of 1 golden"):
        smoke_tested_rebuild(settings, source, planned, embedder=embedder)
    assert IndexLayout(settings, "idx").current_version() is None


def test_a_rebuild_without_the_smoke_test_its_source_names_is_refused(
    make_settings: Any, tmp_path: Path
) -> None:
    """Fail closed: an entry point that forgets to pass the check publishes nothing."""
    settings = make_settings()
    rows = [{"question": "alpha pump", "expected": "a.md"}]
    source, planned = _planned(settings, tmp_path, rows)
    with pytest.raises(ConfigurationError, match="no smoke test was given"):
        rebuild(settings, source, planned)
    assert IndexLayout(settings, "idx").current_version() is None


def test_a_bad_golden_file_is_reported_with_file_and_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "docs")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "ok", "expected": "a.md"}\n{"question": ""}\n', "utf-8")
    with pytest.raises(GoldenSetError, match=r"broken\.jsonl.*2"):
        check_golden_sets(_source(folder, rebuild={"golden": broken}))
    # The evaluation's golden set is checked too.
    with pytest.raises(GoldenSetError, match=r"broken\.jsonl"):
        check_golden_sets(_source(folder, evaluation={"golden": broken}))
    check_golden_sets(_source(folder))  # none named: nothing to check
