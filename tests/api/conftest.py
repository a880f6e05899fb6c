"""A real-enough serving index for API tests: a handful of SciFact abstracts with access labels,
searched by term overlap, with the real access scope (retrieval.access) applied before top-k."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from fastapi.testclient import TestClient

from citewell.api.main import create_app
from citewell.core.errors import StoreUnavailableError
from citewell.core.models import (
    Chunk,
    Principal,
    ScoreBreakdown,
    ScoredChunk,
    SearchFilters,
    SearchRequest,
    SearchResult,
)
from citewell.core.settings import Settings
from citewell.retrieval.access import scope_for
from citewell.retrieval.principals import hash_api_key
from citewell.retrieval.readiness import Readiness

JWT_SECRET = "test-secret-0123456789-abcdefghijklmnop"
KEYS = {
    "alice": "alice-key-7f3a",
    "gateway": "gateway-key-91bc",
    "hrbot": "hr-key-55d0",
    "ops": "ops-key-0c4e",
    "ops-gateway": "ops-gateway-key-2d77",
}

# (classification, groups, source, doc_type, modified) for the first SciFact abstracts.
LABELS: list[tuple[str, tuple[str, ...], str, str, datetime]] = [
    ("public", ("everyone",), "wiki", "md", datetime(2022, 1, 10, tzinfo=UTC)),
    ("internal", ("engineering",), "wiki", "md", datetime(2022, 6, 1, tzinfo=UTC)),
    ("internal", ("engineering",), "drive", "pdf", datetime(2023, 3, 5, tzinfo=UTC)),
    ("confidential", ("hr",), "hr-share", "docx", datetime(2023, 4, 1, tzinfo=UTC)),
    ("restricted", ("hr",), "hr-share", "pdf", datetime(2023, 9, 9, tzinfo=UTC)),
    ("public", ("everyone",), "drive", "pdf", datetime(2023, 11, 2, tzinfo=UTC)),
]


def load_chunks(shared_data: Path) -> list[Chunk]:
    path = shared_data / "ir" / "scifact" / "corpus.jsonl.gz"
    chunks: list[Chunk] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for i, (line, label) in enumerate(zip(fh, LABELS, strict=False)):
            doc = json.loads(line)
            classification, groups, source, doc_type, modified = label
            text = doc["text"][:600]
            chunks.append(
                Chunk(
                    chunk_id=f"00000000-0000-0000-0000-00000000000{i}",
                    doc_id=f"scifact-{doc['_id']}",
                    chunk_index=0,
                    text=text,
                    title=doc["title"],
                    source=source,
                    source_uri=f"file:///corpus/{doc['_id']}.{doc_type}",
                    doc_type=doc_type,
                    page=1 if doc_type == "pdf" else None,
                    char_start=0,
                    char_end=len(text),
                    classification=classification,
                    classification_rank=("public", "internal", "confidential", "restricted").index(
                        classification
                    ),
                    groups=groups,
                    modified_at=modified,
                )
            )
    return chunks


@dataclass(frozen=True)
class FakeStatus:
    index: str
    version: str | None
    loaded_at: datetime | None
    reranker: str | None = None


def _matches(chunk: Chunk, filters: SearchFilters) -> bool:
    if filters.sources is not None and chunk.source not in filters.sources:
        return False
    if filters.doc_types is not None and chunk.doc_type not in filters.doc_types:
        return False
    if filters.doc_ids is not None and chunk.doc_id not in filters.doc_ids:
        return False
    if filters.modified_from or filters.modified_to:
        if chunk.modified_at is None:
            return False
        if filters.modified_from and chunk.modified_at < filters.modified_from:
            return False
        if filters.modified_to and chunk.modified_at > filters.modified_to:
            return False
    return True


class FakeServingIndex:
    """Implements SearchService + the ServingIndex extras. Scores are word overlap; the access
    scope and filters are applied before top-k, as the real service must."""

    def __init__(self, chunks: list[Chunk], settings: Settings) -> None:
        self.warmed_up = False
        self.chunks = chunks
        self.settings = settings
        self.unavailable = False
        self.reload_calls = 0
        self.pending_version: str | None = None
        self.version = "v1"
        self.closed = False
        self.seen: list[tuple[Principal, SearchRequest]] = []
        self._lock = threading.Lock()

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        self.seen.append((principal, request))
        if self.unavailable:
            # Deliberately detailed: the API must not pass any of this to the caller.
            raise StoreUnavailableError(
                "shard /srv/citewell/indexes/default/v1 locked (WouldBlock); doc scifact-4983"
            )
        scope = scope_for(principal, self.settings.scheme, self.settings.default_groups)
        terms = set(request.query.lower().split())
        visible = [c for c in self.chunks if scope.allows_chunk(c) and _matches(c, request.filters)]
        scored = sorted(
            ((len(terms & set(c.text.lower().split())), c) for c in visible),
            key=lambda pair: -pair[0],
        )[: request.k]
        results = tuple(
            ScoredChunk(
                chunk=c,
                score=float(s),
                scores=ScoreBreakdown(bm25_rank=i + 1, bm25_score=float(s), fused=float(s)),
            )
            for i, (s, c) in enumerate(scored)
        )
        return SearchResult(
            results=results,
            mode=request.mode,
            reranked=False,
            rerank_note="no reranker model configured" if request.rerank else None,
            index_version=self.version,
        )

    @property
    def versions(self) -> FakeServingIndex:
        """The fake holds its own versions (``readiness`` and ``maybe_reload``)."""
        return self

    def readiness(self) -> Readiness:
        if self.unavailable or self.closed:
            return Readiness(ready=False, reason="store_unavailable", detail="fake store down")
        return Readiness(ready=True, version=self.version)

    def ready(self) -> bool:
        return self.readiness().ready

    def status(self) -> FakeStatus:
        return FakeStatus(index="default", version=self.version, loaded_at=datetime.now(UTC))

    def warm_up(self) -> None:
        self.warmed_up = True

    def maybe_reload(self) -> bool:
        with self._lock:
            self.reload_calls += 1
            if self.pending_version is None:
                return False
            self.version, self.pending_version = self.pending_version, None
            return True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def principals_file(tmp_path: Path) -> Path:
    path = tmp_path / "principals.yaml"
    body = {
        "principals": {
            "alice": {
                "clearance": "internal",
                "groups": ["engineering"],
                "api_key_sha256": hash_api_key(KEYS["alice"]),
            },
            "search-gateway": {
                "clearance": "confidential",
                "groups": ["service"],
                "api_key_sha256": hash_api_key(KEYS["gateway"]),
                "can_act_for": True,
            },
            "hrbot": {
                "clearance": "restricted",
                "groups": ["hr"],
                "api_key_sha256": hash_api_key(KEYS["hrbot"]),
            },
            "ops": {
                "clearance": "public",
                "groups": ["ops"],
                "api_key_sha256": hash_api_key(KEYS["ops"]),
                "operator": True,
            },
            "ops-gateway": {
                "clearance": "confidential",
                "groups": ["service"],
                "api_key_sha256": hash_api_key(KEYS["ops-gateway"]),
                "can_act_for": True,
                "operator": True,
            },
        }
    }
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], principals_file: Path) -> Settings:
    return make_settings(principals_file=principals_file, jwt_secret=JWT_SECRET)


@pytest.fixture
def fake_index(shared_data: Path, api_settings: Settings) -> FakeServingIndex:
    return FakeServingIndex(load_chunks(shared_data), api_settings)


@pytest.fixture
def client(api_settings: Settings, fake_index: FakeServingIndex) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, fake_index)) as test_client:
        yield test_client


def hs256_token(
    sub: str = "bob",
    clearance: str | None = "internal",
    groups: list[str] | None = None,
    expires_in: float = 300,
    secret: str = JWT_SECRET,
    **extra: Any,
) -> str:
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time() + expires_in)}
    if clearance is not None:
        claims["clearance"] = clearance
    claims["groups"] = groups if groups is not None else ["engineering"]
    claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")


def audit_lines(settings: Settings) -> list[dict[str, Any]]:
    path = settings.audit_log or settings.data_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
