"""Error types say what failed: a caller's bad argument is neither a settings problem nor a
data problem, and every error derives from the one base."""

from __future__ import annotations

import pytest

from citewell.core.errors import (
    AuditLogError,
    CitewellError,
    ConfigurationError,
    InvalidArgumentError,
    UsageError,
)
from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope
from citewell.retrieval.lexical.bm25 import BM25Index


def test_every_new_error_has_the_one_base():
    for kind in (AuditLogError, InvalidArgumentError, UsageError):
        assert issubclass(kind, CitewellError)
        assert not issubclass(kind, ConfigurationError)


def test_a_bad_limit_is_an_invalid_argument_not_a_configuration_error():
    index = BM25Index()
    scope = AccessScope(principal="p", max_rank=0, groups=frozenset({"everyone"}))
    with pytest.raises(InvalidArgumentError, match="limit must be at least 1"):
        index.search("anything", scope, SearchFilters(), 0)
    with pytest.raises(ValueError):  # what Python callers expect for a bad argument
        index.document_search("anything", scope, SearchFilters(), 0)
