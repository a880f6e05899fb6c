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
from citewell.ingestion.sources_config import SourceConfig


@task
def evaluate(source_name: str) -> dict[str, float]:
    from citewell.evaluation.gates import evaluate as evaluate_source

    outcome = guarded(lambda: evaluate_source(load_settings(), load_source(source_name)))
    return outcome.metrics


def build_evaluate_dag(source: SourceConfig) -> Any:
    @citewell_dag(
        "evaluate",
        source,
        f"Quality gate for index {source.index} (source {source.name})",
        schedule=[index_asset(source.index)],
    )
    def evaluate_dag() -> None:
        evaluate(source.name)

    return evaluate_dag()


for _source in configured_sources():
    if _source.evaluation is not None:
        globals()[f"citewell_evaluate_{_source.name}"] = build_evaluate_dag(_source)
