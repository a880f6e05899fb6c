"""Lexical (BM25) retrieval with per-access-scope statistics."""

from citewell.retrieval.lexical.bm25 import BM25Index
from citewell.retrieval.lexical.tokenize import (
    DEFAULT_TOKENIZER,
    ENGLISH_STOPWORDS,
    Tokenizer,
    contextual_text,
)

__all__ = ["DEFAULT_TOKENIZER", "ENGLISH_STOPWORDS", "BM25Index", "Tokenizer", "contextual_text"]
