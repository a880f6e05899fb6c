"""Settings read from ``CITEWELL_*`` variables in the forms operators write them."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(
    "field", ["data_dir", "principals_file", "audit_log", "jwt_jwks_file", "model_cache_dir"]
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_path_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    """Path("") is "." : CITEWELL_DATA_DIR= (a compose file's unset variable) put the indexes,
    caches and audit log in whatever folder the process started in, and an empty
    CITEWELL_PRINCIPALS_FILE or CITEWELL_AUDIT_LOG failed later as "Is a directory: '.'"."""
    monkeypatch.setenv(f"CITEWELL_{field.upper()}", value)
    with pytest.raises(ValidationError, match=rf"{field}\n.*must not be empty"):
        Settings()


@pytest.mark.parametrize(
    "field", ["data_dir", "principals_file", "audit_log", "jwt_jwks_file", "model_cache_dir"]
)
def test_a_path_variable_starting_with_a_tilde_is_under_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str
) -> None:
    """Environment files (systemd, docker --env-file, Kubernetes) never expand '~': the value
    was taken literally, so CITEWELL_DATA_DIR=~/citewell created a folder named '~' in the
    working directory, while --data-dir ~/citewell (expanded) meant the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(f"CITEWELL_{field.upper()}", "~/citewell/x")
    assert getattr(Settings(), field) == tmp_path / "citewell" / "x"


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        # A misspelt audience or issuer turned the check off: tokens minted for another
        # service were accepted.
        ("CITEWELL_JWT_AUDIANCE", "CITEWELL_JWT_AUDIENCE"),
        ("CITEWELL_JWT_ISSUERS", "CITEWELL_JWT_ISSUER"),
        # The kill switch, misspelt, left generation on.
        ("CITEWELL_GENERATION_ENABLE", "CITEWELL_GENERATION_ENABLED"),
        ("citewell_principal_file", "CITEWELL_PRINCIPALS_FILE"),
    ],
)
def test_a_misspelt_variable_is_an_error_naming_the_setting_it_resembles(
    monkeypatch: pytest.MonkeyPatch, variable: str, meant: str
) -> None:
    monkeypatch.setenv(variable, "x")
    with pytest.raises(
        ValidationError, match=rf"unknown variable {variable}; did you mean {meant}"
    ):
        Settings()


def test_the_dag_variables_are_not_unknown_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("CITEWELL_SOURCES_FILE", "CITEWELL_AIRFLOW_RETRIES", "CITEWELL_ALERT_WEBHOOK"):
        monkeypatch.setenv(variable, "x")
    assert Settings().index == "default"
