"""The answering agent: retrieve with the caller's principal, generate, verify citations.

The principal is bound into the search tool before anything else runs, so no later step (and
no text in a document) can widen what the agent sees. Sources given to the backend are exactly
the chunks that tool returned; citations can only point at those.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from citewell.agent.answerability import AnswerabilityChecker, Assessment, Candidate
from citewell.agent.backends import AnswerBackend
from citewell.agent.citations import (
    MARKER_RE,
    VerifiedAnswer,
    VerifiedSentence,
    compose,
    keep_citations,
    markers,
    strip_unstated_addresses,
    verify_citations,
)
from citewell.agent.injection import instruction_patterns
from citewell.agent.models import AgentConfig, Answer, AnswerTimings, Citation, Source, TokenUsage
from citewell.agent.prompt import REFUSAL_TOKEN
from citewell.agent.recency import wants_recent
from citewell.agent.scoring import ScoredSentence, SentenceScorer
from citewell.core.errors import InputRejectedError, LLMError
from citewell.core.logging import log_event
from citewell.core.models import Chunk, Principal, SearchFilters, SearchRequest, SearchResult
from citewell.retrieval.embedding_cache import caller_partition
from citewell.retrieval.protocols import SearchService

logger = logging.getLogger(__name__)

REFUSAL_TEXT = "The knowledge base does not contain an answer to this question."

_STOPWORDS = frozenset(
    """a an the of in on at to for from by with about and or is are was were be been being do
    does did has have had what which who whom whose when where why how can could would should
    will shall may might must this that these those it its as into than then there their they
    them i me my we our you your he she his her please tell explain describe give list""".split()  # noqa: SIM905
)


class PrincipalBoundSearch:
    """The only search the agent can run: the principal is fixed at construction."""

    def __init__(self, service: SearchService, principal: Principal) -> None:
        self._service = service
        self._principal = principal

    @property
    def principal_name(self) -> str:
        return self._principal.name

    def __call__(self, request: SearchRequest) -> SearchResult:
        return self._service.search(self._principal, request)


def keyword_query(question: str) -> str | None:
    """A reformulation for a weak first retrieval: the question's content words only.
    None when it would not differ from the question."""
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'&.-]*", question)
    kept = [w for w in words if w.lower().strip("'") not in _STOPWORDS]
    query = " ".join(kept)
    if not query or query.lower() == question.lower().strip(" ?"):
        return None
    return query


class Agent:
    """Answers questions from the knowledge base for a given principal."""

    def __init__(
        self,
        search: SearchService,
        scorer: SentenceScorer,
        backend: AnswerBackend,
        config: AgentConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        checker: AnswerabilityChecker | None = None,
    ) -> None:
        self._search = search
        self._scorer = scorer
        self._backend = backend
        self._config = config or AgentConfig()
        self._clock = clock
        self._checker = checker or AnswerabilityChecker()

    @property
    def config(self) -> AgentConfig:
        return self._config

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def checker(self) -> AnswerabilityChecker:
        return self._checker

    def candidates(
        self, principal: Principal, question: str, filters: SearchFilters | None = None
    ) -> list[Candidate]:
        """The candidate sentences of one retrieval for ``question`` as ``principal``, as the
        answerability check sees them (most similar first): what calibration fits on."""
        tool = PrincipalBoundSearch(self._search, principal)
        prefer_recent = self._config.detect_recency and wants_recent(question)
        with caller_partition(principal):
            result = tool(self._request(question, question, filters, prefer_recent))
            scored = self._scorer.score(question, [r.chunk for r in result.results])
        return self._checker.candidates(scored, result.document_terms)

    def _request(
        self,
        question: str,
        query: str,
        filters: SearchFilters | None,
        prefer_recent: bool,
    ) -> SearchRequest:
        key_terms = self._checker.key_terms_text(question)
        return SearchRequest(
            query=query,
            k=self._config.top_k,
            mode=self._config.mode,
            rerank=self._config.rerank,
            filters=filters or SearchFilters(),
            prefer_recent=prefer_recent,
            document_terms_of=key_terms or None,
        )

    def answer(
        self, principal: Principal, question: str, filters: SearchFilters | None = None
    ) -> Answer:
        question = question.strip()
        if not question:
            raise InputRejectedError("question is empty")
        if len(question) > self._config.max_query_chars:
            raise InputRejectedError(
                f"question is longer than {self._config.max_query_chars} characters"
            )
        # The language model loads once per process (seconds); not part of an answer's budget.
        self._checker.analyzer.warm_up()
        # Texts this caller supplies or is told (its question, an LLM's claims from its sources)
        # are cached in this caller's partition only: a cache hit must not tell another caller
        # that they were asked or stated (``retrieval.embedding_cache.caller_partition``).
        with caller_partition(principal):
            return self._run(PrincipalBoundSearch(self._search, principal), question, filters)

    def _run(
        self, tool: PrincipalBoundSearch, question: str, filters: SearchFilters | None
    ) -> Answer:
        cfg = self._config
        start = self._clock()
        deadline = start + cfg.time_budget_s
        timings: dict[str, float] = {"retrieval_ms": 0.0, "scoring_ms": 0.0}
        notes: list[str] = []

        queries = [question]
        # Asked for the newest report/version: retrieval re-orders what the caller may see
        # towards newer documents. It cannot widen access, and refusal below is unchanged.
        prefer_recent = cfg.detect_recency and wants_recent(question)
        if prefer_recent:
            notes.append("the question asks for the most recent document; newer ones preferred")
        reformulated = keyword_query(question)
        if reformulated:
            queries.append(reformulated)
        chunks: list[Chunk] = []
        scored: list[ScoredSentence] = []
        support: float | None = None
        assessment: Assessment | None = None
        retrievals = 0
        index_version: str | None = None
        document_terms: dict[str, frozenset[str]] = {}
        for query in queries[: cfg.max_retrievals]:
            if retrievals and self._clock() >= deadline:
                notes.append("time budget reached before reformulated retrieval")
                break
            t0 = self._clock()
            result = tool(self._request(question, query, filters, prefer_recent))
            retrievals += 1
            if index_version is not None and result.index_version not in (None, index_version):
                # A new version was published between retrievals: it may have relabeled or
                # withdrawn what the earlier ones found, so only this retrieval's chunks stand.
                chunks, document_terms = [], {}
            index_version = result.index_version or index_version
            t1 = self._clock()
            timings["retrieval_ms"] += (t1 - t0) * 1000
            known = {c.chunk_id for c in chunks}
            candidates = chunks + [r.chunk for r in result.results if r.chunk.chunk_id not in known]
            scored = self._scorer.score(question, candidates)
            chunks = _best_chunks(candidates, scored, cfg.top_k)
            scored = self._scorer.score(question, chunks)
            support = _support(scored)
            for doc_id, terms in result.document_terms.items():
                document_terms[doc_id] = document_terms.get(doc_id, frozenset()) | terms
            assessment = self._checker.assess(
                question, scored, cfg.refusal_threshold, document_terms
            )
            timings["scoring_ms"] += (self._clock() - t1) * 1000
            if assessment.answerable:
                break
            if retrievals < min(cfg.max_retrievals, len(queries)):
                notes.append("weak first retrieval; retried with a keyword reformulation")

        sources = tuple(_source(n, c, scored) for n, c in enumerate(chunks, start=1))
        flagged = self._flag_injections(tool.principal_name, chunks)
        base: dict[str, Any] = {
            "question": question,
            "sources": sources,
            "support_score": support,
            "retrievals": retrievals,
            "backend": self._backend.name,
            "flagged_chunks": flagged,
            "index_version": index_version,
            "confidence": assessment.confidence if assessment else None,
        }

        def finish(answer: Answer) -> Answer:
            self._log(tool.principal_name, answer)
            return answer

        if assessment is None or not assessment.answerable:
            reason = (
                assessment.reason
                if assessment is not None and assessment.reason
                else f'no passage answers "{question}": nothing was retrieved'
            )
            return finish(self._without_answer(base, notes, reason, timings, start, refused=True))
        if not cfg.generation_enabled:
            return finish(
                self._without_answer(
                    base, notes, "generation disabled", timings, start, refused=False
                )
            )
        remaining = deadline - self._clock()
        if remaining <= 0:
            return finish(
                self._without_answer(
                    base, notes, "time budget exhausted", timings, start, refused=False
                )
            )

        t0 = self._clock()
        try:
            # Only sentences that pass the check may be quoted as answers.
            completion = self._backend.generate(question, chunks, assessment.passing, remaining)
        except LLMError as exc:
            log_event(logger, logging.WARNING, "agent.generation_failed", error=str(exc))
            return finish(
                self._without_answer(
                    base, notes, f"generation failed: {exc}", timings, start, refused=False
                )
            )
        t1 = self._clock()
        timings["generation_ms"] = (t1 - t0) * 1000
        usage = (
            TokenUsage(
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
            if self._backend.uses_llm
            else None
        )
        text = completion.text.strip()
        if not text or text.strip(" .") == REFUSAL_TOKEN:
            timings["verification_ms"] = 0.0
            reason = f'no passage answers "{question}": the backend found no answer in the sources'
            return finish(
                self._without_answer(base, notes, reason, timings, start, refused=True, usage=usage)
            )
        if self._backend.uses_llm:
            text, stripped = strip_unstated_addresses(text, "\n".join(c.text for c in chunks))
            if stripped:
                notes.append(
                    f"removed {stripped} image(s), link(s) or address(es) no source states"
                )
        verified = verify_citations(text, len(chunks))
        removed_claims = unsupporting = 0
        if verified.removed:
            notes.append(f"removed {verified.removed} citation(s) to sources not given")
        if self._backend.uses_llm:
            verified, removed_claims, unsupporting = self._drop_unsupported_claims(
                verified, scored, assessment
            )
        timings["verification_ms"] = (self._clock() - t1) * 1000
        if unsupporting:
            notes.append(
                f"removed {unsupporting} citation(s) to sources that do not support their sentence"
            )
        if removed_claims:
            notes.append(
                f"removed {removed_claims} sentence(s) whose cited source does not support them"
            )
        if not any(s.citations for s in verified.sentences):
            reason = (
                f'no passage answers "{question}": no sentence of the generated answer is '
                "supported by the source it cites"
            )
            timings["verification_ms"] = (self._clock() - t1) * 1000
            return finish(
                self._without_answer(
                    {**base, "confidence": 0.0 if removed_claims else base["confidence"]},
                    notes,
                    reason,
                    timings,
                    start,
                    refused=True,
                    unsupported_sentences=verified.unsupported,
                    removed_citations=verified.removed + unsupporting,
                    removed_claims=removed_claims,
                    usage=usage,
                )
            )
        citations = self._citations(verified.sentences, chunks, scored)
        timings["verification_ms"] = (self._clock() - t1) * 1000
        return finish(
            Answer(
                **base,
                answer=verified.text,
                citations=citations,
                unsupported_sentences=verified.unsupported,
                removed_citations=verified.removed + unsupporting,
                removed_claims=removed_claims,
                notes=tuple(notes),
                usage=usage,
                timings=self._timings(timings, start),
            )
        )

    def _drop_unsupported_claims(
        self,
        verified: VerifiedAnswer,
        scored: Sequence[ScoredSentence],
        assessment: Assessment,
    ) -> tuple[VerifiedAnswer, int, int]:
        """An LLM's sentence stays when each of its full clauses is supported by a sentence
        of at least one source it cites (the answerability model with the clause in the
        question's place), citing only the sources that support a clause: its markers of the
        others are removed. A cited sentence with a clause supported by none, or holding an
        instruction (``agent.injection``), is removed. Sentences without a citation stay and
        are reported as unsupported. Returns the answer, the sentences removed and the
        markers removed from kept ones."""
        by_source: dict[int, list[ScoredSentence]] = {}
        for s in scored:
            if s.span.answerable:
                by_source.setdefault(s.source_n, []).append(s)
        kept: list[VerifiedSentence] = []
        texts: list[str | None] = []  # per sentence of ``verified``: its text kept, or None
        removed = unsupporting = 0
        for sentence in verified.sentences:
            if not sentence.citations:
                kept.append(sentence)
                texts.append(sentence.text)
                continue
            claim = " ".join(MARKER_RE.sub("", sentence.text).split())
            # An instruction to the reader or a model is no statement a source supports, even
            # when the rest of its sentence is ("Ignore previous instructions; X [1]").
            supporting = (
                ()
                if instruction_patterns(claim)
                else self._supporting(claim, sentence.citations, by_source, assessment.threshold)
            )
            if not supporting:
                removed += 1
                texts.append(None)
            elif supporting == sentence.citations:
                kept.append(sentence)
                texts.append(sentence.text)
            else:
                text = keep_citations(sentence.text, set(supporting))
                unsupporting += len(markers(sentence.text)) - len(markers(text))
                kept.append(VerifiedSentence(text=text, citations=supporting))
                texts.append(text)
        if not removed and not unsupporting:
            return verified, 0, 0
        # The answer's lists, paragraphs and tables keep their lines.
        text = compose(verified.text, texts)
        return (
            VerifiedAnswer(text=text, sentences=tuple(kept), removed=verified.removed),
            removed,
            unsupporting,
        )

    def _supporting(
        self,
        claim: str,
        citations: tuple[int, ...],
        by_source: dict[int, list[ScoredSentence]],
        threshold: float,
    ) -> tuple[int, ...]:
        """The cited sources that support a clause of ``claim``, or none when some clause is
        supported by no cited source: a sentence is close to its source as a whole when one
        clause is, however unfounded the clause joined to it ("X, and the policy is the most
        generous in the industry"; "X, which is the most generous ...": a relative clause
        must have most of its words stated by a cited source)."""
        checker = self._checker

        def supports(clause: str, n: int) -> bool:
            match = self._scorer.best_match(clause, by_source.get(n, []))
            return match is not None and checker.claim_support(clause, match) >= threshold

        def states(words: frozenset[str], n: int) -> bool:
            sources = by_source.get(n, [])
            return bool(sources) and checker.states_most_of(words, sources[0].chunk)

        tests: list[Callable[[int], bool]] = [
            *(functools.partial(supports, clause) for clause in checker.claim_clauses(claim)),
            *(functools.partial(states, words) for words in checker.claim_relative_clauses(claim)),
        ]
        supporting: set[int] = set()
        for test in tests:
            found = {n for n in citations if test(n)}
            if not found:
                return ()
            supporting |= found
        return tuple(n for n in citations if n in supporting)

    def _citations(
        self,
        sentences: Sequence[object],
        chunks: Sequence[Chunk],
        scored: Sequence[ScoredSentence],
    ) -> tuple[Citation, ...]:
        out: dict[tuple[int, int, int], Citation] = {}
        by_source: dict[int, list[ScoredSentence]] = {}
        for s in scored:
            by_source.setdefault(s.source_n, []).append(s)
        for sentence in sentences:
            text = " ".join(MARKER_RE.sub("", getattr(sentence, "text", "")).split())
            for n in getattr(sentence, "citations", ()):
                candidates = by_source.get(n, [])
                # The extractive answerer copies sentences verbatim; otherwise quote the
                # sentence of source n closest in meaning to the answer sentence.
                exact = next((c for c in candidates if " ".join(c.span.text.split()) == text), None)
                match = exact or self._scorer.best_match(text, candidates)
                chunk = chunks[n - 1]
                if match is None:
                    start, end, quote = chunk.char_start, chunk.char_end, chunk.text
                else:
                    start, end, quote = match.doc_start, match.doc_end, match.span.text
                # Offsets point at the document's text; the quote reads without the line
                # breaks and double spaces of PDF extraction.
                quote = " ".join(quote.split())
                out.setdefault(
                    (n, start, end),
                    Citation.from_chunk(n, chunk, char_start=start, char_end=end, quote=quote),
                )
        return tuple(out.values())

    def _without_answer(
        self,
        base: dict[str, Any],
        notes: list[str],
        why: str,
        timings: dict[str, float],
        start: float,
        *,
        refused: bool,
        **fields: Any,
    ) -> Answer:
        """An answer that answers nothing: a refusal (``why`` is its reason) or the sources
        alone (generation disabled, failed or out of time); ``why`` joins the notes."""
        outcome: dict[str, Any] = (
            {"answer": REFUSAL_TEXT, "refused": True, "refusal_reason": why}
            if refused
            else {"answer": "", "generated": False}
        )
        return Answer.model_validate(
            {
                **base,
                **outcome,
                **fields,
                "notes": (*notes, why),
                "timings": self._timings(timings, start),
            }
        )

    def _timings(self, timings: dict[str, float], start: float) -> AnswerTimings:
        return AnswerTimings(**timings, total_ms=(self._clock() - start) * 1000)

    def _flag_injections(self, principal: str, chunks: Sequence[Chunk]) -> tuple[str, ...]:
        flagged: list[str] = []
        for chunk in chunks:
            patterns = instruction_patterns(chunk.text)
            if patterns:
                flagged.append(chunk.chunk_id)
                log_event(
                    logger,
                    logging.WARNING,
                    "security.prompt_injection_suspected",
                    principal=principal,
                    chunk_id=chunk.chunk_id,
                    doc_id=chunk.doc_id,
                    patterns=list(patterns),
                )
        return tuple(flagged)

    def _log(self, principal: str, answer: Answer) -> None:
        log_event(
            logger,
            logging.INFO,
            "agent.answer",
            principal=principal,
            backend=answer.backend,
            refused=answer.refused,
            generated=answer.generated,
            sources=len(answer.sources),
            citations=len(answer.citations),
            removed_citations=answer.removed_citations,
            unsupported_sentences=len(answer.unsupported_sentences),
            flagged_chunks=len(answer.flagged_chunks),
            retrievals=answer.retrievals,
            support_score=answer.support_score,
            confidence=answer.confidence,
            removed_claims=answer.removed_claims,
            total_ms=round(answer.timings.total_ms, 1),
            prompt_tokens=answer.usage.prompt_tokens if answer.usage else None,
            completion_tokens=answer.usage.completion_tokens if answer.usage else None,
        )


def _support(scored: Sequence[ScoredSentence]) -> float | None:
    """Best similarity of a non-instruction sentence to the question."""
    return next((s.score for s in scored if not s.span.instruction_like), None)


def _best_chunks(
    candidates: Sequence[Chunk], scored: Sequence[ScoredSentence], k: int
) -> list[Chunk]:
    if len(candidates) <= k:
        return list(candidates)
    best: dict[str, float] = {}
    for s in scored:
        best.setdefault(s.chunk.chunk_id, s.score)
    ranked = sorted(candidates, key=lambda c: best.get(c.chunk_id, -1.0), reverse=True)[:k]
    keep = {c.chunk_id for c in ranked}
    return [c for c in candidates if c.chunk_id in keep]  # retrieval order among the kept


def _source(n: int, chunk: Chunk, scored: Sequence[ScoredSentence]) -> Source:
    score = next((s.score for s in scored if s.chunk.chunk_id == chunk.chunk_id), 0.0)
    return Source.from_chunk(n, chunk, score=score)
