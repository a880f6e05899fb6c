"""``citewell eval <kind>``: evaluation commands. ``eval retrieval`` scores every search mode on
a BEIR-format collection; further kinds (e.g. ``answers``) register beside it."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from citewell.cli import tuning
from citewell.cli.arguments import ExistingPath, FloatRange, IntRange, OutputPath
from citewell.cli.common import (
    add_caller_options,
    add_index_options,
    load_caller,
    load_settings,
    print_json,
    reporting_errors,
)
from citewell.core.errors import CitewellError, EvaluationError, UsageError
from citewell.evaluation.models import RETRIEVAL_MODES, RetrievalEvalReport
from citewell.evaluation.retrieval_eval import evaluate_retrieval


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("eval", help="evaluate retrieval quality (and more)")
    kinds = parser.add_subparsers(dest="eval_kind", required=True, metavar="KIND")
    register_retrieval(kinds)
    register_owner_reports(kinds)
    register_calibrate(kinds)
    tuning.register(kinds)


def register_retrieval(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "retrieval",
        help="nDCG@10, recall@10/100, MRR@10 and latency per mode on a BEIR folder",
        description=(
            "Ingest a BEIR-format corpus into a throwaway index (reused on re-runs) and evaluate "
            "every retrieval mode on one qrels split."
        ),
    )
    parser.add_argument(
        "--dataset",
        required=True,
        type=ExistingPath("dir"),
        help="folder with corpus.jsonl[.gz], queries.jsonl and qrels/<split>.tsv",
    )
    parser.add_argument("--split", default="test", help="qrels split (default: test)")
    parser.add_argument(
        "--modes",
        nargs="+",
        metavar="MODE",
        help=f"space- or comma-separated (default: all of {', '.join(RETRIEVAL_MODES)})",
    )
    parser.add_argument(
        "--gain",
        choices=["exponential", "linear"],
        default="exponential",
        help="nDCG gain for graded qrels: 2^rel-1 (default) or rel (trec_eval); same when binary",
    )
    add_index_options(parser)  # --index names the evaluation index (default: derived)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=reporting_errors(run_retrieval))


STALE_DAYS = IntRange(1, 36_500)


def _tolerance(text: str) -> str:
    """METRIC=DELTA with a finite, non-negative DELTA (checked again by parse_tolerances)."""
    name, sep, value = text.partition("=")
    try:
        delta = float(value)
    except ValueError:
        delta = math.nan
    if not sep or not name.strip() or not 0.0 <= delta <= 1e9:
        raise argparse.ArgumentTypeError(f"expected METRIC=DELTA (DELTA >= 0), got {text!r}")
    return text


def _modes(raw: list[str] | None) -> list[str] | None:
    if not raw:
        return None
    return [mode.strip() for item in raw for mode in item.split(",") if mode.strip()]


def report_json(report: RetrievalEvalReport) -> dict[str, Any]:
    """The JSON contract: ``{"modes": {mode: {"ndcg@10", "recall@10", "recall@100", "mrr@10",
    "latency_ms": {"p50", "p95"}}}}`` plus the run's context (dataset, index, skipped modes)."""
    payload: dict[str, Any] = report.model_dump(mode="json", by_alias=True)
    return payload


def format_table(report: RetrievalEvalReport) -> str:
    header = (
        f"{'mode':<14}{'nDCG@10':>9}{'R@10':>8}{'R@100':>8}{'MRR@10':>8}{'p50 ms':>9}{'p95 ms':>9}"
    )
    reused = " (reused)" if report.index_reused else ""
    lines = [
        f"{report.dataset} ({report.split}): {report.queries} queries, "
        f"{report.documents} documents, index {report.index}{reused}, {report.gain} gain",
        header,
        "-" * len(header),
    ]
    for mode, metrics in report.modes.items():
        lines.append(
            f"{mode:<14}{metrics.ndcg_at_10:>9.3f}{metrics.recall_at_10:>8.3f}"
            f"{metrics.recall_at_100:>8.3f}{metrics.mrr_at_10:>8.3f}"
            f"{metrics.latency_ms.p50:>9.1f}{metrics.latency_ms.p95:>9.1f}"
        )
    for mode, reason in report.skipped.items():
        lines.append(f"{mode:<14}skipped: {reason}")
    if report.fusion:
        lines.append(f"hybrid fusion: {report.fusion}")
    gate = report.reranker_gate
    if gate is not None:
        state = "enabled" if gate.enabled else "disabled"
        lines.append(
            f"reranker gate: {state} for {gate.model} ({gate.metric} hybrid {gate.baseline:.3f} "
            f"vs reranked {gate.reranked:.3f} on {gate.judgements}; {gate.reason})"
        )
    return "\n".join(lines) + "\n"


def run_retrieval(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    report = evaluate_retrieval(
        settings,
        args.dataset,
        args.split,
        _modes(args.modes),
        index_name=args.index,
        progress=not args.json,
        gain=args.gain,
    )
    if args.json:
        print_json(report_json(report))
    else:
        sys.stdout.write(format_table(report))
    return 0


# --- answers, coverage, report, compare (knowledge-base owners) -------------------------------


def register_owner_reports(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    answers = kinds.add_parser(
        "answers",
        help="answer quality and citations on a golden question set, as a principal",
        description="Ask every golden question against the current index as the given principal.",
    )
    answers.add_argument(
        "--questions", required=True, type=ExistingPath("file"), help="golden set (.csv/.jsonl)"
    )
    answers.add_argument(
        "--limit", type=IntRange(1, 1_000_000), help="ask only the first N questions"
    )
    answers.add_argument(
        "--report", type=OutputPath(), help="also write a self-contained HTML report"
    )
    answers.add_argument(
        "--stale-days", type=STALE_DAYS, default=90, help="for the report's coverage"
    )
    add_caller_options(answers)
    answers.add_argument("--json", action="store_true", help="print the report as JSON")
    answers.set_defaults(func=reporting_errors(run_answers))

    coverage = kinds.add_parser(
        "coverage",
        help="documents never retrieved, never cited, stale or failed, as a principal",
    )
    coverage.add_argument(
        "--questions", type=ExistingPath("file"), help="golden set whose runs count as usage"
    )
    coverage.add_argument(
        "--answers", type=ExistingPath("file"), help="or: a saved `eval answers --json` file"
    )
    coverage.add_argument("--stale-days", type=STALE_DAYS, default=90)
    add_caller_options(coverage)
    coverage.add_argument("--json", action="store_true", help="print the report as JSON")
    coverage.set_defaults(func=reporting_errors(run_coverage))

    report = kinds.add_parser(
        "report", help="build the HTML report (and its JSON) from saved evaluation JSON files"
    )
    report.add_argument("--out", required=True, type=OutputPath(), help="HTML file to write")
    report.add_argument("--answers", type=ExistingPath("file"), help="`eval answers --json` output")
    report.add_argument(
        "--retrieval", type=ExistingPath("file"), help="`eval retrieval --json` output"
    )
    report.add_argument(
        "--coverage", type=ExistingPath("file"), help="`eval coverage --json` output"
    )
    report.set_defaults(func=reporting_errors(run_report))

    compare = kinds.add_parser(
        "compare", help="regression gate: exit 1 when a metric drops beyond its tolerance"
    )
    compare.add_argument("run", type=ExistingPath("file"), help="evaluation JSON of this run")
    compare.add_argument("baseline", type=ExistingPath("file"), help="stored baseline JSON")
    compare.add_argument(
        "--tolerance",
        action="append",
        metavar="METRIC=DELTA",
        type=_tolerance,
        help="override a metric's allowed change, e.g. ndcg@10=0.02 (repeatable)",
    )
    compare.set_defaults(func=reporting_errors(run_compare))


_Saved = TypeVar("_Saved", bound=BaseModel)


def load_saved(model: type[_Saved], path: Path) -> _Saved:
    """A saved evaluation file of one kind; a file of another kind or a damaged one raises
    :class:`EvaluationError` naming the file and its first problem."""
    from citewell.evaluation.regression import load_json

    try:
        return model.model_validate(load_json(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise EvaluationError(
            f"{path}: not an evaluation JSON file of this kind ({exc.error_count()} problem(s); "
            f"{where}: {first['msg']})"
        ) from exc


def _answers_run(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from citewell.evaluation.answers_eval import evaluate_answers
    from citewell.evaluation.golden_set import load_golden_set

    settings, principal = load_caller(args)
    questions = load_golden_set(args.questions, limit=args.limit)
    report = evaluate_answers(
        settings, principal, questions, settings.index, golden_set=str(args.questions)
    )
    return settings, principal, report


def run_answers(args: argparse.Namespace) -> int:
    from citewell.evaluation.coverage import evaluate_coverage
    from citewell.evaluation.report import make_bundle, write_report

    written: tuple[Path, Path] | None = None
    settings, principal, report = _answers_run(args)
    if args.report:
        coverage = evaluate_coverage(
            settings, principal, report, settings.index, stale_days=args.stale_days
        )
        bundle = make_bundle(
            principal.name,
            principal.clearance,
            settings.index,
            answers=report,
            coverage=coverage,
        )
        written = write_report(bundle, args.report, inputs=[args.questions])
    if args.json:
        print_json(report)
    else:
        sys.stdout.write(
            f"{report.n_questions} questions on index {report.index} as {report.principal} "
            f"(judge {report.judge})\n"
        )
        for name, value in report.metrics().items():
            shown = "n/a" if value is None else f"{value:.3f}"
            sys.stdout.write(f"  {name:<22}{shown:>10}\n")
        if report.n_not_answerable_for_user:
            sys.stdout.write(
                f"  {report.n_not_answerable_for_user} answerable question(s) not answerable for "
                f"{report.principal} (no expected document visible), counted apart\n"
            )
    if written is not None:
        # On stderr with --json, so stdout stays one JSON document.
        stream = sys.stderr if args.json else sys.stdout
        stream.write(f"report written to {written[0].resolve()} (data: {written[1].resolve()})\n")
    return 0


def run_coverage(args: argparse.Namespace) -> int:
    from citewell.evaluation.answers_eval import AnswersEvalReport
    from citewell.evaluation.coverage import evaluate_coverage

    if args.questions and args.answers:
        raise UsageError("use either --questions or --answers")
    if args.questions:
        settings, principal, answers = _answers_run(argparse.Namespace(**vars(args), limit=None))
    else:
        settings, principal = load_caller(args)
        answers = load_saved(AnswersEvalReport, args.answers) if args.answers else None
        if answers is not None and answers.principal != principal.name:
            raise EvaluationError("the answers file was evaluated for a different principal")
    report = evaluate_coverage(
        settings, principal, answers, settings.index, stale_days=args.stale_days
    )
    if args.json:
        print_json(report)
    else:
        sys.stdout.write(f"{report.documents} visible documents, {report.questions} questions\n")
        for g in report.groups:
            sys.stdout.write(
                f"  {g.source}/{g.classification}: {g.documents} docs, "
                f"{len(g.never_retrieved)} never retrieved, {len(g.never_cited)} never cited, "
                f"{len(g.stale)} stale\n"
            )
        for f in report.failures:
            sys.stdout.write(f"  failed: {f.source_uri}: {f.reason}\n")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from citewell.evaluation.answers_eval import AnswersEvalReport
    from citewell.evaluation.coverage import CoverageReport
    from citewell.evaluation.report import make_bundle, write_report

    answers = load_saved(AnswersEvalReport, args.answers) if args.answers else None
    retrieval = load_saved(RetrievalEvalReport, args.retrieval) if args.retrieval else None
    coverage = load_saved(CoverageReport, args.coverage) if args.coverage else None
    owner = answers or coverage
    bundle = make_bundle(
        owner.principal if owner else "unknown",
        owner.clearance if owner else "n/a",
        owner.index if owner else (retrieval.index if retrieval else "unknown"),
        answers=answers,
        retrieval=retrieval,
        coverage=coverage,
    )
    inputs = [path for path in (args.answers, args.retrieval, args.coverage) if path]
    html_path, json_path = write_report(bundle, args.out, inputs)
    sys.stdout.write(f"report written to {html_path.resolve()} (data: {json_path.resolve()})\n")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from citewell.evaluation.regression import compare, load_json, parse_tolerances

    result = compare(
        load_json(args.run), load_json(args.baseline), parse_tolerances(args.tolerance)
    )
    sys.stdout.write(result.diff())
    return 0 if result.passed else 1


# --- calibrate: the answerability check from a KB owner's judgements ---------------------------


def register_calibrate(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = kinds.add_parser(
        "calibrate",
        help="recalibrate when the agent refuses, from judged answerable/unanswerable questions",
        description=(
            "Ask every question of a golden set (the `eval answers` format; unanswerable lines "
            'have no expected document or "answerable": false) as a principal, fit the '
            "answerability check on them and write the index's calibration file, which the "
            "agent uses from its next answer. With fewer than 30 questions of either kind only "
            "the threshold is recalibrated; the shipped weights are kept."
        ),
    )
    parser.add_argument(
        "--questions", required=True, type=ExistingPath("file"), help="golden set (.csv/.jsonl)"
    )
    parser.add_argument(
        "--max-false-refusal",
        type=FloatRange(0.0, 0.99),
        default=None,
        metavar="SHARE",
        help="refuse at most this share of the answerable questions (default 0.07)",
    )
    parser.add_argument(
        "--out", type=OutputPath(), help="write here instead of the index's answerability.json"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    add_caller_options(parser)
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")
    parser.set_defaults(func=reporting_errors(run_calibrate))


def run_calibrate(args: argparse.Namespace) -> int:
    from citewell.agent.answerability import AnswerabilityModel
    from citewell.agent.factory import build_agent, calibration_path
    from citewell.evaluation.answerability import (
        DEFAULT_MAX_FALSE_REFUSAL,
        collect_candidates,
        featurize,
        fit_model,
        rates,
    )
    from citewell.evaluation.answers_eval import allowed_questions
    from citewell.evaluation.golden_set import load_golden_set
    from citewell.retrieval.service import open_search_service

    budget = DEFAULT_MAX_FALSE_REFUSAL if args.max_false_refusal is None else args.max_false_refusal
    settings, principal = load_caller(args)
    questions = allowed_questions(load_golden_set(args.questions), principal, settings)
    target = args.out or calibration_path(settings)
    service = open_search_service(settings)
    try:
        agent = build_agent(settings, service, service.embedder)
        current: AnswerabilityModel = agent.checker.model()
        judged = featurize(
            agent.checker.analyzer,
            collect_candidates(agent, principal, [(q.question, q.answerable) for q in questions]),
        )
    finally:
        service.close()
    before = rates(current, judged)
    model = fit_model(
        judged,
        data=f"{args.questions.name}: {len(judged)} questions asked as {principal.name} "
        f"on index {settings.index}",
        base=current,
        max_false_refusal=budget,
    )
    if not args.dry_run:
        _write_atomically(target, model.model_dump_json(indent=2) + "\n")
    figures = model.figures
    if args.json:
        print_json(
            {
                "written": None if args.dry_run else str(target),
                "before": {"refusal_rate": before[0], "false_refusal_rate": before[1]},
                "calibration": model.model_dump(mode="json"),
            }
        )
        return 0
    fitted = (
        "weights and threshold" if figures.weights_fitted else "threshold only (few judgements)"
    )
    sys.stdout.write(
        f"{figures.answerable} answerable and {figures.unanswerable} unanswerable questions "
        f"as {principal.name} on index {settings.index}; recalibrated {fitted}\n"
        f"  before: refuses {_pct(before[0])} of unanswerable, {_pct(before[1])} of answerable\n"
        f"  after:  refuses {_pct(figures.refusal_rate_unanswerable)} of unanswerable, "
        f"{_pct(1 - figures.answer_rate_answerable)} of answerable "
        f"(threshold {model.threshold:.3f}, budget {budget:.0%})\n"
        "  (figures on the calibration questions themselves: expect less on new questions)\n"
    )
    sys.stdout.write("  not written (--dry-run)\n" if args.dry_run else f"wrote {target}\n")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _write_atomically(path: Path, text: str) -> None:
    import os
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CitewellError(f"cannot write {path}: {exc.strerror or exc}") from exc
