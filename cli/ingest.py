"""``citewell ingest PATH``: refresh an index from a folder."""

from __future__ import annotations

import argparse
import sys

from citewell.cli.arguments import SOURCE_NAME, ExistingPath
from citewell.cli.common import add_index_options, fail, load_settings, print_json
from citewell.core.errors import CitewellError
from citewell.core.models import IngestReport


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest a folder of documents (incremental refresh)"
    )
    parser.add_argument("path", type=ExistingPath("dir"), help="folder to ingest (recursive)")
    add_index_options(parser)
    parser.add_argument(
        "--source-name",
        type=SOURCE_NAME,
        help="name of this source (default: the name the folder is already indexed under, "
        "else the folder's name)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild from scratch instead of refreshing"
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish even when the folder holds no document (removes the source's documents)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run report as JSON (no progress bars)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from citewell.ingestion.pipeline import Ingestor  # heavy (models, stores): only when running
    from citewell.ingestion.progress import NoProgress, TerminalProgress
    from citewell.ingestion.sources_config import resolve_folder_source

    try:
        settings = load_settings(args)
        source_name = resolve_folder_source(settings, settings.index, args.path, args.source_name)
        report = Ingestor(settings).ingest_folder(
            args.path,
            index=settings.index,
            source_name=source_name,
            progress=NoProgress() if args.json else TerminalProgress(announce=True),
            fresh=args.fresh,
            allow_empty=args.allow_empty,
        )
    except CitewellError as exc:
        return fail(str(exc))
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0


def print_report(report: IngestReport) -> None:
    out = sys.stdout
    if report.index_version is None:
        out.write(f"index {report.index}: nothing published in {report.seconds:.1f}s\n")
    else:
        out.write(
            f"index {report.index} → version {report.index_version} in {report.seconds:.1f}s\n"
        )
    rows = [
        ("added", len(report.added)),
        ("updated", len(report.updated)),
        ("unchanged", len(report.unchanged)),
        ("relabeled", len(report.relabeled)),
        ("deleted", len(report.deleted)),
        ("failed", len(report.failed)),
        ("withdrawn", len(report.withdrawn)),
        ("chunks written", report.chunks_written),
        ("embeddings computed", report.embeddings_computed),
    ]
    for name, value in rows:
        out.write(f"  {name:<20} {value:>7}\n")
    for failure in report.failed:
        out.write(f"  FAILED  {failure.source_uri}: {failure.reason}\n")
    for path in report.withdrawn:
        out.write(f"  WITHDRAWN (labels cannot be determined; not served until fixed)  {path}\n")
    for path in report.unlabelled:
        out.write(f"  UNLABELLED (visible to nobody until labelled)  {path}\n")
