"""A small labelled knowledge base written into a temporary folder for pipeline tests."""

from __future__ import annotations

from pathlib import Path

LABELS = """\
rules:
  - {match: "public/**", classification: public, groups: [everyone]}
  - {match: "hr/**", classification: confidential, groups: [hr]}
  - {match: "eng/**", classification: internal, groups: [engineering]}
  - {match: "notice.txt", classification: internal, groups: [everyone]}
"""

DOCUMENTS = {
    "public/press.md": "# Harbor launches Route Planner\n\nHarbor Logistics today announced "
    "Route Planner, a tool that cuts fuel use by twelve percent on coastal routes.",
    "hr/leave.md": "# Parental leave policy\n\nEmployees receive twenty weeks of paid parental "
    "leave. Requests go to the HR portal at least eight weeks in advance.",
    "eng/runbook.txt": "Deployment runbook\n\nDeploy the dispatcher service with the blue-green "
    "procedure. Roll back by switching the load balancer to the previous colour.",
    "notice.txt": "CONFIDENTIAL\n\nThe warehouse in Tilbury will close in March; staff move to "
    "the Felixstowe depot.",
    "orphan.txt": "Unfiled memo about the quarterly badge audit and the lost key cards.",
}


def write_kb(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "citewell.labels.yaml").write_text(LABELS, encoding="utf-8")
    for relative, text in DOCUMENTS.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n this is not really a pdf \x00\x01")
    return root
