"""Answer and citation quality on a golden question set, run as a principal.

Metrics (over the questions the principal may ask; see :class:`AnswersEvalReport`):

- ``correct_source_rate``: answerable questions whose answer cites an expected source document.
- ``citation_coverage``: answer sentences that carry a valid citation marker.
- ``citation_precision``: (sentence, cited source) pairs whose cited text supports the sentence,
  according to the judge named in ``judge``: the index's cross-encoder when one is configured or
  trained, else an embedding-similarity proxy with a calibrated threshold.
- ``refusal_rate``: unanswerable questions the agent refused; ``false_refusal_rate``: answerable
  questions it refused.
- questions *not answerable for this user*: answerable in the corpus, but none of their expected
  documents is visible to the evaluating principal (``retrieval.access``). The product promises
  never to answer from such documents, so they are counted apart (and their refusals are not
  false refusals); whether an expected document exists is not told apart from it being hidden.
- latency of a whole answer (retrieval, scoring, generation, verification).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from citewell.agent.agent import Agent
from citewell.agent.citations import MARKER_RE, verify_citations
from citewell.agent.factory import build_agent
from citewell.agent.models import Answer
from citewell.core.errors import EvaluationError
from citewell.core.logging import log_event
from citewell.core.models import Frozen, Principal, SearchRequest
from citewell.core.settings import Settings
from citewell.evaluation.golden_set import GoldenQuestion, matches_expected
from citewell.evaluation.metrics import mean, percentile
from citewell.evaluation.published import read_published_manifest
from citewell.retrieval.access import scope_for
from citewell.retrieval.factory import choose_index_reranker
from citewell.retrieval.index import IndexLayout
from citewell.retrieval.protocols import Embedder, Reranker, SearchService
from citewell.retrieval.service import ServingIndex

logger = logging.getLogger(__name__)

# Cosine similarity (MiniLM-L6) between an answer sentence and the cited source sentence at or
# above which the sentence counts as supported. Calibrated on RGB en_fact (claim = query +
# answer vs 395 positive / 594 negative passages, maximising balanced accuracy): threshold
# 0.645, balanced accuracy 0.717; passages stating the counterfactual answer still pass 29.6%
# (similarity cannot see contradiction). Reproduce: python -m benchmarks.answers_eval
# calibrate-judge.
EMBEDDING_JUDGE_THRESHOLD = 0.645
# A cross-encoder's logit above 0 (probability above 0.5) counts as support.
CROSS_ENCODER_JUDGE_THRESHOLD = 0.0
RETRIEVAL_DEPTH = 10  # chunks per question whose documents count as "retrieved" for coverage


class CitationJudge(Protocol):
    """Decides whether a cited passage supports an answer sentence."""

    @property
    def name(self) -> str:
        """What judged, for the report (e.g. ``cross-encoder:<model>``)."""
        ...

    @property
    def threshold(self) -> float:
        """Scores at or above this count as support."""
        ...

    def score(self, sentence: str, passages: Sequence[str]) -> list[float]:
        """One support score per passage."""
        ...


class CrossEncoderJudge:
    def __init__(
        self, reranker: Reranker, threshold: float = CROSS_ENCODER_JUDGE_THRESHOLD
    ) -> None:
        self._reranker = reranker
        self._threshold = threshold

    @property
    def name(self) -> str:
        return f"cross-encoder:{self._reranker.name}"

    @property
    def threshold(self) -> float:
        return self._threshold

    def score(self, sentence: str, passages: Sequence[str]) -> list[float]:
        return [float(s) for s in self._reranker.score(sentence, passages)]


class EmbeddingJudge:
    """Entailment proxy: cosine similarity of sentence and passage embeddings. It cannot tell a
    passage that contradicts a sentence from one that supports it (similar wording scores high),
    so it overestimates precision on near-miss citations."""

    def __init__(self, embedder: Embedder, threshold: float = EMBEDDING_JUDGE_THRESHOLD) -> None:
        self._embedder = embedder
        self._threshold = threshold

    @property
    def name(self) -> str:
        return f"embedding-similarity:{self._embedder.cache_key}"

    @property
    def threshold(self) -> float:
        return self._threshold

    def score(self, sentence: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        query = self._embedder.embed_documents([sentence])[0]
        vectors = self._embedder.embed_documents(list(passages))
        return [float(v) for v in np.asarray(vectors @ query)]


def default_judge(settings: Settings, index: str | None, embedder: Embedder) -> CitationJudge:
    """The index's cross-encoder (configured or trained) when there is one, else the embedding
    proxy."""
    # The factory's choice for the index, gated: a reranker that failed its gate never judges.
    choice = choose_index_reranker(settings, IndexLayout(settings, index))
    if choice.reranker is None:
        log_event(logger, logging.INFO, "eval.judge_embedding_proxy", reason=choice.note)
        return EmbeddingJudge(embedder)
    return CrossEncoderJudge(choice.reranker)


class LatencyStats(Frozen):
    p50: float
    p95: float
    mean: float


class QuestionResult(Frozen):
    question: str
    answerable: bool
    refused: bool
    generated: bool
    cited_expected: bool | None  # None: the question names no expected source
    sentences: int
    cited_sentences: int
    citations_judged: int
    citations_supported: int
    latency_ms: float
    retrieved_doc_ids: tuple[str, ...]  # documents of the top chunks (coverage)
    cited_doc_ids: tuple[str, ...]
    cited_titles: tuple[str, ...]  # visible to the evaluating principal by construction
    # False: no expected document is visible to the principal (absent or outside its access).
    answerable_for_user: bool = True


class AnswersEvalReport(Frozen):
    index: str
    index_version: str | None
    principal: str
    clearance: str
    golden_set: str
    n_questions: int  # asked (after skipping those above the principal's clearance)
    n_answerable: int
    n_unanswerable: int
    n_skipped: int  # golden questions whose min_clearance is above the principal's
    n_not_answerable_for_user: int = 0  # answerable, but no expected document visible
    not_answerable_refused_rate: float | None = None  # of those, refused (should be all)
    correct_source_rate: float | None
    citation_coverage: float | None
    citation_precision: float | None
    refusal_rate: float | None
    false_refusal_rate: float | None
    judge: str
    judge_threshold: float
    backend: str
    latency_ms: LatencyStats
    questions: tuple[QuestionResult, ...]
    finished_at: datetime

    def metrics(self) -> dict[str, float | None]:
        """The headline numbers, as scripts read them."""
        return {
            "correct_source_rate": self.correct_source_rate,
            "citation_coverage": self.citation_coverage,
            "citation_precision": self.citation_precision,
            "refusal_rate": self.refusal_rate,
            "false_refusal_rate": self.false_refusal_rate,
            "latency_p50_ms": self.latency_ms.p50,
            "latency_p95_ms": self.latency_ms.p95,
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def judge_answer(answer: Answer, judge: CitationJudge) -> tuple[int, int, int, int]:
    """(sentences, cited sentences, citations judged, citations supported) of one answer.

    Each (sentence, marker n) pair is judged against the quotes the agent attached to source n
    (the sentence of that chunk it matched); the best quote decides."""
    if answer.refused or not answer.generated or not answer.answer:
        return 0, 0, 0, 0
    verified = verify_citations(answer.answer, len(answer.sources))
    quotes: dict[int, list[str]] = {}
    for citation in answer.citations:
        quotes.setdefault(citation.n, []).append(citation.quote)
    judged = supported = 0
    for sentence in verified.sentences:
        text = " ".join(MARKER_RE.sub("", sentence.text).split())
        for n in sentence.citations:
            judged += 1
            passages = quotes.get(n, [])
            scores = judge.score(text, passages) if passages else []
            supported += bool(scores) and max(scores) >= judge.threshold
    cited = sum(1 for s in verified.sentences if s.citations)
    return len(verified.sentences), cited, judged, supported


def _allowed(question: GoldenQuestion, principal: Principal, settings: Settings) -> bool:
    if question.min_clearance is None:
        return True
    scheme = settings.scheme
    return scheme.rank(question.min_clearance) <= scheme.rank(principal.clearance)


def visible_documents(
    settings: Settings, index: str, principal: Principal
) -> list[tuple[str, str]] | None:
    """(source URI, title) of the published documents ``principal`` may see, by the one access
    decision (``retrieval.access``); None when the index has no published version."""
    published = read_published_manifest(settings, index)
    if published is None:
        return None
    scope = scope_for(principal, settings.scheme, settings.default_groups)
    return [
        (doc.source_uri, doc.title)
        for doc in published.documents
        if doc.labelled and scope.allows(doc.classification_rank, doc.groups)
    ]


def _answerable_for(question: GoldenQuestion, visible: Sequence[tuple[str, str]] | None) -> bool:
    if visible is None or not question.answerable or not question.expected_sources:
        return True
    return any(matches_expected(question, uri, title) for uri, title in visible)


def allowed_questions(
    questions: Sequence[GoldenQuestion], principal: Principal, settings: Settings
) -> list[GoldenQuestion]:
    """The questions within ``principal``'s clearance; an error when none is."""
    asked = [q for q in questions if _allowed(q, principal, settings)]
    if not asked:
        raise EvaluationError("no golden question is within the evaluating principal's clearance")
    return asked


def evaluate_answers(
    settings: Settings,
    principal: Principal,
    questions: Sequence[GoldenQuestion],
    index: str | None = None,
    *,
    golden_set: str = "",
    service: SearchService | None = None,
    embedder: Embedder | None = None,
    agent: Agent | None = None,
    judge: CitationJudge | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnswersEvalReport:
    """Ask every question as ``principal`` against the published index and score the answers.

    ``service``/``embedder``/``agent``/``judge`` default to the index's own (opened here and
    closed afterwards)."""
    index_name = index or settings.index
    asked = [q for q in questions if _allowed(q, principal, settings)]
    if not asked:
        raise EvaluationError("no golden question is within the evaluating principal's clearance")
    visible = visible_documents(settings, index_name, principal)
    owned: ServingIndex | None = None
    if service is None:
        owned = ServingIndex(settings, index_name, embedder=embedder)
        service = owned
    try:
        emb = embedder or (owned.embedder if owned is not None else None)
        if agent is None or judge is None:
            if emb is None:
                raise EvaluationError("pass an embedder when passing a search service")
            indexed = settings.model_copy(update={"index": index_name})
            agent = agent or build_agent(indexed, service, emb)
            judge = judge or default_judge(settings, index_name, emb)
        _check_question_lengths(questions, asked, agent.config.max_query_chars)
        results: list[QuestionResult] = []
        version: str | None = None
        for i, question in enumerate(asked, start=1):
            t0 = time.perf_counter()
            answer = agent.answer(principal, question.question)
            latency = (time.perf_counter() - t0) * 1000
            version = version or answer.index_version
            retrieved = service.search(
                principal,
                SearchRequest(
                    query=question.question,
                    k=RETRIEVAL_DEPTH,
                    mode=settings.default_mode,
                    rerank=False,
                ),
            )
            sentences, cited, judged, supported = judge_answer(answer, judge)
            cited_expected = (
                any(matches_expected(question, c.source_uri, c.title) for c in answer.citations)
                if question.expected_sources
                else None
            )
            results.append(
                QuestionResult(
                    question=question.question,
                    answerable=question.answerable,
                    refused=answer.refused,
                    generated=answer.generated,
                    cited_expected=cited_expected,
                    sentences=sentences,
                    cited_sentences=cited,
                    citations_judged=judged,
                    citations_supported=supported,
                    latency_ms=latency,
                    retrieved_doc_ids=tuple(
                        dict.fromkeys(r.chunk.doc_id for r in retrieved.results)
                    ),
                    cited_doc_ids=tuple(dict.fromkeys(c.doc_id for c in answer.citations)),
                    cited_titles=tuple(dict.fromkeys(c.title for c in answer.citations)),
                    answerable_for_user=_answerable_for(question, visible),
                )
            )
            if progress is not None:
                progress(i, len(asked))
    finally:
        if owned is not None:
            owned.close()
    report = _summarise(
        results,
        index=index_name,
        version=version,
        principal=principal,
        golden_set=golden_set,
        skipped=len(questions) - len(asked),
        judge=judge,
        backend=agent.backend_name,
    )
    log_event(
        logger,
        logging.INFO,
        "eval.answers",
        index=index_name,
        principal=principal.name,
        questions=report.n_questions,
        judge=report.judge,
        **{k: (round(v, 4) if v is not None else None) for k, v in report.metrics().items()},
    )
    return report


def _check_question_lengths(
    questions: Sequence[GoldenQuestion], asked: Sequence[GoldenQuestion], max_chars: int
) -> None:
    """Refuse a golden question to be ``asked`` that the agent would reject, before asking any
    (the agent's error names no question, and would come after every question before it);
    numbered as in the golden set."""
    to_ask = {id(q) for q in asked}
    for number, question in enumerate(questions, start=1):
        if id(question) in to_ask and len(question.question.strip()) > max_chars:
            raise EvaluationError(
                f"golden question {number} ({question.question[:40]!r}...) is longer than "
                f"{max_chars} characters"
            )


def _summarise(
    results: Sequence[QuestionResult],
    *,
    index: str,
    version: str | None,
    principal: Principal,
    golden_set: str,
    skipped: int,
    judge: CitationJudge,
    backend: str,
) -> AnswersEvalReport:
    answerable = [r for r in results if r.answerable and r.answerable_for_user]
    not_for_user = [r for r in results if r.answerable and not r.answerable_for_user]
    unanswerable = [r for r in results if not r.answerable]
    with_expected = [r for r in answerable if r.cited_expected is not None]
    latencies = [r.latency_ms for r in results]
    return AnswersEvalReport(
        index=index,
        index_version=version,
        principal=principal.name,
        clearance=principal.clearance,
        golden_set=golden_set,
        n_questions=len(results),
        n_answerable=len(answerable),
        n_unanswerable=len(unanswerable),
        n_skipped=skipped,
        n_not_answerable_for_user=len(not_for_user),
        not_answerable_refused_rate=_ratio(sum(r.refused for r in not_for_user), len(not_for_user)),
        correct_source_rate=_ratio(
            sum(bool(r.cited_expected) for r in with_expected), len(with_expected)
        ),
        citation_coverage=_ratio(
            sum(r.cited_sentences for r in results), sum(r.sentences for r in results)
        ),
        citation_precision=_ratio(
            sum(r.citations_supported for r in results), sum(r.citations_judged for r in results)
        ),
        refusal_rate=_ratio(sum(r.refused for r in unanswerable), len(unanswerable)),
        false_refusal_rate=_ratio(sum(r.refused for r in answerable), len(answerable)),
        judge=judge.name,
        judge_threshold=judge.threshold,
        backend=backend,
        latency_ms=LatencyStats(
            p50=percentile(latencies, 50), p95=percentile(latencies, 95), mean=mean(latencies)
        ),
        questions=tuple(results),
        finished_at=datetime.now(UTC),
    )
