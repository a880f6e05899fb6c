"""Typed errors. Every error Citewell raises derives from :class:`CitewellError`.

The API maps these to HTTP responses in one place (``api/errors.py``); messages must never
reveal the existence or content of a document the caller may not see.
"""

from __future__ import annotations


class CitewellError(Exception):
    """Base class for all Citewell errors."""


class ConfigurationError(CitewellError):
    """Settings, labels files or principals files are invalid."""


class LabelError(ConfigurationError):
    """A labels file is malformed (unknown level, bad rule). Names the file and line."""


class GoldenSetError(ConfigurationError):
    """A golden questions file is unreadable, malformed or empty. Names the file and line."""


class UnknownClassificationError(ConfigurationError):
    """A classification level name is not one of the configured levels."""


class UsageError(CitewellError):
    """A command line is incomplete or contradictory (``--user`` with ``--clearance``, two
    inputs where one is allowed). Says which options to use."""


class InvalidArgumentError(CitewellError, ValueError):
    """A call's arguments are out of range or inconsistent (a result limit below 1, N texts for
    M chunks, a batch size of 0): the caller's mistake, never a problem with data or settings.
    Also a :class:`ValueError`, what Python callers expect for a bad argument."""


class ParseError(CitewellError):
    """A document could not be parsed; ``reason`` is a short human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingDependencyError(ParseError):
    """A format needs an external tool (LibreOffice, pandoc, Tesseract) that is not installed."""


class ParseWorkerError(CitewellError):
    """Parse worker processes cannot be started or supervised: the run stops (one document's
    failure in a worker is a :class:`ParseError` for that document, never this)."""


class InputRejectedError(CitewellError):
    """Input exceeds a configured limit or is otherwise unsafe (path traversal, zip bomb)."""


class SourceUnavailableError(CitewellError):
    """A source cannot be listed (store unreachable, access denied): nothing is withdrawn."""


class EmptySourceError(SourceUnavailableError):
    """A source that had documents listed none; refused unless an empty source is allowed."""


class StoreUnavailableError(CitewellError):
    """A vector store or lexical index cannot be opened or queried; never fall back."""


class IndexNotFoundError(StoreUnavailableError):
    """The named index has no published version yet."""


class IndexIntegrityError(StoreUnavailableError):
    """A published index version does not match what was recorded when it was published (a
    file missing, truncated or changed; a point count that disagrees; a search hit that cannot
    be hydrated). The version is refused, never served partially. ``version`` names it;
    ``problems`` say what failed (paths relative to the version, for operators' logs only)."""

    def __init__(self, version: str | None, problems: list[str] | tuple[str, ...]) -> None:
        self.version = version
        self.problems = tuple(problems)
        shown = "; ".join(self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"index version {version or '?'} failed verification: {shown}{more}")


class AccessViolationError(CitewellError):
    """A result outside the caller's access scope reached an entry point (a bug in a layer
    below): the whole response is withheld, never sent with the result removed from it."""


class IndexLockedError(CitewellError):
    """Another writer holds the index's write lock."""


class AuditLogError(CitewellError):
    """The audit log cannot be written (disk full, permissions): the request is refused (503)
    rather than answered unaudited."""


class AuthenticationError(CitewellError):
    """Missing or invalid credentials."""


class AuthorizationError(CitewellError):
    """Valid credentials that do not permit the requested action."""


class ModelError(CitewellError):
    """A model could not be loaded, exported or run."""


class NonFiniteVectorsError(ModelError):
    """An embedding model returned NaN or infinite vectors (a broken export or runtime)."""


class LLMError(CitewellError):
    """The language model backend failed or timed out."""


class EvaluationError(CitewellError):
    """An evaluation dataset is malformed or a metric gate failed."""
