"""The published version a search service serves: leases, reload, verification and readiness.

``ServedVersions.maybe_reload()`` switches atomically to a newer published version; searches
already running finish on the version they leased (reference counted). A version that fails its
integrity check is never switched to (the version being served keeps serving); one whose files
change while it is served stops serving (``lease()`` raises ``IndexIntegrityError``, 503) until
a version that passes is published or rolled back to. ``switch_to`` is the one place a version
is switched.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from citewell.core.errors import (
    CitewellError,
    IndexIntegrityError,
    IndexNotFoundError,
    ModelError,
    StoreUnavailableError,
)
from citewell.core.logging import log_event
from citewell.core.settings import Settings
from citewell.retrieval.embedding import backend_of_key
from citewell.retrieval.factory import embedding_model_id
from citewell.retrieval.index import (
    IndexLayout,
    OpenedVersion,
    check_embedding_backend,
    open_version,
)
from citewell.retrieval.protocols import Embedder
from citewell.retrieval.readiness import NotReadyReason, Readiness

logger = logging.getLogger(__name__)

# A refused version is checked again at most this often: readiness probes and the reload loop
# would otherwise re-read every file (and log the refusal) several times a minute.
REVERIFY_REFUSED_S = 60.0


class Lease:
    """A published version plus the number of searches using it."""

    def __init__(self, opened: OpenedVersion) -> None:
        self.opened = opened
        self.users = 0
        self.retired = False
        self.loaded_at = datetime.now(UTC)
        self.damage: IndexIntegrityError | None = None  # files changed since it was verified


class ServedVersions:
    """Holds the version of one index that searches use, and switches it.

    ``embedder`` gives the query embedder (built on first use): a version embedded by another
    model or backend is refused. ``on_switch`` runs before each switch (the service chooses its
    reranker there, since a refresh can publish a newly trained one)."""

    def __init__(
        self,
        settings: Settings,
        layout: IndexLayout,
        *,
        embedder: Callable[[], Embedder],
        on_switch: Callable[[], None],
    ) -> None:
        self._settings, self._layout = settings, layout
        self._query_embedder, self._on_switch = embedder, on_switch
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self.last_error: str | None = None  # why the last open or reload failed
        self._refused: tuple[str | None, float, IndexIntegrityError] | None = None
        self._repeated_refusal = False  # the last open re-raised a recent refusal

    @property
    def served(self) -> Lease | None:
        """The lease of the version being served, if one is open."""
        return self._lease

    def _log(self, level: int, event: str, **fields: Any) -> None:
        log_event(logger, level, event, index=self._layout.name, **fields)

    # --- opening and switching ------------------------------------------------------------
    def load(self) -> None:
        """Open the published version now (raises StoreUnavailableError/IndexNotFoundError,
        IndexIntegrityError for a version that fails its check)."""
        self.switch_to(self._open_current())

    def _current(self) -> str | None:
        """The version CURRENT names; a data dir that cannot be read (unmounted, a stale network
        share, CURRENT replaced by a folder) is unavailable (503), never an unexpected error."""
        try:
            return self._layout.current_version()
        except OSError as exc:
            raise StoreUnavailableError(
                f"index {self._layout.name!r}: cannot read CURRENT ({exc.strerror or exc})"
            ) from exc

    def _current_or_none(self) -> str | None:
        try:
            return self._current()
        except StoreUnavailableError:
            return None  # the served version's own check decides

    def _open_current(self) -> OpenedVersion:
        current = self._current()
        refused = self._refused
        if (
            refused is not None
            and refused[0] == current
            and time.monotonic() - refused[1] < REVERIFY_REFUSED_S
        ):
            self._repeated_refusal = True
            raise refused[2]
        self._repeated_refusal = False
        try:
            return open_version(self._settings, self._layout.name)
        except IndexIntegrityError as exc:
            self._refused = (exc.version, time.monotonic(), exc)
            raise
        except OSError as exc:
            raise StoreUnavailableError(
                f"index {self._layout.name!r} version {current} cannot be read "
                f"({exc.strerror or exc})"
            ) from exc

    def maybe_reload(self) -> bool:
        """Switch to a newer published version if there is one, or re-open the served one if its
        files changed (it serves again only once it passes the full check). Never raises for a
        failed reload: the version being served keeps serving (unless it is itself damaged) and
        the failure is logged."""
        lease = self._lease
        try:
            current = self._current()
        except StoreUnavailableError as exc:
            self.last_error = str(exc)
            self._log(logging.ERROR, "index.reload_failed", error=str(exc))
            return False
        collected = lease is not None and self._collected(lease, current)
        if lease is not None and not collected:
            with contextlib.suppress(IndexIntegrityError):  # marks the lease damaged
                self._check_files(lease)
        damaged = lease is not None and lease.damage is not None
        if current is None or (
            lease is not None and lease.opened.version == current and not damaged
        ):
            return False
        try:
            self.switch_to(self._open_current())
        except CitewellError as exc:
            self.last_error = str(exc)
            if lease is not None and collected:
                # A collected version serves only until its successor opens: when that fails,
                # nothing on disk verifies and searches answer 503.
                with contextlib.suppress(IndexIntegrityError):
                    self._check_files(lease)
                damaged = lease.damage is not None
            if self._repeated_refusal:
                return False  # logged when it was refused
            still_serving = None if lease is None or damaged else lease.opened.version
            self._log(
                logging.ERROR,
                "index.reload_failed",
                version=current,
                error=str(exc),
                still_serving=still_serving,
            )
            return False
        return True

    def switch_to(self, opened: OpenedVersion) -> None:
        """The one place the served version is switched: ``opened`` (already verified by
        ``open_version``) must match this process's embedding model and backend; searches that
        hold the old version finish on it, and it closes when the last one ends."""
        try:
            self._check_embedding(opened)
        except CitewellError:
            opened.close()
            raise
        self._on_switch()
        with self._lock:
            old, self._lease = self._lease, Lease(opened)
            if old is not None:
                old.retired = True
                if old.users == 0:
                    old.opened.close()
        self._log(logging.INFO, "index.loaded", version=opened.version, chunks=opened.meta.chunks)

    def _check_embedding(self, opened: OpenedVersion) -> None:
        if opened.meta.embedding_model != embedding_model_id(self._settings):
            raise StoreUnavailableError(
                f"index {self._layout.name!r} was built with a different embedding model "
                f"({opened.meta.embedding_model}); rebuild it or configure that model"
            )
        check_embedding_backend(
            self._layout.name,
            opened.meta.vectors_backend,
            backend_of_key(self._query_embedder().cache_key),
        )

    def _collected(self, lease: Lease, current: str | None) -> bool:
        """Whether the served version's folder is gone because a writer collected it after
        publishing newer versions (CURRENT names another one). Its handles were verified and
        still answer: it serves until the reload check has the current version open, rather
        than answering 503 while that version is verified."""
        version = lease.opened.version
        return (
            lease.damage is None
            and current is not None
            and current != version
            and not self._layout.version_dir(version).exists()
        )

    def _check_files(self, lease: Lease) -> None:
        """Raise if the served version's files changed since it was verified (stat only)."""
        if lease.damage is None:
            problems = lease.opened.damage()
            if problems:
                lease.damage = IndexIntegrityError(lease.opened.version, problems)
                self._log(
                    logging.ERROR,
                    "index.version_refused",
                    version=lease.opened.version,
                    problems=problems[:20],
                    while_serving=True,
                )
        if lease.damage is not None:
            raise lease.damage

    # --- using ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[OpenedVersion]:
        """The served version, held open until the block ends (opened first if none is)."""
        if self._lease is None:
            self.load()
        with self._lock:
            lease = self._lease
            if lease is None:
                raise StoreUnavailableError(f"index {self._layout.name!r} is not loaded")
            if lease.damage is not None:
                raise lease.damage
            lease.users += 1
        try:
            yield lease.opened
        finally:
            with self._lock:
                lease.users -= 1
                close = lease.retired and lease.users == 0
            if close:
                lease.opened.close()

    def readiness(self) -> Readiness:
        """Whether a search would succeed now: the one readiness check, shared by ``/readyz``
        and ``citewell index ready`` (see ``retrieval/readiness.py``)."""
        if self._lease is None:
            try:
                self.load()
            except CitewellError as exc:
                self.last_error = str(exc)
                return Readiness(ready=False, reason=_reason_for(exc), detail=str(exc))
        lease = self._lease
        if lease is None:
            return Readiness(ready=False, reason="not_loaded", detail=self.last_error)
        version = lease.opened.version
        try:
            if not self._collected(lease, self._current_or_none()):
                self._check_files(lease)
            lease.opened.vectors.count()  # the store answers (a remote server is reachable)
            self._query_embedder().warm_up()
        except CitewellError as exc:
            return Readiness(ready=False, reason=_reason_for(exc), detail=str(exc), version=version)
        return Readiness(ready=True, version=version)

    def close(self) -> None:
        with self._lock:
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.opened.close()


def _reason_for(exc: CitewellError) -> NotReadyReason:
    if isinstance(exc, IndexIntegrityError):
        return "integrity_failed"
    if isinstance(exc, IndexNotFoundError):
        return "no_published_version"
    if isinstance(exc, ModelError):
        return "model_unavailable"
    return "store_unavailable"
