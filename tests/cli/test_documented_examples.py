"""examples/README.md runs as written (see test_documented_commands.py): its own file, so this
document's run and the other guides' start on different xdist workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.docs_commands import (
    REPO,
    describe_failure,
    run_document,
    scratch_checkout,
    shared_model_cache,
)


@pytest.mark.slow
def test_examples_readme_runs_as_written(tmp_path: Path) -> None:
    runs = run_document(
        REPO / "examples" / "README.md", scratch_checkout(tmp_path / "c"), shared_model_cache()
    )
    assert all(run.status == 0 for run in runs), describe_failure(runs)
