"""Principals files for tests: each principal's entry stores only its API key's SHA-256, as a
real principals file does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from citewell.retrieval.principals import hash_api_key


def keyed(clearance: str, groups: Sequence[str], api_key: str, **flags: bool) -> dict[str, object]:
    """One principal's entry: clearance, groups, the key's hash and any flags (``can_act_for``,
    ``operator``)."""
    return {
        "clearance": clearance,
        "groups": list(groups),
        "api_key_sha256": hash_api_key(api_key),
        **flags,
    }


def write_principals(path: Path, principals: Mapping[str, Mapping[str, object]]) -> Path:
    path.write_text(yaml.safe_dump({"principals": dict(principals)}), encoding="utf-8")
    return path
