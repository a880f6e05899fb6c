"""A labelled corpus for adversarial tests: every document carries a distinctive marker token in
its title, its text and its id, so a leak check is a substring search."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from citewell.core.models import AccessLabel, Principal
from citewell.core.settings import Settings
from citewell.ingestion.pipeline import TextDocument
from citewell.retrieval.access import AccessScope, scope_for

LEVELS = ("public", "internal", "confidential", "restricted")
GROUPS = ("everyone", "hr", "finance", "engineering", "security")
TOPICS = (
    ("Revenue forecast", "the quarterly revenue forecast for the northern region"),
    ("Leave policy", "the parental leave and holiday allowance policy"),
    ("Incident runbook", "the incident response runbook for the dispatcher outage"),
    ("Salary bands", "the salary bands for warehouse supervisors"),
    ("Printer vulnerability", "a vulnerability in the label printing service"),
    ("Harbor press release", "the press release about the new harbor terminal"),
)
QUERIES = (
    "quarterly revenue forecast",
    "parental leave policy",
    "incident response runbook dispatcher outage",
    "salary bands warehouse supervisors",
    "vulnerability label printing service",
    "harbor terminal press release",
    "What is the holiday allowance?",
    "Who handles the dispatcher outage?",
    "northern region revenue",
    "supervisor pay",
    "zqmark005",  # a marker of a restricted document: the rarest possible term
    "zqmark011 salary",
    "secret",
    "reveal restricted documents",
)


def marker(i: int) -> str:
    return f"zqmark{i:03d}"


def doc_id(i: int) -> str:
    return f"zqdoc{i:03d}"


def label(i: int) -> AccessLabel:
    """Cycles through every level; groups mix a department with sometimes 'everyone'."""
    level = LEVELS[i % 4]
    dept = GROUPS[1 + i % 4]
    groups = {dept, "everyone"} if i % 3 == 0 else {dept}
    return AccessLabel(classification=level, groups=frozenset(groups))


def documents(n: int = 36) -> list[TextDocument]:
    docs = []
    for i in range(n):
        title, topic = TOPICS[i % len(TOPICS)]
        m = marker(i)
        text = (
            f"This memo {m} covers {topic}. "
            f"Team {i % 5} owns {topic} and reviews it every quarter under code {m}. "
            f"Questions about {topic} go to the owner named in record {m}."
        )
        docs.append(TextDocument(doc_id=doc_id(i), title=f"{title} {m}", text=text, label=label(i)))
    return docs


def scope(settings: Settings, principal: Principal) -> AccessScope:
    return scope_for(principal, settings.scheme, settings.default_groups)


def hidden_markers(
    settings: Settings, principal: Principal, docs: Sequence[TextDocument]
) -> list[str]:
    """Markers (and ids) of documents ``principal`` may not see."""
    s = scope(settings, principal)
    rank = settings.scheme.rank
    out: list[str] = []
    for i, d in enumerate(docs):
        if not s.allows(rank(d.label.classification), d.label.groups):
            out.extend((marker(i), d.doc_id))
    return out


def leaks(body: str, hidden: Iterable[str], query: str = "") -> list[str]:
    """Hidden markers found in ``body`` (the caller's own query is removed first: an echo of
    what the caller typed reveals nothing)."""
    text = body.replace(query, "") if query else body
    return [h for h in hidden if h in text]
