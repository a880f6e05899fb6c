"""``citewell search QUERY``: search as a principal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from citewell.cli.arguments import IntRange, Text
from citewell.cli.common import (
    add_caller_options,
    load_caller,
    print_json,
    printable,
    reporting_errors,
)
from citewell.core.models import SearchMode, SearchRequest, SearchResult


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("search", help="search the knowledge base as a principal")
    parser.add_argument("query", type=Text())
    add_caller_options(parser)
    parser.add_argument(
        "--k", type=IntRange(1, 100), default=5, help="number of results, 1-100 (default 5)"
    )
    parser.add_argument(
        "--mode", choices=[m.value for m in SearchMode], default=SearchMode.HYBRID.value
    )
    parser.add_argument("--no-rerank", action="store_true", help="skip cross-encoder reranking")
    parser.add_argument(
        "--prefer-recent",
        action="store_true",
        help="prefer newer documents (by the date each states) among the results found",
    )
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=reporting_errors(run))


def result_json(result: SearchResult) -> dict[str, Any]:
    """The documented JSON contract of ``citewell search --json``."""
    return {
        "results": [
            {
                "doc_id": item.chunk.doc_id,
                "chunk_id": item.chunk.chunk_id,
                "source_uri": item.chunk.source_uri,
                "title": item.chunk.title,
                "page": item.chunk.page,
                "char_start": item.chunk.char_start,
                "char_end": item.chunk.char_end,
                "classification": item.chunk.classification,
                "groups": list(item.chunk.groups),
                "document_date": (
                    item.chunk.document_date.isoformat() if item.chunk.document_date else None
                ),
                "text": item.chunk.text,
                "score": item.score,
                "scores": item.scores.model_dump(exclude_none=True),
            }
            for item in result.results
        ],
        "reranked": result.reranked,
        "rerank_note": result.rerank_note,
        "mode": result.mode.value,
        "index_version": result.index_version,
    }


def run(args: argparse.Namespace) -> int:
    from citewell.retrieval.service import open_search_service  # heavy: only when running

    settings, principal = load_caller(args)
    request = SearchRequest(
        query=args.query,
        k=args.k,
        mode=SearchMode(args.mode),
        rerank=not args.no_rerank,
        prefer_recent=args.prefer_recent,
    )
    service = open_search_service(settings)
    try:
        result = service.search(principal, request)
    finally:
        service.close()
    if args.json:
        print_json(result_json(result))
        return 0
    out = sys.stdout
    if not result.results:
        out.write("no results visible to you\n")
    for n, item in enumerate(result.results, start=1):
        chunk = item.chunk
        where = f" p.{chunk.page}" if chunk.page else ""
        # Titles, URIs and text come from documents others wrote: never raw to a terminal.
        # Each field on its own, so a line break in a title cannot forge another result.
        title, uri = printable(chunk.title), printable(chunk.source_uri)
        text = printable(" ".join(chunk.text.split())[:300])
        out.write(
            f"[{n}] {title}{where} ({chunk.classification}) score={item.score:.4f}\n"
            f"    {uri}\n"
            f"    {text}\n"
        )
    if args.no_rerank is False and not result.reranked:
        out.write(printable(f"(not reranked: {result.rerank_note})") + "\n")
    return 0
