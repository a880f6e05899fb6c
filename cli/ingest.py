"""``citewell ingest PATH|s3://bucket/prefix``: refresh an index from a folder or an S3 prefix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citewell.cli.common import add_index_options, fail, load_settings, print_json
from citewell.core.errors import CitewellError, ConfigurationError
from citewell.core.models import IngestReport
from citewell.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest a folder or an S3 prefix of documents (incremental refresh)"
    )
    parser.add_argument(
        "path",
        help="folder to ingest (recursive), or s3://bucket/prefix (credentials and endpoint "
        "from the standard AWS chain: AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)",
    )
    add_index_options(parser)
    parser.add_argument(
        "--source-name", help="name of this source (default: the folder's or bucket's name)"
    )
    parser.add_argument(
        "--object-labels",
        default="",
        help="S3 only: also trust object 'tags' and/or 'metadata' (classification, groups) "
        "as labels, comma-separated; the most restrictive label wins",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="S3 only: let an empty listing withdraw every document of the source",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="rebuild from scratch instead of refreshing"
    )
    parser.add_argument("--json", action="store_true", help="print the run report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from citewell.ingestion.pipeline import Ingestor  # heavy (models, stores): only when running

    try:
        settings = load_settings(args)
        if str(args.path).startswith("s3://"):
            report = _ingest_s3(args, settings)
        else:
            path = Path(args.path)
            if not path.is_dir():
                return fail(f"not a folder: {args.path}")
            report = Ingestor(settings).ingest_folder(
                path,
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


def _ingest_s3(args: argparse.Namespace, settings: Settings) -> IngestReport:
    from citewell.ingestion.pipeline import Ingestor
    from citewell.ingestion.sources import S3Location, S3Source

    trusted = {part.strip() for part in args.object_labels.split(",") if part.strip()}
    unknown = trusted - {"tags", "metadata"}
    if unknown:
        raise ConfigurationError(f"--object-labels: unknown {', '.join(sorted(unknown))}")
    location = S3Location.parse(args.path)
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
            progress=not args.json,
            fresh=args.fresh,
            allow_empty=args.allow_empty,
        )


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
        ("chunks written", report.chunks_written),
        ("embeddings computed", report.embeddings_computed),
    ]
    for name, value in rows:
        out.write(f"  {name:<20} {value:>7}\n")
    for failure in report.failed:
        out.write(f"  FAILED  {failure.source_uri}: {failure.reason}\n")
    for refusal in report.label_refusals:
        out.write(f"  LABEL REFUSED (visible to nobody)  {refusal.source_uri}: {refusal.reason}\n")
    for path in report.unlabelled:
        out.write(f"  UNLABELLED (visible to nobody until labelled)  {path}\n")
