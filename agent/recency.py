"""Does a question ask for the newest version of a recurring document?

"What changed in the latest 10-Q?", "the most recent policy", "last quarter's report": the
caller wants the newest of several similar documents, which relevance alone cannot tell apart.
The agent then asks retrieval to prefer recent documents (``SearchRequest.prefer_recent``).

Deliberately short and conservative (English only): a recency word counts only when a noun for
a document, a version or a reporting period follows within two words. A recency word about
anything else ("the latest research shows", "current assets", "recent acquisitions") is not a
request for the newest document, and a false positive re-orders sources the question did not
ask about, so missing a phrasing costs less than matching one too many.
"""

from __future__ import annotations

import re

# Recency words that can name "the newest one". "current" and "last" are weaker (current
# assets, the last section), so they take a narrower set of nouns below.
_STRONG = r"latest|newest|most\s+recent|most\s+current|most\s+up[\s-]to[\s-]date"
_WEAK = r"current|last"

# Documents, versions and reporting periods: what a recurring document is a new issue of.
_DOCUMENT_NOUNS = (
    r"version|revision|edition|release|update|issue|report|filing|statement|policy|policies"
    r"|guidelines?|handbook|manual|memo|minutes|newsletter|document|publication|quarter"
    r"|10-?q|10-?k|form"
)
_WEAK_NOUNS = r"version|revision|edition|release|report|filing|policy|quarter|10-?q|10-?k"

_WORD = r"[\w'&.-]+"
_FOLLOWED = rf"(?:{_WORD}\s+){{0,2}}"  # up to two words between, e.g. "latest quarterly report"

_PATTERNS = (
    re.compile(rf"\b(?:{_STRONG})\s+{_FOLLOWED}(?:{_DOCUMENT_NOUNS})s?\b", re.IGNORECASE),
    re.compile(rf"\b(?:{_WEAK})\s+(?:{_WEAK_NOUNS})s?\b", re.IGNORECASE),
)


def wants_recent(question: str) -> bool:
    """True when ``question`` asks for the newest document, version or reporting period."""
    text = " ".join(question.split())
    return any(pattern.search(text) for pattern in _PATTERNS)
