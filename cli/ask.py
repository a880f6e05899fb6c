"""``citewell ask QUESTION``: answer from the knowledge base as a principal, with citations."""

from __future__ import annotations

import argparse
import sys

from citewell.agent.models import Answer, Citation
from citewell.cli.arguments import Text
from citewell.cli.common import (
    add_caller_options,
    load_caller,
    print_json,
    printable,
    reporting_errors,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ask", help="answer a question from the knowledge base, citing sources"
    )
    parser.add_argument("question", type=Text())
    add_caller_options(parser)
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.set_defaults(func=reporting_errors(run))


def run(args: argparse.Namespace) -> int:
    # Imported here so `citewell --help` loads no models or stores.
    from citewell.agent.factory import build_agent
    from citewell.retrieval.service import open_search_service

    settings, principal = load_caller(args)
    service = open_search_service(settings)
    try:
        answer = build_agent(settings, service, service.embedder).answer(principal, args.question)
    finally:
        service.close()
    if args.json:
        print_json(answer)
        return 0
    print_answer(answer)
    return 0


def print_answer(answer: Answer) -> None:
    """Human-readable answer with its citations: one ``[n]`` per source, its quotes beneath.
    Text from documents and the LLM is written ``printable``: it cannot drive the terminal."""
    out = sys.stdout
    if answer.refused:
        out.write(answer.answer + "\n")
        if answer.refusal_reason:
            out.write(f"Why: {printable(answer.refusal_reason)}\n")
        if answer.sources:
            out.write("Closest sources searched (none supports an answer):\n")
    elif not answer.generated:
        out.write(f"(no generated answer: {printable(answer.notes[-1])}) Sources:\n")
    else:
        out.write(printable(answer.answer, newlines=True) + "\n")
        if answer.confidence is not None:
            out.write(f"(confidence {answer.confidence:.2f})\n")
    if answer.citations:
        out.write("\nCitations:\n")
        grouped: dict[int, list[Citation]] = {}
        for c in answer.citations:
            grouped.setdefault(c.n, []).append(c)
        for n in sorted(grouped):
            first = grouped[n][0]
            page = f", p. {first.page}" if first.page is not None else ""
            out.write(f"  [{n}] {printable(first.title)}{page} ({printable(first.source_uri)})\n")
            for c in grouped[n]:
                quote = printable(" ".join(c.quote.split()))
                out.write(f'      "{quote}" (chars {c.char_start}-{c.char_end})\n')
    elif answer.sources:
        for s in answer.sources:
            page = f", p. {s.page}" if s.page is not None else ""
            out.write(f"  [{s.n}] {printable(s.title)}{page} ({printable(s.source_uri)})\n")
    for sentence in answer.unsupported_sentences:
        out.write(f"  warning: no valid citation: {printable(sentence)}\n")
