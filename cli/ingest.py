"""``citewell ingest PATH|s3://bucket/prefix``: refresh an index from a folder or an S3 prefix."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from citewell.cli.arguments import OBJECT_LABELS, SOURCE_NAME, FolderOrS3Prefix
from citewell.cli.common import (
    add_index_options,
    fail,
    load_settings,
    print_json,
    printable,
    reporting_errors,
)
from citewell.core.models import IngestReport
from citewell.core.settings import Settings

if TYPE_CHECKING:
    from citewell.ingestion.progress import IngestProgress
    from citewell.ingestion.sources import S3Location


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest a folder or an S3 prefix of documents (incremental refresh)"
    )
    parser.add_argument(
        "path",
        type=FolderOrS3Prefix(),
        help="folder to ingest (recursive), or s3://bucket/prefix (credentials and endpoint "
        "from the standard AWS chain: AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)",
    )
    add_index_options(parser)
    parser.add_argument(
        "--source-name",
        type=SOURCE_NAME,
        help="name of this source (default: the name the folder is already indexed under, "
        "else the folder's name; for s3:// the bucket's name)",
    )
    parser.add_argument(
        "--object-labels",
        type=OBJECT_LABELS,
        help="S3 only: also trust object 'tags' and/or 'metadata' (classification, groups) "
        "as labels, comma-separated; the most restrictive label wins",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild from scratch instead of refreshing"
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="publish even when the folder or prefix holds no document (removes the source's "
        "documents)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the run report as JSON (no progress bars)"
    )
    parser.set_defaults(func=reporting_errors(run))


def run(args: argparse.Namespace) -> int:
    from citewell.ingestion.pipeline import Ingestor  # heavy (models, stores): only when running
    from citewell.ingestion.progress import NoProgress, TerminalProgress
    from citewell.ingestion.sources import S3Location
    from citewell.ingestion.sources_config import resolve_folder_source

    settings = load_settings(args)
    progress = NoProgress() if args.json else TerminalProgress(announce=True)
    if isinstance(args.path, S3Location):
        report = _ingest_s3(args, args.path, settings, progress)
    else:
        if args.object_labels:
            return fail("--object-labels is for s3:// sources")
        source_name = resolve_folder_source(settings, settings.index, args.path, args.source_name)
        report = Ingestor(settings).ingest_folder(
            args.path,
            index=settings.index,
            source_name=source_name,
            progress=progress,
            fresh=args.fresh,
            allow_empty=args.allow_empty,
        )
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0


def _ingest_s3(
    args: argparse.Namespace, location: S3Location, settings: Settings, progress: IngestProgress
) -> IngestReport:
    from citewell.ingestion.pipeline import Ingestor
    from citewell.ingestion.sources import S3Source

    trusted = set((args.object_labels or "").split(",")) - {""}
    with S3Source(
        location,
        scheme=settings.scheme,
        max_file_bytes=settings.max_file_bytes,
        name=args.source_name,
        object_labels=frozenset(trusted),
        default_groups=frozenset(settings.default_groups),
        max_attempts=settings.s3_max_attempts,
        timeout_s=settings.s3_timeout_s,
    ) as source:
        return Ingestor(settings).ingest_objects(
            source,
            index=settings.index,
            progress=progress,
            fresh=args.fresh,
            allow_empty=args.allow_empty,
        )


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
        out.write(f"  FAILED  {_line(failure.source_uri)}: {_line(failure.reason)}\n")
    for path in report.withdrawn:
        out.write(
            f"  WITHDRAWN (labels cannot be determined; not served until fixed)  {_line(path)}\n"
        )
    for refusal in report.label_refusals:
        out.write(
            f"  LABEL REFUSED (visible to nobody)  {_line(refusal.source_uri)}: "
            f"{_line(refusal.reason)}\n"
        )
    # By relative path, not URI suffix: "sub/a.md" refused must not hide an unlabelled "a.md".
    refused = {refusal.relative_path for refusal in report.label_refusals}
    for path in report.unlabelled:
        # A refused sensitivity label is listed above with its reason; labelling the path
        # would not lift it.
        if path not in refused:
            out.write(f"  UNLABELLED (visible to nobody until labelled)  {_line(path)}\n")


def _line(text: str) -> str:
    """``text`` on one line (a file name may hold a newline): ``common.printable``."""
    return printable(text)
