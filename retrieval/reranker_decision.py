"""The reranker gate: a recorded decision, per index, whether reranking helps.

Evaluation writes ``<index>/rerankers/gate.json`` after comparing ``hybrid`` with
``hybrid+rerank`` on the index's validation judgements; serving reads it and keeps a reranker
off where it did not measurably help.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from citewell.core.models import Frozen
from citewell.retrieval.durable import write_atomic

GATE_FILE = "gate.json"


class GateDecision(Frozen):
    model: str
    enabled: bool
    reason: str
    metric: str  # e.g. "ndcg@10"
    baseline: float  # hybrid without reranking
    reranked: float  # hybrid + this reranker
    min_gain: float
    judgements: str  # which validation data decided
    decided_at: datetime


def load_gate(rerankers_dir: Path) -> GateDecision | None:
    path = rerankers_dir / GATE_FILE
    if not path.exists():
        return None
    return GateDecision.model_validate_json(path.read_text(encoding="utf-8"))


def save_gate(rerankers_dir: Path, decision: GateDecision) -> None:
    write_atomic(rerankers_dir / GATE_FILE, decision.model_dump_json(indent=2).encode("utf-8"))
