"""What the Citewell DAGs share: the sources config, settings, retries and failure alerts.

Only the sources config is read while Airflow parses DAG files (it decides which DAGs exist,
the documented pattern for dynamic DAGs); settings, models and stores are built inside tasks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import Asset, dag

from citewell.core.errors import CitewellError, ConfigurationError, EvaluationError
from citewell.core.logging import event_sink, log_event
from citewell.ingestion.sources_config import SourceConfig, SourcesConfig, load_sources

if TYPE_CHECKING:
    from citewell.core.settings import Settings
    from citewell.ingestion.sources import S3Access

logger = logging.getLogger(__name__)

SOURCES_FILE_ENV = "CITEWELL_SOURCES_FILE"
RETRIES_ENV = "CITEWELL_AIRFLOW_RETRIES"
ALERT_WEBHOOK_ENV = "CITEWELL_ALERT_WEBHOOK"
SETTINGS_VARIABLE = "citewell_settings"  # JSON object of Settings overrides
ALERT_WEBHOOK_VARIABLE = "citewell_alert_webhook"
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)

T = TypeVar("T")


def sources_file() -> Path | None:
    value = os.environ.get(SOURCES_FILE_ENV, "").strip()
    return Path(value) if value else None


def configured_sources() -> tuple[SourceConfig, ...]:
    """Sources to generate DAGs for: none (and a logged warning) when the file is unset; a bad
    file raises, so each Citewell DAG file shows the import error naming its file and line."""
    file = sources_file()
    if file is None:
        log_event(logger, logging.WARNING, "dags.no_sources_file", env=SOURCES_FILE_ENV)
        return ()
    return load_sources(file).sources


def load_source(name: str) -> SourceConfig:
    """The named source, re-read in the worker (the file may have changed since parsing)."""
    file = sources_file()
    if file is None:
        raise ConfigurationError(f"{SOURCES_FILE_ENV} is not set on the worker")
    config: SourcesConfig = load_sources(file)
    return config.get(name)


def index_asset(index: str) -> Asset:
    """The Asset a successful refresh or rebuild of ``index`` emits."""
    return Asset(f"citewell://index/{index}", group="citewell")


def load_settings() -> Settings:
    """Settings from ``CITEWELL_*`` environment variables, overridden by the Airflow Variable
    ``citewell_settings`` (a JSON object) when it exists."""
    from airflow.sdk import Variable

    from citewell.core.settings import Settings, apply_process_environment

    overrides = _variable_json(Variable)
    try:
        settings = Settings(**overrides)
        apply_process_environment(settings)
        return settings
    except ValueError as exc:
        raise ConfigurationError(f"invalid Citewell settings: {exc}") from exc


def _variable_json(variable: Any) -> dict[str, Any]:
    raw = variable.get(SETTINGS_VARIABLE, default=None)
    if raw is None:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"Variable {SETTINGS_VARIABLE} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise ConfigurationError(f"Variable {SETTINGS_VARIABLE} must be a JSON object")
    from citewell.core.settings import Settings

    # Settings ignores unknown keys, and pydantic-settings reads keys such as _env_prefix or
    # _env_file as instructions on where settings come from: a typo must not silently run
    # with the defaults, nor a key change where every CITEWELL_* variable is read from.
    unknown = sorted(key for key in value if str(key).lower() not in Settings.model_fields)
    if unknown:
        raise ConfigurationError(
            f"Variable {SETTINGS_VARIABLE} has unknown settings: {', '.join(unknown)} "
            "(keys are Settings field names, e.g. data_dir, index)"
        )
    return value


# structlog's own keys: a Citewell field of the same name is renamed rather than lost.
_RESERVED_LOG_KEYS = frozenset({"event", "level", "logger", "logger_name", "timestamp"})


def task_log_sink(logger: logging.Logger, level: int, event: str, fields: dict[str, Any]) -> None:
    """Send a Citewell event to Airflow's task log (structlog) with its fields as keys; a
    stdlib record's extra fields never reach it."""
    import structlog

    safe = {(f"field_{k}" if k in _RESERVED_LOG_KEYS else k): v for k, v in fields.items()}
    structlog.get_logger(logger.name).log(level, event, **safe)


def guarded(step: Callable[[], T]) -> T:
    """Run a step with Citewell's structured events in the task log; deterministic failures
    (bad config, failed validation or quality gate) fail the task at once, since retrying
    cannot fix them. Everything else may be retried."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        with event_sink(task_log_sink):
            return step()
    except (ConfigurationError, EvaluationError) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def alert_webhook() -> str | None:
    url = os.environ.get(ALERT_WEBHOOK_ENV, "").strip()
    if url:
        return url
    try:
        from airflow.sdk import Variable

        value = Variable.get(ALERT_WEBHOOK_VARIABLE, default=None)
    except Exception:  # no Variable backend reachable: alert by log only
        return None
    text = str(value).strip() if value else ""
    return text or None


def on_failure(context: Any) -> None:
    """Task failure hook: log a structured alert and POST it to the configured webhook.

    The payload names the DAG, task, run and error type; the message of a Citewell error is
    included (our messages never hold document text), other errors only by type.
    """
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    payload = {
        "alert": "citewell.task_failed",
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "try_number": getattr(ti, "try_number", None),
        "error_type": type(exc).__name__ if exc is not None else None,
        "error": _safe_message(exc),
    }
    # Through the task log's structlog, as in guarded(): a stdlib record would lose the fields,
    # and without a reachable webhook this line is the only alert.
    with event_sink(task_log_sink):
        log_event(logger, logging.ERROR, "dags.task_failed", **payload)
        url = alert_webhook()
        if url is None:
            return
        import httpx

        try:
            httpx.post(url, json=payload, timeout=5.0).raise_for_status()
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # InvalidURL: a malformed setting
            log_event(logger, logging.ERROR, "dags.alert_failed", error=type(error).__name__)


def _safe_message(exc: BaseException | None) -> str | None:
    while exc is not None:
        if isinstance(exc, CitewellError):
            return str(exc)
        exc = exc.__cause__
    return None


def s3_access(source: SourceConfig) -> S3Access | None:
    """Credentials for an ``s3`` source with ``aws_conn_id``: a boto3 session from the Amazon
    provider's hook (the connection's keys, role or profile), and the connection's endpoint
    (extra ``endpoint_url``) unless the source names one. Without ``aws_conn_id`` the worker's
    standard AWS chain applies. Nothing of the connection is logged or stored."""
    if source.connector != "s3" or not source.aws_conn_id:
        return None
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from citewell.ingestion.sources import S3Access

    hook = AwsBaseHook(aws_conn_id=source.aws_conn_id, client_type="s3")
    endpoint = hook.conn_config.endpoint_url
    return S3Access(session=hook.get_session(region_name=source.region), endpoint_url=endpoint)


def run_on_plan(step: Callable[..., T], source_name: str, snapshot_path: str) -> T:
    """Run ``step`` (e.g. ``ingestion.refresh.finalize``) on the plan made from this snapshot,
    with worker-side settings, source and object-store access, through :func:`guarded`."""
    from citewell.ingestion.refresh import plan_file

    plan_path = plan_file(Path(snapshot_path))

    def run() -> T:
        source = load_source(source_name)
        return step(load_settings(), source, plan_path, access=s3_access(source))

    return guarded(run)


def citewell_dag(
    kind: str,
    source: SourceConfig,
    description: str,
    schedule: str | list[Asset] | None,
    doc_md: str,
) -> Any:
    """The ``@dag`` decorator for DAG ``citewell_<kind>_<source>``, with what every Citewell DAG
    shares: no catchup, one active run (one index writer at a time), retries and the failure
    hook, the index tag, and ``doc_md`` (shown in the UI) followed by the source's settings."""
    return dag(
        dag_id=f"citewell_{kind}_{source.name}",
        description=description,
        doc_md=doc_md + source_doc_md(source),
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["citewell", f"index:{source.index}"],
    )


def source_doc_md(source: SourceConfig) -> str:
    """The parameters a DAG runs with, from the sources config (no secrets live there)."""
    evaluation = source.evaluation
    rows = [
        ("source", source.name),
        ("folder" if source.connector == "local" else "objects", source.uri),
        ("index", source.index),
        ("schedule", source.schedule or "manual only"),
        ("batch size", str(source.batch_size)),
        ("rebuild golden set", str(source.smoke_golden) if source.smoke_golden else "none"),
        ("rebuild min hit rate", f"{source.rebuild.min_hit_rate:g} at k={source.rebuild.k}"),
        ("evaluation golden set", str(evaluation.golden) if evaluation else "none"),
        (
            "evaluation floors",
            ", ".join(f"{m} >= {v:g}" for m, v in sorted(evaluation.floors.items()))
            if evaluation and evaluation.floors
            else "none",
        ),
    ]
    table = "\n".join(f"| {name} | `{value}` |" for name, value in rows)
    return (
        "\n\n### Parameters (from `CITEWELL_SOURCES_FILE`)\n\n| parameter | value |\n|---|---|\n"
        + table
        + "\n\nEvery failed task POSTs an alert to `CITEWELL_ALERT_WEBHOOK` (or the Variable "
        "`citewell_alert_webhook`). Configuration errors, failed validations and metric floors "
        "fail at once; other errors are retried. See docs/data-engineers.md.\n"
    )


def _retries() -> int:
    """``CITEWELL_AIRFLOW_RETRIES`` (default 2). A bad value fails the DAG file's import with a
    message naming the variable; Airflow itself would take -1 as is."""
    text = os.environ.get(RETRIES_ENV, "2")
    problem = f"{RETRIES_ENV} must be a whole number of 0 or more, got {text!r}"
    try:
        retries = int(text.strip())
    except ValueError as exc:
        raise ConfigurationError(problem) from exc
    if retries < 0:
        raise ConfigurationError(problem)
    return retries


def default_args() -> dict[str, Any]:
    """Retries with exponential backoff and the failure hook, for every task."""
    return {
        "owner": "citewell",
        "retries": _retries(),
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": on_failure,
    }
