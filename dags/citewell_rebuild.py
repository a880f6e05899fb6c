"""citewell_rebuild_<source>: manual full rebuild of a source's index into a new version.

discover → plan (everything is new) → process (mapped batches) → rebuild (build from scratch,
validate counts against the plan and a golden-set smoke test, then switch CURRENT atomically)
→ publish the index Asset. A failed validation publishes nothing: the serving version stays,
and the previous version is always kept for ``citewell index rollback``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from citewell.dags._common import citewell_dag, configured_sources, index_asset, run_on_plan
from citewell.dags._tasks import check_inputs, discover, plan, process, publish
from citewell.ingestion.sources_config import SourceConfig


@task
def rebuild(source_name: str, snapshot_path: str) -> str | None:
    from citewell.evaluation.smoke_test import smoke_tested_rebuild

    return run_on_plan(smoke_tested_rebuild, source_name, snapshot_path).version


DOC_MD = """
## Validated full rebuild of a Citewell index (manual)

`check_inputs` (folder, labels file, golden sets) → `discover` → `plan` (everything is new) →
`process` (mapped batches) → `rebuild` (build from scratch into a new version, check documents
and chunks against the plan, run the golden-set smoke test, and only then switch `CURRENT`) →
`publish` (emits the index Asset). The index then holds this source only.

**A failure** publishes nothing: the serving version stays, and the previous version is always
kept for `citewell index rollback`. A failed `rebuild` task means validation refused the new
version (its message says which check: counts or the smoke test's hit rate).
"""


def build_rebuild_dag(source: SourceConfig) -> Any:
    @citewell_dag(
        "rebuild",
        source,
        f"Rebuild index {source.index} from source {source.name} and validate it",
        schedule=None,
        doc_md=DOC_MD,
    )
    def rebuild_dag() -> None:
        # TaskFlow calls return XComArgs, resolved at run time; typed Any for mypy.
        checked: Any = check_inputs(source.name, fresh=True)
        snapshot: Any = discover(source.name)
        checked >> snapshot
        planned: Any = plan(source.name, snapshot, fresh=True)
        processed = process.partial(source_name=source.name).expand(batch_path=planned)
        version: Any = rebuild.override(trigger_rule="none_failed")(source.name, snapshot)
        processed >> version  # after every batch (and so after the plan)
        publish.override(outlets=[index_asset(source.index)])(source.index, version)

    return rebuild_dag()


for _source in configured_sources():
    globals()[f"citewell_rebuild_{_source.name}"] = build_rebuild_dag(_source)
