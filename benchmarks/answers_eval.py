"""The answers evaluation on real golden sets (not a CI test).

python -m benchmarks.answers_eval docugami [--limit N] [--data-dir D]
    Ingests ../shared/data/qa/docugami_sec10q/docs (20 SEC 10-Q PDFs, public) and runs
    ``evaluate_answers`` on qna_data.csv as a public reader.

python -m benchmarks.answers_eval squad [--limit N] [--data-dir D]
    Ingests the 87 SQuAD 2.0 paragraphs of squad2_dev_small.json and runs ``evaluate_answers`` on
    the odd-numbered half of their answerable and unanswerable questions (refusal accuracy; the
    other half calibrated the refusal threshold).

python -m benchmarks.answers_eval calibrate-judge
    Calibrates the embedding-similarity citation judge on RGB en_fact: the claim "query: answer"
    against its positive passages (supported) and negative passages (not supported); prints the
    threshold maximising balanced accuracy, and how often passages stating the counterfactual
    answer (positive_wrong) would wrongly pass.

Each run prints one JSON object (the headline metrics) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citewell.agent.calibration import calibrate_threshold
from citewell.core.logging import configure_logging
from citewell.core.models import AccessLabel, Principal
from citewell.core.settings import Settings
from citewell.evaluation.answers_eval import AnswersEvalReport, evaluate_answers
from citewell.evaluation.golden_set import load_golden_set
from citewell.evaluation.squad import load_squad
from citewell.ingestion.pipeline import Ingestor
from citewell.retrieval.embedding import SentenceTransformerEmbedder
from citewell.retrieval.service import open_search_service

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa"
READER = Principal(name="benchmark", clearance="public", groups=frozenset())
PUBLIC = AccessLabel(classification="public", groups=frozenset({"everyone"}))


def _summary(report: AnswersEvalReport, ingest_s: float, eval_s: float) -> dict[str, Any]:
    return {
        "golden_set": report.golden_set,
        "n_questions": report.n_questions,
        "n_answerable": report.n_answerable,
        "n_unanswerable": report.n_unanswerable,
        **{k: round(v, 4) if v is not None else None for k, v in report.metrics().items()},
        "judge": report.judge,
        "judge_threshold": report.judge_threshold,
        "backend": report.backend,
        "ingest_s": round(ingest_s, 1),
        "eval_s_per_question": round(eval_s / max(report.n_questions, 1), 3),
    }


def _evaluate(settings: Settings, golden: str, questions: Any, ingest_s: float) -> int:
    service = open_search_service(settings)
    try:
        t0 = time.perf_counter()
        report = evaluate_answers(
            settings,
            READER,
            questions,
            golden_set=golden,
            service=service,
            embedder=service.embedder,
            progress=lambda i, n: print(f"\r{i}/{n}", end="", file=sys.stderr),
        )
        took = time.perf_counter() - t0
    finally:
        service.close()
    print(file=sys.stderr)
    print(json.dumps(_summary(report, ingest_s, took), indent=2))
    return 0


def run_docugami(data_dir: Path, limit: int | None) -> int:
    settings = Settings(data_dir=data_dir, index="docugami")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docugami"
        shutil.copytree(DATA / "docugami_sec10q" / "docs", folder)
        (folder / "citewell.labels.yaml").write_text(
            "default: {classification: public, groups: [everyone]}\n", encoding="utf-8"
        )
        t0 = time.perf_counter()
        Ingestor(settings).ingest_folder(folder, index="docugami", source_name="docugami")
        ingest_s = time.perf_counter() - t0
    questions = load_golden_set(DATA / "docugami_sec10q" / "qna_data.csv", limit=limit)
    return _evaluate(settings, "docugami_sec10q/qna_data.csv", questions, ingest_s)


def run_squad(data_dir: Path, limit: int | None) -> int:
    settings = Settings(data_dir=data_dir, index="squad2")
    subset = load_squad(DATA / "squad2_dev_small.json", PUBLIC)
    t0 = time.perf_counter()
    Ingestor(settings).ingest_texts(subset.documents, index="squad2", source_name="squad2")
    ingest_s = time.perf_counter() - t0
    # Odd-numbered questions only: the even-numbered ones calibrated the refusal threshold
    # (benchmarks.answers_docugami calibrate-refusal), so they would flatter it here.
    held_out = tuple(q for i, q in enumerate(subset.questions) if i % 2 == 1)
    questions = held_out[:limit] if limit else held_out
    return _evaluate(settings, "squad2_dev_small.json (held-out half)", questions, ingest_s)


def _best_sentence_scores(embedder: Any, claim: str, passages: list[str]) -> list[float]:
    """Per passage: best cosine similarity of the claim to one of its sentences (the judge sees
    a quoted sentence, not a whole passage). One batch per record: per-call overhead dominates."""
    from citewell.agent.citations import split_sentences

    split = [split_sentences(p) or [p] for p in passages]
    vectors = embedder.embed_documents([claim, *(s for ss in split for s in ss)])
    sims = vectors[1:] @ vectors[0]
    scores: list[float] = []
    offset = 0
    for sentences in split:
        scores.append(float(sims[offset : offset + len(sentences)].max()))
        offset += len(sentences)
    return scores


def run_calibrate_judge(data_dir: Path, limit: int | None) -> int:
    # The bare model: the embedding cache would only add a database write per call here.
    embedder = SentenceTransformerEmbedder(threads=os.cpu_count())
    lines = (DATA / "rgb" / "en_fact.json").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()][:limit]
    supported: list[float] = []
    unsupported: list[float] = []
    counterfactual: list[float] = []
    for record in records:
        answer = record["answer"]
        answer = answer[0] if isinstance(answer, list) else answer
        answer = answer[0] if isinstance(answer, list) else answer
        claim = f"{record['query']}: {answer}"
        supported += _best_sentence_scores(embedder, claim, record["positive"])
        unsupported += _best_sentence_scores(embedder, claim, record["negative"])
        counterfactual += _best_sentence_scores(embedder, claim, record["positive_wrong"])
    calibration = calibrate_threshold(supported, unsupported)
    wrong_pass = sum(s >= calibration.threshold for s in counterfactual) / max(
        len(counterfactual), 1
    )
    print(
        json.dumps(
            {
                **calibration.model_dump(),
                "counterfactual_passages": len(counterfactual),
                "counterfactual_pass_rate": round(wrong_pass, 4),
            },
            indent=2,
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=["docugami", "squad", "calibrate-judge"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="keep indexes here (default: a temp dir)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging("WARNING")
    tasks = {"docugami": run_docugami, "squad": run_squad, "calibrate-judge": run_calibrate_judge}
    with tempfile.TemporaryDirectory() as tmp:
        return tasks[args.task](args.data_dir or Path(tmp), args.limit)


if __name__ == "__main__":
    sys.exit(main())
