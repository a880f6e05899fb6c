"""Core models validate what every entry point passes down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from citewell.core.models import SearchFilters


def test_filter_dates_are_held_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    filters = SearchFilters(modified_from=datetime(2025, 1, 1, 1, tzinfo=paris))
    assert filters.modified_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert filters.modified_from is not None and filters.modified_from.tzinfo is UTC
    assert SearchFilters(modified_to=datetime(2025, 1, 1)).modified_to == datetime(2025, 1, 1)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14))),
    ],
)
def test_a_filter_date_with_no_utc_equivalent_is_a_validation_error(moment: datetime) -> None:
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        SearchFilters(modified_from=moment)


def test_a_reversed_date_range_is_a_validation_error() -> None:
    """Naive is UTC: 00:00:01 naive is after 00:00 UTC, and the same instant is a range."""
    start = datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="modified_from is after modified_to"):
        SearchFilters(modified_from=datetime(2024, 3, 1, 0, 0, 1), modified_to=start)
    same = SearchFilters(modified_from=datetime(2024, 3, 1), modified_to=start)
    assert same.modified_from is not None and same.modified_to is not None
