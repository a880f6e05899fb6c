"""Settings read from ``CITEWELL_*`` variables in the forms operators write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citewell.core.settings import Settings


@pytest.mark.parametrize(
    "value",
    [
        "public,internal,sensitive,confidential,restricted",
        " public , internal,sensitive ,confidential,restricted ",
        '["public", "internal", "sensitive", "confidential", "restricted"]',
    ],
)
def test_levels_are_read_from_a_comma_list_or_a_json_array(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CITEWELL_CLASSIFICATION_LEVELS", value)
    assert Settings().classification_levels == (
        "public",
        "internal",
        "sensitive",
        "confidential",
        "restricted",
    )


def test_default_groups_are_read_from_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITEWELL_DEFAULT_GROUPS", "everyone,staff")
    assert Settings().default_groups == ("everyone", "staff")
    monkeypatch.setenv("CITEWELL_DEFAULT_GROUPS", "")
    assert Settings().default_groups == ()


@pytest.mark.parametrize("value", ['["public", "internal"', "public,public"])
def test_a_bad_level_list_is_a_validation_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CITEWELL_CLASSIFICATION_LEVELS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "classification_levels" in str(caught.value) or "levels" in str(caught.value)
