"""citewell_evaluate_<source>: quality gate run whenever the source's index Asset updates.

Scores the source's golden questions against the published index and fails (alerting through
the failure hook) when a metric is below its configured floor.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from citewell.dags._common import (
    citewell_dag,
    configured_sources,
    guarded,
    index_asset,
    load_settings,
    load_source,
)
from citewell.dags._tasks import check_inputs
from citewell.ingestion.sources_config import SourceConfig


@task
def evaluate(source_name: str) -> dict[str, float]:
    from citewell.evaluation.quality_gates import evaluate as evaluate_source

    outcome = guarded(lambda: evaluate_source(load_settings(), load_source(source_name)))
    return outcome.metrics


DOC_MD = """
## Quality gate on a Citewell index

Runs whenever the index Asset `citewell://index/<index>` updates (after each refresh or rebuild):
`check_inputs` (golden sets and folder) → `evaluate`: asks the source's golden questions through
the search service, as a principal that sees every labelled document, and scores `hit_rate` and
`mrr` at k. Questions without an expected document (unanswerable ones) are skipped.

**A failure** of `evaluate` means a metric fell below its floor (the message lists each, e.g.
`hit_rate=0.40 < 0.80`); the index keeps serving. Compare with the previous run, look at what the
last refresh changed, and roll back with `citewell index rollback` if the new version is worse.
"""


def build_evaluate_dag(source: SourceConfig) -> Any:
    @citewell_dag(
        "evaluate",
        source,
        f"Quality gate for index {source.index} (source {source.name})",
        schedule=[index_asset(source.index)],
        doc_md=DOC_MD,
    )
    def evaluate_dag() -> None:
        checked: Any = check_inputs(source.name)
        scored: Any = evaluate(source.name)
        checked >> scored

    return evaluate_dag()


for _source in configured_sources():
    if _source.evaluation is not None:
        globals()[f"citewell_evaluate_{_source.name}"] = build_evaluate_dag(_source)
