"""Small real implementations of the retrieval protocols for agent unit tests."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence

import numpy as np

from citewell.core.models import (
    Chunk,
    ClassificationScheme,
    Principal,
    ScoreBreakdown,
    ScoredChunk,
    SearchRequest,
    SearchResult,
)
from citewell.retrieval.access import enforce, scope_for

DIM = 256
_WORD = re.compile(r"[a-z0-9]+")
_STOP = {"the", "a", "of", "is", "what", "was", "in", "and", "to", "did", "how", "which", "for"}


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class HashingEmbedder:
    """Bag-of-words hashed into 256 dimensions: cosine = word overlap, deterministic."""

    cache_key = "hashing-256"
    dimension = DIM

    def __init__(self) -> None:
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(DIM, dtype=np.float32)
        for w in _words(text):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, DIM), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


SCHEME = ClassificationScheme()


def make_chunk(doc_id: str, text: str, classification: str = "public", groups=("everyone",)):
    return Chunk(
        chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, doc_id + text)),
        doc_id=doc_id,
        chunk_index=0,
        text=text,
        title=doc_id.title(),
        source="test",
        source_uri=f"file:///docs/{doc_id}.md",
        doc_type="md",
        page=1,
        char_start=100,
        char_end=100 + len(text),
        classification=classification,
        classification_rank=SCHEME.rank(classification),
        groups=tuple(groups),
    )


class FakeSearch:
    """Word-overlap search that applies the access scope before top-k, like the real one."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self.requests: list[tuple[Principal, SearchRequest]] = []

    def search(self, principal: Principal, request: SearchRequest) -> SearchResult:
        self.requests.append((principal, request))
        scope = scope_for(principal, SCHEME)
        visible = [c for c in self.chunks if scope.allows_chunk(c)]
        q = set(_words(request.query))
        scored = [(len(q & set(_words(c.text))), c) for c in visible]
        hits = [
            ScoredChunk(chunk=c, score=float(s), scores=ScoreBreakdown(bm25_score=float(s)))
            for s, c in sorted(scored, key=lambda x: -x[0])
            if s > 0
        ][: request.k]
        return SearchResult(
            results=tuple(enforce(scope, hits)),
            mode=request.mode,
            reranked=False,
            index_version="v1",
        )
