"""Vector store implementations of :class:`retrieval.protocols.VectorStore`.

``retrieval.stores.edge.EdgeVectorStore`` (embedded, qdrant-edge) and
``retrieval.stores.qdrant.QdrantVectorStore`` (qdrant-client: remote server, or local mode for
tests). Backend filters are built only in :mod:`.filters`. Import the module you need: the
qdrant-client import alone takes seconds, and the embedded default does not need it.
"""
