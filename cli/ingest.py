"""``citewell ingest PATH``: refresh an index from a folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citewell.cli.common import add_index_options, fail, load_settings, print_json
from citewell.core.errors import CitewellError
from citewell.core.models import IngestReport


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest a folder of documents (incremental refresh)"
    )
    parser.add_argument("path", type=Path, help="folder to ingest (recursive)")
    add_index_options(parser)
    parser.add_argument("--source-name", help="name of this source (default: the folder's name)")
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild from scratch instead of refreshing"
    )
    parser.add_argument("--json", action="store_true", help="print the run report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from citewell.ingestion.pipeline import Ingestor  # heavy (models, stores): only when running

    try:
        settings = load_settings(args)
        if not args.path.is_dir():
            return fail(f"not a folder: {args.path}")
        report = Ingestor(settings).ingest_folder(
            args.path,
            index=settings.index,
            source_name=args.source_name,
            progress=not args.json,
            fresh=args.fresh,
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
    out.write(f"index {report.index} → version {report.index_version} in {report.seconds:.1f}s\n")
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
