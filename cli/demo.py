"""``citewell demo``: the main job on the embedded default.

Ingests the bundled sample knowledge base (``examples/kb``) into the embedded store and answers a
sample question with citations as two users of different clearance, showing what each may see.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citewell.cli.arguments import ExistingPath, Text
from citewell.cli.ask import print_answer
from citewell.cli.common import add_index_options, fail, load_settings, reporting_errors
from citewell.cli.ingest import print_report
from citewell.core.models import SearchRequest

# examples/ beside cli/: the checkout's folder in an editable install, citewell/examples (package
# data) in an installed wheel.
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEFAULT_QUESTION = "How many weeks of paid parental leave does a birth parent get?"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="ingest the sample knowledge base and answer as two different users"
    )
    add_index_options(parser)
    parser.add_argument(
        "--kb", type=ExistingPath("dir"), default=EXAMPLES / "kb", help="folder to ingest"
    )
    parser.add_argument(
        "--principals",
        type=ExistingPath("file"),
        default=EXAMPLES / "principals.yaml",
        help="principals file",
    )
    parser.add_argument("--question", type=Text(), default=DEFAULT_QUESTION)
    parser.add_argument(
        "--users", default="alice,carol", help="comma-separated principals to ask as"
    )
    parser.set_defaults(func=reporting_errors(run), index="demo")


def run(args: argparse.Namespace) -> int:
    from citewell.agent.factory import build_agent
    from citewell.ingestion.pipeline import Ingestor
    from citewell.ingestion.progress import TerminalProgress
    from citewell.ingestion.sources_config import resolve_folder_source
    from citewell.retrieval.principals import PrincipalDirectory
    from citewell.retrieval.service import open_search_service

    out = sys.stdout
    settings = load_settings(args)
    if not args.kb.is_dir():
        return fail(f"sample knowledge base not found at {args.kb}; pass --kb PATH")
    directory = PrincipalDirectory.load(args.principals, settings.scheme)
    out.write(f"== Ingesting {args.kb} into index {settings.index!r}\n")
    # The same source name `citewell ingest` gives the folder, so the tour's refresh
    # afterwards finds every document unchanged.
    source_name = resolve_folder_source(settings, settings.index, args.kb)
    report = Ingestor(settings).ingest_folder(
        args.kb,
        index=settings.index,
        source_name=source_name,
        progress=TerminalProgress(),
    )
    print_report(report)
    service = open_search_service(settings)
    try:
        agent = build_agent(settings, service, service.embedder)
        for name in [u.strip() for u in args.users.split(",") if u.strip()]:
            principal = directory.get(name)
            if principal is None:
                return fail(f"unknown user {name!r} in {args.principals}")
            groups = ", ".join(sorted(principal.groups)) or "none"
            out.write(
                f"\n== As {name} (clearance {principal.clearance}; groups {groups}; "
                f"plus {', '.join(settings.default_groups)})\n"
                f"Q: {args.question}\n"
            )
            answer = agent.answer(principal, args.question)
            print_answer(answer)
            visible = service.search(principal, SearchRequest(query=args.question, k=5))
            out.write(f"Top sources {name} may see for this question:\n")
            for item in visible.results:
                chunk = item.chunk
                out.write(f"  - {chunk.title} ({chunk.classification}; {chunk.source_uri})\n")
            if not visible.results:
                out.write("  (none)\n")
    finally:
        service.close()
    return 0
