"""Structured logging: JSON lines with fields passed through ``extra={"fields": {...}}``.

Never log chunk text, secrets or tokens. Use :func:`log_event` for structured events.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            payload["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(payload, default=str)


# Where structured events go instead of the stdlib record, when an entry point routes them
# (the Airflow DAGs send them to Airflow's structlog task logs, which drop stdlib extras).
EventSink = Callable[[logging.Logger, int, str, dict[str, Any]], None]
_event_sink: EventSink | None = None


@contextlib.contextmanager
def event_sink(sink: EventSink) -> Iterator[None]:
    """Route :func:`log_event` calls to ``sink`` (with their fields) while the block runs."""
    global _event_sink
    previous, _event_sink = _event_sink, sink
    try:
        yield
    finally:
        _event_sink = previous


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (never chunk text, secrets or tokens)."""
    sink = _event_sink
    if sink is not None:
        if logger.isEnabledFor(level):
            sink(logger, level, event, fields)
        return
    logger.log(level, event, extra={"fields": fields})


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    """Configure the root logger once; called by entry points only."""
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "urllib3", "sentence_transformers", "unstructured", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pypdf (the PDF label reader) warns about each repair of a damaged file, without naming
    # the file; what cannot be read is reported with the document's failure or refusal.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
