"""docs/data-engineers.md runs as written (see test_documented_commands.py): its own file, so
this guide's run (Airflow commands, minutes) and the README's start on different xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.docs_commands import (
    REPO,
    CommandRun,
    describe_failure,
    run_document,
    scratch_checkout,
    shared_model_cache,
)


def _find(runs: list[CommandRun], prefix: str) -> CommandRun:
    return next(run for run in runs if run.command.startswith(prefix))


@pytest.mark.slow
def test_data_engineers_guide_runs_as_written(tmp_path: Path) -> None:
    runs = run_document(
        REPO / "docs" / "data-engineers.md",
        scratch_checkout(tmp_path / "checkout"),
        shared_model_cache(),
    )
    assert all(run.status == 0 for run in runs), describe_failure(runs)
    listed = _find(runs, "airflow dags list")
    for dag_id in ("citewell_refresh_kb", "citewell_rebuild_kb", "citewell_evaluate_kb"):
        assert dag_id in listed.stdout, listed.stdout
    versions = _find(runs, "citewell index versions --index demo")
    assert "v000002" in versions.stdout, versions.stdout
