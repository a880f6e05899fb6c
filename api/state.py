"""The serving index as the API sees it, and the holder that opens and refreshes it.

The holder lets the API start before any index is published: until one opens, searches raise
``StoreUnavailableError`` (503) and ``/readyz`` says not ready; the reload loop keeps trying.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from citewell.core.errors import CitewellError, StoreUnavailableError
from citewell.core.logging import log_event
from citewell.core.models import Principal, SearchRequest, SearchResult
from citewell.core.settings import Settings
from citewell.retrieval.protocols import SearchService
from citewell.retrieval.readiness import Readiness

logger = logging.getLogger(__name__)


class IndexStatusLike(Protocol):
    """The fields of ``retrieval.service.IndexStatus`` that the API reports."""

    @property
    def index(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def loaded_at(self) -> datetime | None: ...


class ServedVersionsLike(Protocol):
    """``retrieval.serving_version.ServedVersions``: the version a service serves."""

    def readiness(self) -> Readiness:
        """Whether a search would succeed now (``retrieval/readiness.py``)."""
        ...

    def maybe_reload(self) -> bool:
        """Switch atomically to a newer published version; True if it switched."""
        ...


@runtime_checkable
class ServingIndexLike(SearchService, Protocol):
    """``retrieval.service.ServingIndex``: a search service whose version can be refreshed in
    place."""

    @property
    def versions(self) -> ServedVersionsLike:
        """The served version: readiness and reload."""
        ...

    def status(self) -> IndexStatusLike:
        """What is being served."""
        ...

    def warm_up(self) -> None:
        """Load the stores and models now, so the first request does not pay for them."""
        ...

    def close(self) -> None:
        """Release stores. Idempotent."""
        ...


def _default_opener(settings: Settings) -> Callable[[], ServingIndexLike]:
    def open_service() -> ServingIndexLike:
        # Imported here so that building an app (and importing api) loads no stores or models.
        from citewell.retrieval.service import open_search_service

        return open_search_service(settings)

    return open_service


class ServiceHolder:
    """Holds the serving index, opening it on first :meth:`tick` when none was given."""

    def __init__(
        self,
        service: ServingIndexLike | None = None,
        opener: Callable[[], ServingIndexLike] | None = None,
    ) -> None:
        self._service = service
        self._opener = opener
        self._owned = service is None  # close only what we opened
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, service: ServingIndexLike | None) -> ServiceHolder:
        return cls(service, None if service is not None else _default_opener(settings))

    @property
    def service(self) -> ServingIndexLike | None:
        return self._service

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        service = self._service
        if service is None:
            raise StoreUnavailableError("no index is loaded yet")
        return service.search(principal, request)

    def readiness(self) -> Readiness:
        service = self._service
        if service is None:
            return Readiness(ready=False, reason="not_loaded", detail="no index is open yet")
        try:
            return service.versions.readiness()
        except CitewellError as exc:
            return Readiness(ready=False, reason="store_unavailable", detail=str(exc))
        except Exception as exc:  # fail closed: whatever broke, a search would not succeed
            log_event(logger, logging.ERROR, "api.readiness_failed", error=type(exc).__name__)
            return Readiness(ready=False, reason="store_unavailable", detail=type(exc).__name__)

    def ready(self) -> bool:
        return self.readiness().ready

    def tick(self) -> bool:
        """Open the index if none is open, else reload it if a newer version is published.
        True when the served version changed. Errors are logged, never raised: the loop must
        survive a store that is briefly busy or missing."""
        with self._lock:
            try:
                if self._service is None:
                    if self._opener is None:
                        return False
                    self._service = self._opener()
                    log_event(logger, logging.INFO, "api.index_opened")
                    return True
                return bool(self._service.versions.maybe_reload())
            except CitewellError as exc:
                log_event(logger, logging.WARNING, "api.index_refresh_failed", error=str(exc))
                return False
            except Exception as exc:  # e.g. a damaged file a reader does not expect
                log_event(
                    logger, logging.ERROR, "api.index_refresh_failed", error=type(exc).__name__
                )
                return False

    def warm_up(self) -> None:
        """Load models ahead of the first request; failures are logged, never raised (the index
        may not exist yet or be damaged, and the request path reports that)."""
        service = self._service
        if service is None:
            return
        try:
            service.warm_up()
        except CitewellError as exc:
            log_event(logger, logging.WARNING, "api.warm_up_failed", error=str(exc))
        except Exception as exc:  # the API still starts: /readyz and searches say what fails
            log_event(logger, logging.ERROR, "api.warm_up_failed", error=type(exc).__name__)

    def close(self) -> None:
        with self._lock:
            if self._owned and self._service is not None:
                self._service.close()
                self._service = None
