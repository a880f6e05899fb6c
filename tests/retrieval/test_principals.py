"""The principals file is read with the duplicate-key-safe loader and strict types."""

from __future__ import annotations

from pathlib import Path

import pytest

from citewell.core.errors import ConfigurationError
from citewell.core.models import ClassificationScheme
from citewell.retrieval.principals import PrincipalDirectory, hash_api_key

SCHEME = ClassificationScheme()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # A second entry for alice must not silently replace the first (or widen her access).
        (
            "principals:\n  alice: {clearance: public, groups: [sales]}\n"
            "  bob: {clearance: internal}\n  alice: {clearance: restricted, groups: [board]}\n",
            r":4: duplicate key 'alice'",
        ),
        ("principals:\n  alice:\n    clearance: public\n    clearance: restricted\n", r":4: dup"),
        ("principals:\n  svc: {clearance: public, can_act_for: 'yes'}\n", r":2: .*can_act_for"),
        ("principals:\n  alice: {clearance: public, groups: [1]}\n", r":2: .*groups"),
        ("principals:\n  alice: {clearance: topsecret}\n", r":2: unknown classification"),
        ("principals:\n  alice: {clearance: public, grups: [a]}\n", r":2: .*unknown key"),
    ],
)
def test_principals_file_errors_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    file = tmp_path / "principals.yaml"
    file.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=rf"principals\.yaml{message}"):
        PrincipalDirectory.load(file, SCHEME)


def test_valid_file_loads(tmp_path: Path) -> None:
    file = tmp_path / "principals.yaml"
    file.write_text(
        "principals:\n  alice: {clearance: internal, groups: [sales]}\n"
        "  gw: {clearance: restricted, can_act_for: true}\n",
        encoding="utf-8",
    )
    directory = PrincipalDirectory.load(file, SCHEME)
    assert directory.names() == ["alice", "gw"] and directory.can_act_for("gw")
    alice = directory.get("alice")
    assert alice is not None and alice.groups == frozenset({"sales"})


@pytest.mark.parametrize("spelling", [str.lower, str.upper], ids=["same", "other-case"])
def test_two_principals_with_one_api_key_are_refused(tmp_path: Path, spelling) -> None:
    """An entry copied for a new principal with the old key hash left in: the key resolved to
    whichever entry came last, so bob's own key gave him bob-admin's clearance and groups."""
    digest = hash_api_key("bob-key")
    file = tmp_path / "principals.yaml"
    file.write_text(
        "principals:\n"
        f"  bob: {{clearance: internal, groups: [sales], api_key_sha256: {digest}}}\n"
        "  carol: {clearance: public}\n"
        f"  bob-admin: {{clearance: restricted, groups: [board], "
        f"api_key_sha256: {spelling(digest)}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"principals\.yaml:4: bob-admin\.api_key_sha256: the API key of 'bob' \(line 2\)",
    ):
        PrincipalDirectory.load(file, SCHEME)
