"""The principals file: named principals, their clearance and groups, and optional API keys.

```yaml
principals:
  alice:
    clearance: public
    groups: [sales]
    api_key_sha256: 9f86d0...   # sha256 hex of the key; keys themselves are never stored
  search-gateway:
    clearance: restricted
    groups: [service]
    api_key_sha256: 2c26b4...
    can_act_for: true           # may act for an end user with a signed token (audited)
```
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import yaml
from pydantic import ValidationError

from citewell.core.errors import ConfigurationError
from citewell.core.models import ClassificationScheme, Frozen, Principal


class PrincipalEntry(Frozen):
    clearance: str
    groups: tuple[str, ...] = ()
    api_key_sha256: str | None = None
    can_act_for: bool = False


class PrincipalDirectory:
    """Principals by name and by API key. Unknown names and keys resolve to nothing."""

    def __init__(self, entries: dict[str, PrincipalEntry], scheme: ClassificationScheme) -> None:
        for name, entry in entries.items():
            scheme.rank(entry.clearance)  # unknown clearance → UnknownClassificationError
            if entry.api_key_sha256 is not None and len(entry.api_key_sha256) != 64:
                raise ConfigurationError(f"principal {name!r}: api_key_sha256 must be 64 hex chars")
        self._entries = dict(entries)

    @classmethod
    def load(cls, path: Path, scheme: ClassificationScheme) -> PrincipalDirectory:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read principals file {path}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("principals", {}), dict):
            raise ConfigurationError(f"{path}: expected a mapping 'principals: {{name: ...}}'")
        try:
            entries = {
                str(name): PrincipalEntry.model_validate(body or {})
                for name, body in raw.get("principals", {}).items()
            }
        except ValidationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc
        return cls(entries, scheme)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Principal | None:
        entry = self._entries.get(name)
        if entry is None:
            return None
        return Principal(name=name, clearance=entry.clearance, groups=frozenset(entry.groups))

    def can_act_for(self, name: str) -> bool:
        entry = self._entries.get(name)
        return bool(entry and entry.can_act_for)

    def by_api_key(self, api_key: str) -> Principal | None:
        digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()
        match: str | None = None
        for name, entry in self._entries.items():
            # Compare every entry in constant time so timing reveals nothing about which matched.
            if entry.api_key_sha256 is not None and hmac.compare_digest(
                entry.api_key_sha256.lower(), digest
            ):
                match = name
        return self.get(match) if match is not None else None


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()
