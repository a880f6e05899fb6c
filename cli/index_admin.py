"""``citewell index versions|rollback|verify|ready``: list an index's published versions, roll
back, check a version's integrity, and ask whether a search would succeed now (the readiness
check ``/readyz`` uses)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from citewell.cli.arguments import VERSION
from citewell.cli.common import add_index_options, fail, load_settings, print_json, reporting_errors
from citewell.core.errors import CitewellError, IndexIntegrityError
from citewell.core.settings import Settings
from citewell.retrieval.index import IndexLayout, rollback, verify_version

if TYPE_CHECKING:
    from citewell.retrieval.service import ServingIndex


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("index", help="list index versions or roll back")
    actions = parser.add_subparsers(dest="index_command", required=True)
    _action(actions, "versions", run_versions, "list published versions (* = serving)")
    back = _action(
        actions,
        "rollback",
        run_rollback,
        "serve an earlier version (default: the one the current version replaced)",
    )
    back.add_argument(
        "--to", dest="to_version", type=VERSION, help="version to serve, e.g. v000007"
    )
    verify = _action(
        actions,
        "verify",
        run_verify,
        "check a version's files, digests and counts against its record (exit 1 if not)",
    )
    verify.add_argument(
        "--version", type=VERSION, help="version to check (default: the current one)"
    )
    _action(
        actions,
        "ready",
        run_ready,
        "whether a search of the index would succeed now, as /readyz says (exit 1 if not)",
    )


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
) -> argparse.ArgumentParser:
    """An ``index`` action: the index options, ``--json`` and the function that runs it."""
    parser = actions.add_parser(name, help=summary)
    add_index_options(parser)
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.set_defaults(func=reporting_errors(run))
    return parser


def run_versions(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    layout = IndexLayout(settings, settings.index)
    current = layout.current_version()
    rows = [layout.read_meta(version) for version in layout.versions()]
    published = layout.published_versions()
    never_published = [meta.version for meta in rows if meta.version not in published]
    if args.json:
        print_json(
            {
                "index": layout.name,
                "current": current,
                "versions": [meta.model_dump(mode="json") for meta in rows],
                "never_published": never_published,
            }
        )
        return 0
    for meta in rows:
        mark = "*" if meta.version == current else " "
        note = (
            "  (never published: its refresh was stopped)"
            if meta.version in never_published
            else ""
        )
        replaced = f", replaced {meta.replaces}" if meta.replaces else ""
        sys.stdout.write(
            f"{mark} {meta.version}  {meta.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{meta.documents} documents, {meta.chunks} chunks{replaced}{note}\n"
        )
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    version = rollback(settings, settings.index, args.to_version)
    if args.json:
        print_json({"index": settings.index, "current": version})
    else:
        sys.stdout.write(f"index {settings.index} now serves {version}\n")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
        meta = verify_version(settings, settings.index, args.version)
    except IndexIntegrityError as exc:
        if args.json:
            print_json(
                {
                    "ok": False,
                    "index": settings.index,
                    "version": exc.version,
                    "problems": list(exc.problems),
                }
            )
        return fail(str(exc), code=1)
    except CitewellError as exc:
        return fail(str(exc))
    files = len(meta.files) if meta.files is not None else 0
    if args.json:
        print_json(
            {
                "ok": True,
                "index": settings.index,
                "version": meta.version,
                "files": files,
                "documents": meta.documents,
                "chunks": meta.chunks,
                "recorded": meta.files is not None,
            }
        )
    else:
        checked = f"{files} files and counts" if meta.files is not None else "counts only"
        sys.stdout.write(
            f"index {settings.index} version {meta.version}: ok ({checked}; "
            f"{meta.documents} documents, {meta.chunks} chunks)\n"
        )
    return 0


def _serving_index(settings: Settings) -> ServingIndex:
    from citewell.retrieval.service import ServingIndex  # loads models: only for this command

    return ServingIndex(settings, settings.index)


def run_ready(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    service = _serving_index(settings)
    try:
        readiness = service.versions.readiness()
    finally:
        service.close()
    if args.json:
        print_json(readiness)
    elif readiness.ready:
        sys.stdout.write(f"index {settings.index} is ready (version {readiness.version})\n")
    else:
        sys.stdout.write(f"index {settings.index} is not ready: {readiness.reason}\n")
        if readiness.detail:
            sys.stderr.write(f"{readiness.detail}\n")
    return 0 if readiness.ready else 1
