"""Vector store implementations of :class:`retrieval.protocols.VectorStore`.

``EdgeVectorStore`` (embedded, qdrant-edge) and ``QdrantVectorStore`` (qdrant-client: remote
server, or local mode for tests). Backend filters are built only in :mod:`.filters`.
"""

from retrieval.stores.edge import EdgeVectorStore
from retrieval.stores.qdrant import QdrantVectorStore

__all__ = ["EdgeVectorStore", "QdrantVectorStore"]
