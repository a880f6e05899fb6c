"""Tokenizer for BM25: NFKC-normalised lowercase Unicode word tokens (Chinese and Japanese as
overlapping character pairs), English stopwords removed, optional Snowball English stemming
(PyStemmer).

Stemming was chosen by measurement (``benchmarks/bm25.py``): on SciFact test it moves BM25
nDCG@10 from 0.661 (no stemming) to 0.674 at k1=0.9, b=0.4 (title + text).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# NLTK's English stopword list (the usual choice for BM25 baselines), minus the apostrophe forms,
# which the word pattern splits anyway ("don't" → "don", "t").
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom
    this that these those am is are was were be been being have has had having do does did
    doing a an the and but if or because as until while of at by for with about against between
    into through during before after above below to from up down in out on off over under again
    further then once here there when where why how all any both each few more most other some
    such no nor not only own same so than too very s t can will just don should now d ll m o re
    ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn
    weren won wouldn
    """.split()  # noqa: SIM905 (a word list reads better than 150 quoted strings)
)

# \w is Unicode-aware for str patterns: letters and digits of any script, plus underscore.
_WORD = re.compile(r"\w+")
# Scripts written without spaces between words (Han, Hiragana, Katakana) and Hangul, as
# Lucene's CJKBigramFilter takes them; a word's runs of these become overlapping pairs.
_CJK_CHARS = (
    "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\U00020000-\U0003134f"
)
_CJK = re.compile(f"[{_CJK_CHARS}]")
_CJK_OR_NOT = re.compile(f"[{_CJK_CHARS}]+|[^{_CJK_CHARS}]+")


class Tokenizer:
    """Turns text into BM25 terms. Cheap to construct; the stemmer is created on first use.

    ``name`` identifies the exact token stream, so an index saved with one tokenizer is never
    queried with another.
    """

    def __init__(
        self,
        stem: bool = True,
        stopwords: frozenset[str] = ENGLISH_STOPWORDS,
        *,
        cache: bool = True,
        legacy: bool = False,
    ) -> None:
        self._stem = stem
        self._stopwords = stopwords
        self._cache = cache
        # NFKC: one token for a word whatever its Unicode form. PDF text keeps ligatures
        # ("\ufb01le"), macOS and some editors write accents decomposed, East Asian input
        # methods type full-width letters and digits; unnormalised, none matched the plain word.
        # CJK pairs: a run of Chinese or Japanese was one token, found only by the whole run.
        # ``legacy``: neither, the stream of indexes built before them.
        self._legacy = legacy
        self._stemmer: Any = None

    def uncached(self) -> Tokenizer:
        """The same token stream without the stemmer's word cache. Queries use it: a cache
        filled while indexing holds the words of every document, so a cached stem (faster)
        would tell a caller that some document, visible or not, contains the word."""
        return Tokenizer(self._stem, self._stopwords, cache=False, legacy=self._legacy)

    def legacy_stream(self) -> Tokenizer:
        """The token stream of indexes built before NFKC normalisation and CJK pairs (read as
        they were built: their postings hold the words that way)."""
        return Tokenizer(self._stem, self._stopwords, cache=self._cache, legacy=True)

    @property
    def name(self) -> str:
        stops = "stop-en" if self._stopwords == ENGLISH_STOPWORDS else "stop-custom"
        words = "unicode-words" if self._legacy else "nfkc+unicode-words+cjk-bigrams"
        return f"{words}+lower+{stops}" + ("+snowball-en" if self._stem else "")

    def __call__(self, text: str) -> list[str]:
        if self._legacy:
            words = _WORD.findall(text.lower())
        else:
            text = unicodedata.normalize("NFKC", text).lower()
            words = _WORD.findall(text)
            if _CJK.search(text):  # one scan of the text, not one per word
                words = _cjk_pairs(words)
        tokens = [t for t in words if t not in self._stopwords]
        if not self._stem:
            return tokens
        if self._stemmer is None:
            import Stemmer  # PyStemmer: C Snowball stemmer with a built-in word cache

            stemmer = Stemmer.Stemmer("english")
            if not self._cache:
                stemmer.maxCacheSize = 0
            self._stemmer = stemmer
        stemmed: list[str] = self._stemmer.stemWords(tokens)
        return stemmed


def _cjk_pairs(words: list[str]) -> list[str]:
    """``words`` with each run of CJK characters inside a word as its overlapping character
    pairs (a lone character as itself), the rest of the word as before."""
    out: list[str] = []
    for word in words:
        if not _CJK.search(word):
            out.append(word)
            continue
        for run in _CJK_OR_NOT.findall(word):
            if len(run) > 1 and _CJK.match(run):
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
            else:
                out.append(run)
    return out


DEFAULT_TOKENIZER = Tokenizer()


def contextual_text(context: str, text: str) -> str:
    """What is embedded and BM25-indexed for a chunk: its contextual header (title, file name,
    section), if any, on a line before its verbatim text."""
    return f"{context}\n{text}" if context else text
