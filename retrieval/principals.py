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
  ops-dashboard:
    clearance: public
    groups: [ops]
    api_key_sha256: 4e0739...
    operator: true              # receives server timings (took_ms, answer timings)
```

``operator`` and ``can_act_for`` are granted here only, never by a token's claims: an identity
provider's token cannot make itself an operator.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from pydantic import StrictBool, StrictStr

from citewell.core.config_files import load_yaml, validate_yaml
from citewell.core.errors import ConfigurationError, UnknownClassificationError
from citewell.core.models import ClassificationScheme, Frozen, Principal


class PrincipalEntry(Frozen):
    clearance: StrictStr
    groups: tuple[StrictStr, ...] = ()
    api_key_sha256: StrictStr | None = None
    can_act_for: StrictBool = False
    # Server timings reveal how much work a query caused, which depends on the index as a
    # whole; only operators (monitoring, load tests) receive them.
    operator: StrictBool = False


class PrincipalsFile(Frozen):
    """The file's shape: unknown keys and wrong types are errors (``can_act_for: "yes"`` too)."""

    principals: dict[StrictStr, PrincipalEntry] = {}


class PrincipalDirectory:
    """Principals by name and by API key. Unknown names and keys resolve to nothing."""

    def __init__(self, entries: dict[str, PrincipalEntry], scheme: ClassificationScheme) -> None:
        for name, entry in entries.items():
            scheme.rank(entry.clearance)  # unknown clearance → UnknownClassificationError
            if entry.api_key_sha256 is not None and len(entry.api_key_sha256) != 64:
                raise ConfigurationError(f"principal {name!r}: api_key_sha256 must be 64 hex chars")
        shared = _shared_key(entries)
        if shared is not None:
            raise ConfigurationError(f"principals {shared[0]!r} and {shared[1]!r} share an API key")
        self._entries = dict(entries)

    @classmethod
    def load(cls, path: Path, scheme: ClassificationScheme) -> PrincipalDirectory:
        """Read a principals file; every error names the file and line (duplicate keys too)."""
        document = load_yaml(path, what="principals file")
        data = {} if document.data is None else document.data
        parsed = validate_yaml(PrincipalsFile, document, data=data)
        for name, entry in parsed.principals.items():
            try:
                scheme.rank(entry.clearance)
            except UnknownClassificationError as exc:
                where = document.where(("principals", name, "clearance"))
                raise ConfigurationError(f"{where}: {exc}") from exc
        shared = _shared_key(parsed.principals)
        if shared is not None:
            first, second = shared
            raise ConfigurationError(
                f"{document.where(('principals', second, 'api_key_sha256'))}: "
                f"{second}.api_key_sha256: the API key of {first!r} "
                f"(line {document.line(('principals', first, 'api_key_sha256'))}): one key must "
                "name one principal"
            )
        return cls(dict(parsed.principals), scheme)

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

    def is_operator(self, name: str) -> bool:
        entry = self._entries.get(name)
        return bool(entry and entry.operator)

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


def _shared_key(entries: Mapping[str, PrincipalEntry]) -> tuple[str, str] | None:
    """The first two principals with the same key hash, if any. A key naming two principals
    would authenticate as whichever came last: an entry copied with its hash left in gives the
    first principal's key the copy's access."""
    seen: dict[str, str] = {}
    for name, entry in entries.items():
        if entry.api_key_sha256 is None:
            continue
        digest = entry.api_key_sha256.lower()
        if digest in seen:
            return seen[digest], name
        seen[digest] = name
    return None


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()
