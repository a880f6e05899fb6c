"""Answer backends: the offline extractive answerer and an adapter for any :class:`LLM`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from citewell.agent.citations import MARKER_RE
from citewell.agent.llm import LLM, Completion
from citewell.agent.prompt import build_messages
from citewell.agent.scoring import ScoredSentence
from citewell.core.errors import InvalidArgumentError
from citewell.core.models import Chunk


@runtime_checkable
class AnswerBackend(Protocol):
    """Writes an answer citing sources as ``[n]`` (n = position in ``sources`` + 1)."""

    @property
    def name(self) -> str:
        """For reports and audit."""
        ...

    @property
    def uses_llm(self) -> bool:
        """Whether token usage is meaningful."""
        ...

    def generate(
        self,
        question: str,
        sources: Sequence[Chunk],
        sentences: Sequence[ScoredSentence],
        timeout_s: float,
    ) -> Completion:
        """The answer text; ``sentences`` are the sources' sentences scored, best first."""
        ...


class ExtractiveAnswerer:
    """Offline default: the most relevant source sentences, verbatim, each with its marker.

    It never interprets source text, so instructions inside documents cannot steer it; sentences
    that look like instructions are skipped because they are not statements of fact.
    """

    name = "extractive"
    uses_llm = False

    def __init__(self, max_sentences: int = 3, margin: float = 0.12) -> None:
        if max_sentences < 1 or margin < 0:
            raise InvalidArgumentError("max_sentences must be >= 1 and margin >= 0")
        self._max_sentences = max_sentences
        self._margin = margin

    def generate(
        self,
        question: str,
        sources: Sequence[Chunk],
        sentences: Sequence[ScoredSentence],
        timeout_s: float,
    ) -> Completion:
        usable = [s for s in sentences if not s.span.instruction_like]
        if not usable:
            return Completion(text="")
        floor = usable[0].score - self._margin
        picked: list[ScoredSentence] = []
        seen: set[str] = set()
        for sentence in usable:
            key = " ".join(sentence.span.text.lower().split())
            if sentence.score < floor or len(picked) >= self._max_sentences:
                break
            if key in seen:
                continue
            seen.add(key)
            picked.append(sentence)
        lines = []
        for sentence in picked:
            # Bracketed numbers inside a quote (footnotes) would read as citation markers.
            text = " ".join(MARKER_RE.sub("", sentence.span.text).split())
            lines.append(f"{text} [{sentence.source_n}]")
        return Completion(text="\n".join(lines))


class LLMBackend:
    """Prompts an :class:`LLM` with the sources quoted as data."""

    uses_llm = True

    def __init__(self, llm: LLM) -> None:
        self._llm = llm

    @property
    def name(self) -> str:
        return self._llm.name

    def generate(
        self,
        question: str,
        sources: Sequence[Chunk],
        sentences: Sequence[ScoredSentence],
        timeout_s: float,
    ) -> Completion:
        messages = build_messages(
            question, [(n, c.title, c.text) for n, c in enumerate(sources, start=1)]
        )
        return self._llm.complete(messages, timeout_s=timeout_s)
