"""Citation verification: pure functions over answer text and the number of given sources.

A marker is ``[n]`` or ``[n, m]``. Numbers outside ``1..n_sources`` point at nothing the model
was given: they are removed and counted. Sentences left without any valid marker are reported
as unsupported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from citewell.core.models import Frozen

MARKER_RE = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
# Same boundary rule as agent.scoring, so a quoted source sentence is never split in two.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[$•-])")
_LEADING_MARKERS_RE = re.compile(r"^((?:\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]\s*)+)")


class VerifiedSentence(Frozen):
    text: str
    citations: tuple[int, ...]


class VerifiedAnswer(Frozen):
    text: str  # with invalid markers removed
    sentences: tuple[VerifiedSentence, ...]
    removed: int  # number of invalid marker numbers dropped

    @property
    def cited(self) -> tuple[int, ...]:
        """Valid source numbers in order of first use."""
        return tuple(dict.fromkeys(n for s in self.sentences for n in s.citations))

    @property
    def unsupported(self) -> tuple[str, ...]:
        return tuple(s.text for s in self.sentences if not s.citations)


def _numbers(group: str) -> list[int]:
    """The numbers of one marker's group; one too long to name any source reads as -1 (and
    ``int`` refuses strings of over 4,300 digits)."""
    return [int(n) if len(n.strip()) <= 9 else -1 for n in re.split(r"[,;]", group)]


def markers(text: str) -> list[int]:
    """All marker numbers in ``text``, in order (duplicates kept)."""
    return [n for m in MARKER_RE.finditer(text) for n in _numbers(m.group(1))]


def split_sentences(text: str) -> list[str]:
    """Split on sentence ends and line breaks; markers after a full stop stay with the sentence
    they follow (``"Sales rose. [1] Costs fell. [2]"`` → two sentences)."""
    return [sentence for _, sentence in _line_sentences(text)[0]]


def _line_sentences(text: str) -> tuple[list[tuple[int, str]], set[int]]:
    """``split_sentences`` with the line each sentence starts on, and the lines whose words
    are in some sentence (a line of markers only is in the sentence before it)."""
    sentences: list[tuple[int, str]] = []
    used: set[int] = set()
    for i, line in enumerate(text.splitlines()):
        for piece in _SENTENCE_END_RE.split(line.strip()):
            piece = piece.strip()
            if not piece:
                continue
            lead = _LEADING_MARKERS_RE.match(piece)
            if lead and sentences:
                start, previous = sentences[-1]
                sentences[-1] = (start, f"{previous} {lead.group(1).strip()}")
                used.add(i)
                piece = piece[lead.end() :].strip()
                if not piece:
                    continue
            sentences.append((i, piece))
            if _has_content(piece):
                used.add(i)
    return sentences, used


def compose(text: str, sentences: Sequence[str | None]) -> str:
    """``text`` (a ``VerifiedAnswer``'s) with its checked sentences replaced by ``sentences``,
    in their order (None removes one), keeping its layout: a line keeps its indentation and
    its kept sentences, a line left with none goes, and a line that holds no sentence (blank,
    a table rule, a code fence) stays."""
    pieces, used = _line_sentences(text)
    starts = [line for line, piece in pieces if _has_content(piece)]
    kept: dict[int, list[str]] = {}
    for start, sentence in zip(starts, sentences, strict=True):
        if sentence is not None:
            kept.setdefault(start, []).append(sentence)
    lines: list[str] = []
    for i, line in enumerate(text.splitlines()):
        if i in kept:
            lines.append(line[: len(line) - len(line.lstrip())] + " ".join(kept[i]))
        elif i not in used:
            lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _strip_list_bullet(sentence: str) -> str:
    return re.sub(r"^(?:[-*•]|\d+[.)])\s+", "", sentence)


def verify_citations(text: str, n_sources: int) -> VerifiedAnswer:
    """Drop markers pointing outside ``1..n_sources`` and attach valid ones to sentences."""
    removed = 0

    def _rewrite(match: re.Match[str]) -> str:
        nonlocal removed
        numbers = _numbers(match.group(1))
        valid = [n for n in dict.fromkeys(numbers) if 1 <= n <= n_sources]
        removed += sum(1 for n in numbers if not 1 <= n <= n_sources)
        return "".join(f"[{n}]" for n in valid)

    cleaned = _tidy(MARKER_RE.sub(_rewrite, text))
    sentences = tuple(
        VerifiedSentence(text=s, citations=tuple(dict.fromkeys(markers(s))))
        for s in split_sentences(cleaned)
        if _has_content(s)
    )
    return VerifiedAnswer(text=cleaned, sentences=sentences, removed=removed)


def keep_citations(sentence: str, keep: set[int]) -> str:
    """``sentence`` with only the markers of the sources in ``keep``."""

    def _rewrite(match: re.Match[str]) -> str:
        numbers = _numbers(match.group(1))
        return "".join(f"[{n}]" for n in dict.fromkeys(numbers) if n in keep)

    return _tidy(MARKER_RE.sub(_rewrite, sentence))


def _tidy(text: str) -> str:
    """Tidy spaces left behind by removed markers ("rose [9]." → "rose.")."""
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)
    return re.sub(r"(?<=\S)[ \t]{2,}", " ", text).strip()  # indentation stays


def _has_content(sentence: str) -> bool:
    """A sentence worth checking: has words beyond markers and bullets, in any script (one
    without is neither checked nor reported, so it must hold no claim)."""
    bare = MARKER_RE.sub("", _strip_list_bullet(sentence))
    return bool(re.search(r"[^\W_]", bare))


# What a Markdown or HTML renderer fetches on its own (images, frames, media, styles) or offers
# to follow (links, bare addresses). A document can instruct an LLM to put what it read into
# such an address; a chat client that renders the answer then sends it to that server.
# CommonMark allows brackets and line breaks in an image's description, a line break before
# its destination and its title; a blank line ends it.
_IMAGE_RE = re.compile(
    r"!\[((?:[^\[\]]|\[[^\[\]]*\])*)\](?:\((?:[^)\n]|\n(?![ \t]*\n))*\)|\[[^\]\n]*\])"
)
_HTML_FETCHING_RE = re.compile(
    r"</?(?:img|image|picture|source|iframe|frame|video|audio|track|embed|object|link|script"
    r"|style|svg|base|meta|form|input)\b[^>]*>"
    r"|<[a-z][^>]*\b(?:src|srcset|href|background|poster|data|action|style)\s*=[^>]*>",
    re.IGNORECASE,
)
# A link reference definition: one destination, then at most a quoted title ("[1]: Leave
# Policy, section 2", a list of sources, is text).
_REFERENCE_RE = re.compile(
    r"^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*<?(\S+?)>?"
    r"(?:[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^)\n]*\)))?[ \t]*$",
    re.MULTILINE,
)
_LINK_RE = re.compile(r"\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[^)\n]*)?\)")
_TARGET_RE = re.compile(r"[:/.#?]")  # what an address has and a remark in brackets seldom does
_HOST_RE = re.compile(r"[:/\\]")  # what an address on another host needs
# A scheme-less "//" right after a word or a slash is code ("n//2"), not an address.
_ADDRESS_RE = re.compile(
    r"<?(?:\b[a-z][a-z0-9+.-]*:|(?<![\w/]))//[^\s<>()\[\]\"'`]+>?"
    r"|<?\b(?:mailto|data|javascript):[^\s<>()\[\]\"'`]+>?"
    r"|(?<![\w.@/-])www\.[^\s<>()\[\]\"'`]+",  # GFM links "www." text as it does "https://"
    re.IGNORECASE,
)
# A sentence's punctuation after a bare address is not part of it (GFM's autolinks end there).
_TRAILING = ".,;:!?*_~"


def strip_unstated_addresses(text: str, stated: str) -> tuple[str, int]:
    """``text`` without what would make a renderer fetch or offer an address that ``stated``
    (the sources' text) does not contain: images and fetching HTML always go (their alt text
    stays), links keep their words, and a bare address no source states is removed. With the
    number of things removed."""
    removed = 0

    def unstated(address: str) -> bool:
        return not address or address not in stated

    def image(match: re.Match[str]) -> str:
        nonlocal removed
        alt = match.group(1)
        if MARKER_RE.fullmatch(f"[{alt}]") and not _HOST_RE.search(match.group(0)[len(alt) + 3 :]):
            return match.group(0)  # "pay![1][2]": a sentence's "!" and its markers
        removed += 1
        return alt

    def tag(match: re.Match[str]) -> str:
        nonlocal removed
        removed += 1
        return ""

    def reference(match: re.Match[str]) -> str:
        nonlocal removed
        if not unstated(match.group(1)):
            return match.group(0)
        removed += 1
        return ""

    def link(match: re.Match[str]) -> str:
        nonlocal removed
        words, target = match.group(1), match.group(2)
        if MARKER_RE.fullmatch(f"[{words}]") or not _TARGET_RE.search(target):
            return match.group(0)  # "[1](p. 3)": a citation and a remark, not a link
        if not unstated(target):
            return match.group(0)
        removed += 1
        return words

    def address(match: re.Match[str]) -> str:
        nonlocal removed
        found = match.group(0)
        bare = found if found.endswith(">") else found.rstrip(_TRAILING)
        if not unstated(bare.strip("<>")):
            return found
        removed += 1
        return found[len(bare) :]

    text = _IMAGE_RE.sub(image, text)
    text = _HTML_FETCHING_RE.sub(tag, text)
    text = _REFERENCE_RE.sub(reference, text)
    text = _LINK_RE.sub(link, text)
    text = _ADDRESS_RE.sub(address, text)
    return text, removed
