"""Access labels for a folder: ``citewell.labels.yaml`` rules, per-file sidecars, markings.

The folder-root file::

    default: {classification: internal, groups: [everyone]}
    rules:                      # globs relative to the folder, first match wins
      - {match: "finance/**", classification: confidential, groups: [finance]}

A sidecar ``<file>.labels.yaml`` next to a document holds the same two keys. Each key is taken
from the most specific place that sets it: sidecar, then the first matching rule, then the
default. A document for which neither key resolves is *unlabelled*: it gets the most restrictive
level and no groups (visible to nobody) and is reported.

Both files are read with the project's one YAML loader (``core.config_files``: duplicate keys are
errors) and validated by pydantic models that forbid unknown keys and wrong types; every error
names the file and line. A sidecar that cannot be read, parsed or validated (or is a symlink)
raises :class:`LabelError`: the pipeline then withdraws the document from serving until it is
fixed, because its label can no longer be determined.

*Markings* found in the document itself (a classification banner, and any further
:class:`MarkingReader` such as an embedded sensitivity label) raise the level, never lower it;
the most restrictive marking of all readers wins (:meth:`LabelRules.strongest_marking`).

Purview sensitivity labels the documents carry (``ingestion.sensitivity``) are mapped by two
more keys; :func:`apply_sensitivity` is the one place they meet the label above, and the most
restrictive wins::

    sensitivity_labels:         # label GUID -> label; unmapped labels: visible to nobody
      "f42aa342-8706-4288-bd11-ebb85995028c": {classification: confidential, groups: [finance]}
    sensitivity_label_policy:
      tenants: ["9c1b5a5e-1234-4b9a-9d7e-0123456789ab"]   # SiteIds whose labels are trusted
      names: {}                 # optional: display name -> label, for GUIDs not mapped above
      allow_downgrade: false    # a label removed/lowered after indexing keeps the earlier one
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Annotated, Protocol

from pydantic import StrictStr, StringConstraints, ValidationError, field_validator

from citewell.core.config_files import YamlDocument, load_yaml, validate_yaml
from citewell.core.errors import LabelError, UnknownClassificationError
from citewell.core.logging import log_event
from citewell.core.models import AccessLabel, ClassificationScheme, Frozen
from citewell.ingestion.models import ParsedDocument, ResolvedLabel, SourceLines
from citewell.ingestion.sensitivity import (
    SensitivityDecision,
    SensitivityPolicy,
)
from citewell.ingestion.text_encoding import decode_text

logger = logging.getLogger(__name__)

LABELS_FILE = "citewell.labels.yaml"
SIDECAR_SUFFIX = ".labels.yaml"
# ".yml" spellings are refused, not ignored: an ignored sidecar would leave its document at the
# folder's (possibly lower) label.
MISSPELT_SUFFIX = ".labels.yml"

# Banner phrase → level of the default scheme. Matched case-insensitively; longer phrases are
# tried first, so "STRICTLY CONFIDENTIAL" wins over "CONFIDENTIAL".
DEFAULT_BANNERS: Mapping[str, str] = {
    "TOP SECRET": "restricted",
    "SECRET": "restricted",
    "STRICTLY CONFIDENTIAL": "restricted",
    "HIGHLY CONFIDENTIAL": "restricted",
    "RESTRICTED": "restricted",
    "CONFIDENTIAL": "confidential",
    "COMPANY CONFIDENTIAL": "confidential",
    "PROPRIETARY AND CONFIDENTIAL": "confidential",
    "FOR INTERNAL USE ONLY": "internal",
    "INTERNAL USE ONLY": "internal",
    "INTERNAL ONLY": "internal",
    "INTERNAL": "internal",
}

# Bump whenever banner or marking detection changes: it is part of the pipeline's recipe, so
# documents indexed with an older detector are parsed and labelled again on the next refresh.
# 3: a phrase followed by another word in an upper-case line is a term, not a marking.
MARKING_RULES_VERSION = 3  # 2: case-insensitive, every page, headers and footers

_Name = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]


# --- the files ------------------------------------------------------------------------------
class LabelKeys(Frozen):
    """What a default, a rule or a sidecar may set. Unknown keys and wrong types are errors."""

    classification: _Name | None = None
    groups: tuple[_Name, ...] | None = None


class LabelRuleEntry(LabelKeys):
    match: _Name

    @field_validator("match")
    @classmethod
    def _valid_glob(cls, pattern: str) -> str:
        try:
            glob_to_regex(pattern)
        except LabelError as exc:
            raise ValueError(str(exc)) from exc
        return pattern


class LabelsFile(Frozen):
    """``citewell.labels.yaml``."""

    default: LabelKeys | None = None
    rules: tuple[LabelRuleEntry, ...] = ()
    # Purview label GUID -> label, and the policy (tenants, names, downgrades); validated by
    # SensitivityPolicy (ingestion/sensitivity.py).
    sensitivity_labels: dict[str, object] | None = None
    sensitivity_label_policy: dict[str, object] | None = None


@dataclass(frozen=True)
class _Spec:
    """One place that may set a label: the keys it sets and where it was written."""

    classification: str | None
    groups: frozenset[str] | None
    origin: str


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    spec: _Spec
    folded: re.Pattern[str]  # the same glob, ignoring case

    @classmethod
    def of(cls, glob: str, spec: _Spec) -> _Rule:
        glob = _nfc(glob)
        return cls(glob_to_regex(glob), spec, glob_to_regex(glob, ignore_case=True))


def _nfc(name: str) -> str:
    """``name`` in Unicode NFC: "Führung" typed in a labels file (NFC) and a name made on macOS
    (NFD) look the same to everyone, so rules and sidecars must treat them as the same."""
    return unicodedata.normalize("NFC", name)


def _label_of(spec: _Spec | None) -> tuple[str | None, frozenset[str] | None] | None:
    return None if spec is None else (spec.classification, spec.groups)


def glob_to_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Translate a path glob: ``**`` spans directories, ``*`` and ``?`` stay within one.

    ``fnmatch`` lets ``*`` cross ``/`` and Python 3.11 has no ``PurePath.full_match``, hence this.
    An invalid pattern (``[z-a]``) raises :class:`LabelError`.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\").replace("[", "\\[")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        # DOTALL: a file name may hold a newline, and "**" must still span it (a name like
        # "board/a\nb.md" escaping a restrictive rule would fall to a lower default).
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        return re.compile("".join(out) + r"\Z", flags)
    except re.error as exc:
        raise LabelError(f"invalid glob {pattern!r}: {exc}") from exc


def _fingerprint(label: AccessLabel, labelled: bool) -> str:
    material = f"{label.classification}|{','.join(sorted(label.groups))}|{int(labelled)}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _spec(
    keys: LabelKeys,
    document: YamlDocument,
    location: tuple[str | int, ...],
    scheme: ClassificationScheme,
    what: str,
) -> _Spec:
    classification: str | None = None
    if keys.classification is not None:
        classification = keys.classification.lower()
        try:
            scheme.rank(classification)
        except UnknownClassificationError as exc:
            raise LabelError(f"{document.where((*location, 'classification'))}: {exc}") from exc
    groups = frozenset(keys.groups) if keys.groups is not None else None
    return _Spec(classification, groups, f"{what}:{document.where(location)}")


def _load(file: Path, what: str) -> YamlDocument:
    if file.is_symlink():
        # A labels file must live next to what it labels, not point elsewhere.
        raise LabelError(f"{file}: a {what} must not be a symlink")
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        raise LabelError(f"{file}: cannot read {what}: {exc}") from exc
    if not stat.S_ISREG(mode):
        # A FIFO would block the run forever on open; a device could never end.
        raise LabelError(f"{file}: the {what} is not a regular file")
    return load_yaml(file, error=LabelError, what=what)


# --- markings in the document ---------------------------------------------------------------
@dataclass(frozen=True)
class Marking:
    """A classification the document states about itself. It can only raise the label."""

    level: str
    evidence: str  # what was matched (a phrase, "Classification: X"); never surrounding text


class MarkingReader(Protocol):
    """One source of in-document markings (banners; later e.g. embedded sensitivity labels).

    Returns the most restrictive marking it finds, or None. Readers are combined by
    :meth:`LabelRules.strongest_marking`: the most restrictive marking of all wins."""

    def __call__(self, document: ParsedDocument, path: Path | None) -> Marking | None: ...


def most_restrictive_marking(
    markings: Iterable[Marking | None], scheme: ClassificationScheme
) -> Marking | None:
    best: Marking | None = None
    for marking in markings:
        if marking is not None and (
            best is None or scheme.rank(marking.level) > scheme.rank(best.level)
        ):
            best = marking
    return best


# What counts as a banner, and where (the rule, and why):
# A banner is a *line that is a marking*, not a sentence that mentions a marking word. Because a
# missed banner can leak a document while a false one only hides it from some readers, every line
# of every page is checked, but with a strict form: after stripping decoration ("*** ", "[ ]"),
# the whole line, in any case, is a banner phrase ("Confidential", "INTERNAL USE ONLY"), a phrase
# followed by a handling caveat ("Restricted - do not forward"), or a "Classification: X" line.
# Prose never has that form ("Confidential information is defined as..." is a phrase followed by
# ordinary words, so it is not a banner). In header and footer elements, and in the first and
# last lines of each page (slide, sheet) and of the document, where banners are printed, a looser
# form also counts: the phrase as one separated part of the line ("Acme Corp | Confidential |
# Page 3"), in brackets ("Subject: [Confidential] Q3 plan") or in a mostly upper-case line
# ("ACME CONFIDENTIAL"), unless negated ("NOT CONFIDENTIAL") or followed by a word that makes it
# a term ("RESTRICTED STOCK UNIT AGREEMENT"; see _ends_marking). Lines over 80 characters are never
# banners. Markup and plain-text sources are also read as written (see BannerReader.__call__).
_BANNER_MAX_LINE_CHARS = 80
_DOCUMENT_EDGE_LINES = 8  # cover page and last lines of the whole document
_PAGE_EDGE_LINES = 3  # top and bottom of every page, slide and sheet
# Curly quotes, en and em dashes, bullets, written as escapes.
_DECORATION = " \t*-=_#|[](){}<>:~.!\"'\u201c\u201d\u2018\u2019"
_PHRASE_SEPARATORS = " -\u2013\u2014:|/,;\u2022\u00b7"
_CLASSIFICATION_LINE = re.compile(
    r"^\s*(?:(?:security|data|information)\s+)?(?:classification|sensitivity(?:\s+label)?"
    r"|protective\s+marking)\s*[:=]\s*"
    r"(?P<value>[^\W\d_][\w \-\u2013\u2014/|,.]{0,60}?)\s*[.!]?\s*$",
    re.IGNORECASE,
)
# A handling caveat after a banner phrase: the whole rest of the line must be one of these.
_CAVEAT = re.compile(
    r"""(?:
        (?:please\s+)?(?:do\s+not|don'?t)\s+(?:distribute|forward|copy|share|disclose|circulate
            |print|reproduce|send|release)(?:\s+[\w-]+){0,4}
      | not\s+for\s+(?:external\s+|public\s+|further\s+|onward\s+)?(?:distribution|release
            |circulation|disclosure|sharing)(?:\s+[\w-]+){0,3}
      | not\s+to\s+be\s+(?:distributed|shared|copied|forwarded|disclosed|circulated)
            (?:\s+[\w-]+){0,3}
      | no\s+(?:external|further|onward|public)\s+(?:distribution|disclosure|sharing|circulation)
      | (?:(?:internal|official)\s+)?use\s+only | only | eyes\s+only
      | need[\s-]to[\s-]know(?:\s+only)?
      | (?:external\s+|limited\s+|internal\s+)?distribution(?:\s+(?:only|prohibited|restricted
            |limited))?
      | [\w\s-]{1,40}?\s+only
    )[.!]?""",
    re.IGNORECASE | re.VERBOSE,
)
_SEGMENT_SPLIT = re.compile(r"\s+[-/]\s+|[|\u2022\u00b7\u2013\u2014:;]|\t|\s{3,}")
_TAG_AT_START = re.compile(r"^[\[(]([^\[\]()]{1,40})[\])]")
_TAG_AT_END = re.compile(r"[\[(]([^\[\]()]{1,40})[\])]\W*$")
_NEGATION = re.compile(r"(?:\bnot|\bnon|\bun)[\s-]*$", re.IGNORECASE)


def _normal(text: str) -> str:
    return " ".join(text.strip(_DECORATION).casefold().split())


def _phrase_map(
    banners: Mapping[str, str] | None, scheme: ClassificationScheme
) -> dict[str, tuple[str, str]]:
    """casefolded phrase → (display phrase, level), longest phrase first."""
    if banners is None:
        # Defaults name levels of the default scheme; drop those a custom scheme lacks.
        chosen = {p: lvl for p, lvl in DEFAULT_BANNERS.items() if lvl in scheme.levels}
    else:
        chosen = {" ".join(p.split()).upper(): lvl.strip().lower() for p, lvl in banners.items()}
        for level in chosen.values():
            scheme.rank(level)
    ordered = sorted(chosen.items(), key=lambda kv: -len(kv[0]))
    return {phrase.casefold(): (phrase, level) for phrase, level in ordered if phrase.strip()}


# Words that keep a marking phrase a marking in an upper-case line ("CONFIDENTIAL AND
# PROPRIETARY", "ACME CONFIDENTIAL INFORMATION"); any other word makes the phrase part of a
# term: "RESTRICTED STOCK UNIT AGREEMENT", "INTERNAL CONTROL OVER FINANCIAL REPORTING".
_MARKING_CONTINUATION = re.compile(
    r"(?:and|&|information|materials?|data|documents?|communications?|business\s+information)"
    r"(?!\w)"
)


def _ends_marking(rest: str) -> bool:
    """Whether what follows a marking phrase in an upper-case line leaves it a marking: the
    end of the line, a separator ("TOP SECRET//NOFORN", "CONFIDENTIAL - DRAFT"), a handling
    caveat, or a word of :data:`_MARKING_CONTINUATION`."""
    after = rest.strip()
    if not after or not rest[0].isspace() or not after[0].isalnum():
        return True
    return bool(_CAVEAT.fullmatch(after.rstrip(".!")) or _MARKING_CONTINUATION.match(after))


def _mostly_upper(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and sum(c.isupper() for c in letters) >= 0.8 * len(letters)


class BannerReader:
    """Classification banners in the document's text (see the rule above)."""

    def __init__(self, scheme: ClassificationScheme, banners: Mapping[str, str] | None = None):
        self._scheme = scheme
        self._phrases = _phrase_map(banners, scheme)

    def __call__(self, document: ParsedDocument, path: Path | None = None) -> Marking | None:
        """Banners in the parsed document and, for markup and plain-text files, in the source:
        parsers drop HTML ``<header>``/``<footer>`` and join Markdown's soft-wrapped lines, so a
        banner line can be missing from the parsed text."""
        regions = _regions(document)
        source = document.source_lines
        # Only a markup or text file is read again (a parse made elsewhere): never a PDF's bytes.
        if source is None and path is not None and _has_source_lines(path.suffix):
            source = source_lines(path.read_bytes(), path.suffix)
        if source is not None:
            regions += [
                _Region(source.edges, edge=None),
                _Region(source.lines, edge=_DOCUMENT_EDGE_LINES),
            ]
        return self.in_regions(regions)

    def in_text(self, text: str) -> Marking | None:
        """Banners of a plain text (one unpaginated flow)."""
        return self.in_regions([_Region(_lines(text), edge=_DOCUMENT_EDGE_LINES)])

    def in_regions(self, regions: Iterable[_Region]) -> Marking | None:
        found: list[Marking | None] = []
        for region in regions:
            count = len(region.lines)
            for index, line in enumerate(region.lines):
                at_edge = region.edge is None or index < region.edge or index >= count - region.edge
                found.append(self.match_line(line, loose=at_edge))
        return most_restrictive_marking(found, self._scheme)

    def match_line(self, line: str, *, loose: bool = False) -> Marking | None:
        """The marking ``line`` is, if any; ``loose`` also accepts the forms allowed in headers,
        footers and at page edges."""
        line = line.strip()
        if not line or len(line) > _BANNER_MAX_LINE_CHARS:
            return None
        classified = _CLASSIFICATION_LINE.match(line)
        if classified:
            value = " ".join(classified.group("value").split())
            level = value.lower() if value.lower() in self._scheme.levels else None
            if level is None:
                stated = self._strict(value)
                level = stated.level if stated else None
            return Marking(level, f"Classification: {value}") if level else None
        strict = self._strict(line)
        if strict is not None or not loose:
            return strict
        for segment in _SEGMENT_SPLIT.split(line):
            entry = self._phrases.get(_normal(segment))
            if entry is not None:
                return Marking(entry[1], entry[0])
        for segment in _SEGMENT_SPLIT.split(line):
            # A tag opening or closing a part: "Subject: [CONFIDENTIAL] Q3 plan", "Plan (Internal
            # use only)"; not "a report on (internal) audits".
            tag = _TAG_AT_START.match(segment.strip()) or _TAG_AT_END.search(segment.strip())
            entry = self._phrases.get(_normal(tag.group(1))) if tag else None
            if entry is not None:
                return Marking(entry[1], entry[0])
        if _mostly_upper(line):
            text = line.casefold()
            for phrase, (display, level) in self._phrases.items():
                for hit in re.finditer(rf"(?<!\w){re.escape(phrase)}(?!\w)", text):
                    if not _NEGATION.search(text[: hit.start()]) and _ends_marking(
                        text[hit.end() :]
                    ):
                        return Marking(level, display)
        return None

    def _strict(self, line: str) -> Marking | None:
        text = _normal(line)
        entry = self._phrases.get(text)
        if entry is not None:
            return Marking(entry[1], entry[0])
        for phrase, (display, level) in self._phrases.items():
            if text.startswith(phrase) and len(text) > len(phrase):
                rest = text[len(phrase) :]
                if rest[0] not in _PHRASE_SEPARATORS:
                    continue  # "confidentiality", "internally"
                caveat = rest.lstrip(_PHRASE_SEPARATORS)
                if len(caveat) <= 60 and _CAVEAT.fullmatch(caveat):
                    return Marking(level, display)
        return None


@dataclass(frozen=True)
class _Region:
    lines: Sequence[str]
    edge: int | None  # lines at each end where loose forms count; None: all of them


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _regions(document: ParsedDocument) -> list[_Region]:
    """Headers and footers (every line loose), every page (slide, sheet) with its edges, and the
    whole document with its edges."""
    regions: list[_Region] = []
    pages: dict[int, list[str]] = {}
    flow: list[str] = []
    for element in document.elements:
        lines = _lines(element.text)
        if element.kind in ("header", "footer"):
            regions.append(_Region(lines, edge=None))
            continue
        flow.extend(lines)
        if element.page is not None:
            pages.setdefault(element.page, []).extend(lines)
    regions.extend(_Region(lines, edge=_PAGE_EDGE_LINES) for _, lines in sorted(pages.items()))
    regions.append(_Region(flow, edge=_DOCUMENT_EDGE_LINES))
    return regions


_SOURCE_TEXT_TYPES = frozenset({"md", "markdown", "rst", "txt", "text", "log", "csv", "tsv"})
_HTML_TYPES = frozenset({"html", "htm", "xhtml"})
_HTML_BLOCKS = frozenset(
    {"p", "div", "li", "td", "th", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "span"}
    | {"header", "footer", "section", "article", "aside", "nav", "main", "title", "caption"}
    | {"blockquote", "pre", "dt", "dd", "figcaption", "small", "strong", "b", "em", "label"}
)
_HTML_EDGES = frozenset({"header", "footer"})
_HTML_SKIPPED = frozenset({"script", "style", "template", "noscript"})


class _HtmlLines(HTMLParser):
    """Text of an HTML page line by line (a line per block), ``<header>``/``<footer>`` apart."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.body: list[str] = []
        self.edges: list[str] = []
        self._parts: list[str] = []
        self._edge_depth = 0
        self._skip_depth = 0

    def _flush(self) -> None:
        line = " ".join("".join(self._parts).split())
        self._parts = []
        if line:
            (self.edges if self._edge_depth else self.body).append(line)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIPPED:
            self._skip_depth += 1
        if tag in _HTML_BLOCKS:
            self._flush()
        if tag in _HTML_EDGES:
            self._edge_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_BLOCKS:
            self._flush()
        if tag in _HTML_EDGES and self._edge_depth:
            self._edge_depth -= 1
        if tag in _HTML_SKIPPED and self._skip_depth:
            self._skip_depth -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._parts.append(data)


def _has_source_lines(doc_type: str) -> bool:
    kind = doc_type.lower().lstrip(".")
    return kind in _SOURCE_TEXT_TYPES or kind in _HTML_TYPES


def source_lines(data: bytes, doc_type: str) -> SourceLines | None:
    """The lines of a markup or plain-text source, as written (see BannerReader.__call__), or
    None for other types. ``doc_type``: the file's extension, with or without the dot."""
    if not _has_source_lines(doc_type):
        return None
    kind = doc_type.lower().lstrip(".")
    # As the parse decodes it: read as UTF-8, a UTF-16 file's banner letters are NUL-separated.
    text = decode_text(data)
    if kind in _SOURCE_TEXT_TYPES:
        return SourceLines(lines=_within_banner_length(_lines(text)))
    parser = _HtmlLines()
    parser.feed(text)
    parser.close()
    parser._flush()
    return SourceLines(
        edges=_within_banner_length(parser.edges), lines=_within_banner_length(parser.body)
    )


def _within_banner_length(lines: Iterable[str]) -> tuple[str, ...]:
    # A line too long to be a banner is kept empty: only its place counts (edge lines).
    return tuple(line if len(line) <= _BANNER_MAX_LINE_CHARS else "" for line in lines)


def find_banner(
    text: str, scheme: ClassificationScheme, banners: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """The most restrictive banner in ``text``: (banner, level), where banner is the matched
    phrase (never the surrounding text, which may be sensitive)."""
    found = BannerReader(scheme, banners).in_text(text)
    return (found.evidence, found.level) if found else None


def detect_banner(
    text: str, scheme: ClassificationScheme, banners: Mapping[str, str] | None = None
) -> str | None:
    """The level named by the text's most restrictive classification banner, if any."""
    found = find_banner(text, scheme, banners)
    return found[1] if found else None


def default_marking_readers(banners: BannerReader) -> tuple[MarkingReader, ...]:
    """Every source of in-document markings a folder's documents are checked with. To add one
    (e.g. an embedded sensitivity label), add it here: each returns its most restrictive
    marking or None, and the most restrictive marking of all raises the label."""
    return (banners,)


# --- resolution -----------------------------------------------------------------------------
class LabelRules:
    """A folder's label configuration. Cheap to build; sidecars are read per document."""

    def __init__(
        self,
        scheme: ClassificationScheme,
        *,
        default: AccessLabel | None = None,
        rules: tuple[tuple[str, AccessLabel], ...] = (),
        banners: Mapping[str, str] | None = None,
        marking_readers: Sequence[MarkingReader] | None = None,
    ) -> None:
        """Rules given in code; :meth:`load` reads them from a folder's labels file.

        ``marking_readers`` (default: the banner reader) find markings in a document that can
        only raise its level; add a reader here to add a source of markings."""
        self._scheme = scheme
        self._banners = BannerReader(scheme, banners)
        self._readers: tuple[MarkingReader, ...] = (
            tuple(marking_readers)
            if marking_readers is not None
            else default_marking_readers(self._banners)
        )
        self._default: _Spec | None = None
        if default is not None:
            scheme.rank(default.classification)
            self._default = _Spec(default.classification, default.groups, "default:code")
        self._rules: list[_Rule] = []
        for i, (pattern, label) in enumerate(rules):
            scheme.rank(label.classification)
            spec = _Spec(label.classification, label.groups, f"rule:code:{i}")
            self._rules.append(_Rule.of(pattern, spec))
        self.source_file: Path | None = None
        self._listings: dict[Path, tuple[str, ...]] = {}  # directory → names, for one run
        self.sensitivity = SensitivityPolicy()

    @classmethod
    def load(
        cls,
        root: Path,
        scheme: ClassificationScheme,
        banners: Mapping[str, str] | None = None,
    ) -> LabelRules:
        """Read ``root/citewell.labels.yaml`` if present (no file → every document is unlabelled
        unless it has a sidecar). Errors raise :class:`LabelError` naming file and line."""
        rules = cls(scheme, banners=banners)
        file = root / LABELS_FILE
        misspelt = root / LABELS_FILE.replace(SIDECAR_SUFFIX, MISSPELT_SUFFIX)
        if misspelt.exists() or misspelt.is_symlink():
            raise LabelError(f"{misspelt}: the labels file must be named {LABELS_FILE}")
        if not file.is_symlink() and not file.exists():
            return rules
        document = _load(file, "labels file")
        rules.source_file = file
        config = validate_yaml(LabelsFile, document, error=LabelError)
        if config.default is not None:
            rules._default = _spec(config.default, document, ("default",), scheme, "default")
        for i, entry in enumerate(config.rules):
            spec = _spec(entry, document, ("rules", i), scheme, "rule")
            rules._rules.append(_Rule.of(entry.match, spec))
        if config.sensitivity_labels is not None or config.sensitivity_label_policy is not None:
            rules.sensitivity = _sensitivity_policy(config, document, scheme)
        return rules

    @property
    def scheme(self) -> ClassificationScheme:
        return self._scheme

    def _sidecar(self, document: Path) -> _Spec | None:
        sidecar = document.with_name(document.name + SIDECAR_SUFFIX)
        for misspelt in self._misspelt_sidecars(document):
            # Names that differ only in Unicode form print alike: say so, or the error reads
            # "x must be named x".
            form = (
                " (the same name in another Unicode form)"
                if _nfc(misspelt.name) == _nfc(sidecar.name)
                else ""
            )
            raise LabelError(f"{misspelt}: a labels sidecar must be named {sidecar.name}{form}")
        try:
            if not sidecar.is_symlink() and not sidecar.exists():
                return None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                # The document's name is legal but its sidecar's cannot be: there is none.
                return None
            raise
        loaded = _load(sidecar, "labels sidecar")
        keys = validate_yaml(
            LabelKeys, loaded, error=LabelError, data={} if loaded.data is None else loaded.data
        )
        if keys.classification is None and keys.groups is None:
            # Empty (a truncated write?) or all null: it meant to say something; fail closed.
            raise LabelError(
                f"{loaded.where()}: labels sidecar sets neither classification nor groups"
            )
        return _spec(keys, loaded, (), self._scheme, "sidecar")

    def _misspelt_sidecars(self, document: Path) -> list[Path]:
        """Siblings that look like the document's sidecar but are not named exactly so
        (``.labels.yml``, ``.LABELS.YAML``): ignoring them would lower its label."""
        directory = document.parent
        if directory not in self._listings:
            try:
                self._listings[directory] = tuple(os.listdir(directory))
            except OSError:
                self._listings[directory] = ()
        names = self._listings[directory]
        wanted = {_nfc(document.name + end).casefold() for end in (SIDECAR_SUFFIX, MISSPELT_SUFFIX)}
        exact = document.name + SIDECAR_SUFFIX
        return [
            directory / name
            for name in names
            if _nfc(name).casefold() in wanted
            and name != exact
            # "a.TXT.labels.yaml" next to a file "a.TXT" is that file's own sidecar.
            and not (name.endswith(SIDECAR_SUFFIX) and name[: -len(SIDECAR_SUFFIX)] in names)
        ]

    def strongest_marking(
        self, document: ParsedDocument, path: Path | None = None
    ) -> Marking | None:
        """The most restrictive marking any reader finds in ``document`` (at ``path``)."""
        return most_restrictive_marking(
            (read(document, path) for read in self._readers), self._scheme
        )

    def resolve(
        self, relative_path: str, document: Path | None = None, text: str | None = None
    ) -> ResolvedLabel:
        """The label for the document at ``relative_path`` (POSIX, relative to the root).

        ``document`` is its path on disk, used to find a sidecar; ``text`` is its parsed text,
        scanned for a banner. Raises :class:`LabelError` when the sidecar is invalid: the
        label cannot be determined.
        """
        matched = _nfc(relative_path)
        rule = next((r.spec for r in self._rules if r.pattern.match(matched)), None)
        folded = next((r.spec for r in self._rules if r.folded.match(matched)), None)
        sidecar = self._sidecar(document) if document is not None else None
        specs = [s for s in (sidecar, rule, self._default) if s is not None]
        if _label_of(folded) != _label_of(rule) and not (
            sidecar is not None and sidecar.classification and sidecar.groups is not None
        ):
            # Globs match case as written, but sources such as Windows shares and SharePoint
            # do not: a rule that matches "Finance/q3.xlsx" only ignoring case may be the one
            # the owner meant, so no label is guessed (visible to nobody until one is given).
            log_event(
                logger,
                logging.WARNING,
                "labels.rule_matches_ignoring_case",
                path=relative_path,
                rule=folded.origin if folded is not None else None,
            )
            specs = []
        level = next((s.classification for s in specs if s.classification is not None), None)
        groups = next((s.groups for s in specs if s.groups is not None), None)
        if level is None or groups is None:
            label = AccessLabel(classification=self._scheme.most_restrictive, groups=frozenset())
            return ResolvedLabel(
                label=label,
                labelled=False,
                origin="none",
                fingerprint=_fingerprint(label, labelled=False),
            )
        origin = next(s.origin for s in specs if s.classification is not None)
        groups_origin = next(s.origin for s in specs if s.groups is not None)
        if groups_origin != origin:
            origin = f"{origin}+groups:{groups_origin}"
        banner: str | None = None
        if text:
            found = self._banners.in_text(text)
            if found and self._scheme.rank(found.level) > self._scheme.rank(level):
                banner, level = found.evidence, found.level
        label = AccessLabel(classification=level, groups=groups)
        return ResolvedLabel(
            label=label,
            labelled=True,
            origin=origin,
            banner=banner,
            fingerprint=_fingerprint(label, labelled=True),
        )


# --- Purview sensitivity labels (ingestion/sensitivity.py) --------------------------------
def _sensitivity_policy(
    config: LabelsFile, document: YamlDocument, scheme: ClassificationScheme
) -> SensitivityPolicy:
    """The two sensitivity sections as one policy; GUIDs, tenants and levels validated."""
    key = (
        "sensitivity_labels"
        if config.sensitivity_labels is not None
        else "sensitivity_label_policy"
    )
    raw: dict[str, object] = dict(config.sensitivity_label_policy or {})
    raw["labels"] = config.sensitivity_labels or {}
    try:
        parsed = SensitivityPolicy.model_validate(raw)
        for mapping in (*parsed.labels.values(), *parsed.names.values()):
            scheme.rank(mapping.classification)
    except (ValidationError, UnknownClassificationError) as exc:
        raise LabelError(f"{document.where((key,))}: invalid sensitivity labels: {exc}") from exc
    return parsed


def most_restrictive(
    first: AccessLabel,
    second: AccessLabel,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> AccessLabel:
    """The label that lets through only callers both labels let through: the higher level, and
    the groups both accept (a side holding a group every principal holds accepts anyone)."""
    level = scheme.max(first.classification, second.classification)
    if first.groups & universal_groups:
        groups = second.groups
    elif second.groups & universal_groups:
        groups = first.groups
    else:
        groups = first.groups & second.groups
    return AccessLabel(classification=level, groups=groups)


def apply_sensitivity(
    base: ResolvedLabel,
    decision: SensitivityDecision,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> ResolvedLabel:
    """Combine a document's label from rules, sidecars and object labels with its sensitivity
    label: the most restrictive wins, and a sensitivity label never lowers what another source
    set. A refused sensitivity label makes the document visible to nobody, and so does a
    refusal by another source (``base.refused``) whatever the sensitivity label."""
    if decision.status == "none" or base.refused:
        return base
    if decision.status == "refused" or decision.label is None:
        return refused_label(f"sensitivity-refused:{decision.reason}", scheme)
    resolved = combine_resolved(base, decision.label, "sensitivity", scheme, universal_groups)
    if decision.retained:
        return resolved.model_copy(update={"origin": resolved.origin + "(retained)"})
    return resolved


def combine_resolved(
    base: ResolvedLabel,
    label: AccessLabel,
    origin: str,
    scheme: ClassificationScheme,
    universal_groups: frozenset[str] = frozenset(),
) -> ResolvedLabel:
    """``base`` with another source's complete label applied: the most restrictive of the two,
    or ``label`` alone when ``base`` resolved to nothing. A refused ``base`` stays refused."""
    if base.refused:
        return base
    if base.labelled:
        combined = most_restrictive(base.label, label, scheme, universal_groups)
        origin = f"{base.origin}+{origin}"
    else:
        combined = label
    return ResolvedLabel(
        label=combined,
        labelled=True,
        origin=origin,
        banner=base.banner,
        fingerprint=_fingerprint(combined, labelled=True),
    )


def refused_label(origin: str, scheme: ClassificationScheme) -> ResolvedLabel:
    """Visible to nobody (the most restrictive level, no groups), reported as unlabelled."""
    label = AccessLabel(classification=scheme.most_restrictive, groups=frozenset())
    return ResolvedLabel(
        label=label,
        labelled=False,
        origin=origin,
        fingerprint=_fingerprint(label, False),
        refused=True,
    )
