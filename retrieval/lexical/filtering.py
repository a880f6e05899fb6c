"""Which BM25 slots a search may touch: the access classes a scope sees, and the masks of the
caller's filters. The decisions come from :mod:`retrieval.access` (``AccessScope.allows`` per
access class, the filter semantics of ``filter_values`` / ``filter_time_range``); this module
only turns them into numpy masks over slot columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from citewell.core.models import SearchFilters
from citewell.retrieval.access import AccessScope, as_utc, filter_time_range, filter_values

NO_TIME = np.iinfo(np.int64).min  # modified_at unknown

IntArray = npt.NDArray[np.int64]


def micros(moment: datetime | None) -> int:
    """A column value for ``modified_at`` (UTC microseconds; ``NO_TIME`` when unknown)."""
    if moment is None:
        return int(NO_TIME)
    return int(as_utc(moment).timestamp() * 1_000_000)


def visible_classes(
    scope: AccessScope,
    class_keys: Sequence[tuple[int, frozenset[str]]],
    class_docs: Sequence[int],
) -> tuple[int, ...]:
    """The non-empty access classes ``scope`` may see, in class order."""
    return tuple(
        i
        for i, (rank, groups) in enumerate(class_keys)
        if class_docs[i] > 0 and scope.allows(rank, groups)
    )


def _codes(table: Mapping[str, int], allowed: frozenset[str]) -> list[int]:
    return [table[value] for value in allowed if value in table]


def filter_mask(
    slots: IntArray,
    filters: SearchFilters,
    *,
    sources: npt.NDArray[np.int32],
    source_codes: Mapping[str, int],
    doc_types: npt.NDArray[np.int32],
    doc_type_codes: Mapping[str, int],
    modified: IntArray,
    doc_slots: IntArray | None,
) -> npt.NDArray[np.bool_]:
    """Per entry of ``slots``: whether ``filters`` keep it. ``doc_slots``: the slots of the
    documents ``filters.doc_ids`` names (None: no document filter)."""
    keep = np.ones(slots.shape[0], dtype=bool)
    allowed_sources = filter_values(filters.sources)
    if allowed_sources is not None:
        keep &= np.isin(sources[slots], _codes(source_codes, allowed_sources))
    allowed_types = filter_values(filters.doc_types)
    if allowed_types is not None:
        keep &= np.isin(doc_types[slots], _codes(doc_type_codes, allowed_types))
    if doc_slots is not None:
        keep &= np.isin(slots, doc_slots)
    low, high = filter_time_range(filters)
    if low is not None or high is not None:
        stamps = modified[slots]
        keep &= stamps != NO_TIME
        if low is not None:
            keep &= stamps >= micros(low)
        if high is not None:
            keep &= stamps <= micros(high)
    return keep
