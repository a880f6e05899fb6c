"""citewell_refresh_<source>: one scheduled incremental refresh DAG per configured source.

discover → plan → process (one mapped task per batch of new/changed documents) → finalize
(deletes, relabels, BM25, publish) → publish the index Asset. XCom carries run-file paths only.
Each task is a few lines over ``ingestion.refresh``; heavy imports happen inside tasks.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from citewell.dags._common import citewell_dag, configured_sources, index_asset, run_on_plan
from citewell.dags._tasks import check_inputs, discover, plan, process, publish
from citewell.ingestion.sources_config import SourceConfig


# Runs when there was nothing to process too (the mapped task is then skipped): deletes and
# relabels still have to be applied.
@task(trigger_rule="none_failed")
def finalize(source_name: str, snapshot_path: str) -> str | None:
    """The version published, or None when nothing changed (``publish`` then skips)."""
    from pathlib import Path

    from citewell.ingestion.refresh import finalize as finalize_source
    from citewell.ingestion.refresh import plan_file, published_version

    report = run_on_plan(finalize_source, source_name, snapshot_path)
    return published_version(plan_file(Path(snapshot_path)), report)


DOC_MD = """
## Incremental refresh of a Citewell index from one source folder

`check_inputs` (folder, labels file, golden sets, source name) → `discover` (snapshot of the
folder) → `plan` (new, changed, deleted, relabeled) → `process` (one mapped task per batch:
parse, chunk and embed into the caches) → `finalize` (one transaction: deletes, relabels, BM25,
publish a new index version) → `publish` (emits the Asset `citewell://index/<index>`, which
triggers `citewell_evaluate_<source>`). Unchanged documents cost nothing; a run with nothing
changed publishes no new version, and its `publish` is skipped (no Asset event).

**A failure** leaves the published version serving as it was (every write is one transaction);
the next run starts again from it. `check_inputs` failing means the sources config, labels file
or golden set is wrong (its message names the file and line); fix it and trigger again.
"""


def build_refresh_dag(source: SourceConfig) -> Any:
    @citewell_dag(
        "refresh",
        source,
        f"Refresh index {source.index} from source {source.name}",
        schedule=source.schedule,
        doc_md=DOC_MD,
    )
    def refresh() -> None:
        # TaskFlow calls return XComArgs, resolved at run time; typed Any for mypy.
        checked: Any = check_inputs(source.name)
        snapshot: Any = discover(source.name)
        checked >> snapshot
        planned: Any = plan(source.name, snapshot)
        processed = process.partial(source_name=source.name).expand(batch_path=planned)
        version: Any = finalize(source.name, snapshot)
        processed >> version  # after every batch (and so after the plan)
        publish.override(outlets=[index_asset(source.index)])(source.index, version)

    return refresh()


for _source in configured_sources():
    globals()[f"citewell_refresh_{_source.name}"] = build_refresh_dag(_source)
