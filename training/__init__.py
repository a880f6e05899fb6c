"""Model adaptation: fine-tuning the embedder and training reranker students on an index's
judged collection. Measuring lives in ``evaluation``; model runtime in ``retrieval``."""
