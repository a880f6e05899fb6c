"""``citewell index versions|rollback``: list an index's published versions, roll back."""

from __future__ import annotations

import argparse
import sys

from citewell.cli.common import add_index_options, fail, load_settings, print_json
from citewell.core.errors import CitewellError
from citewell.retrieval.index import IndexLayout, rollback


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("index", help="list index versions or roll back")
    actions = parser.add_subparsers(dest="index_command", required=True)
    versions = actions.add_parser("versions", help="list published versions (* = serving)")
    add_index_options(versions)
    versions.add_argument("--json", action="store_true", help="print as JSON")
    versions.set_defaults(func=run_versions)
    back = actions.add_parser(
        "rollback", help="serve an earlier version (default: the one before the current)"
    )
    add_index_options(back)
    back.add_argument("--to", dest="to_version", help="version to serve, e.g. v000007")
    back.add_argument("--json", action="store_true", help="print as JSON")
    back.set_defaults(func=run_rollback)


def run_versions(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
        layout = IndexLayout(settings, settings.index)
        current = layout.current_version()
        rows = [layout.read_meta(version) for version in layout.versions()]
    except CitewellError as exc:
        return fail(str(exc))
    if args.json:
        print_json(
            {
                "index": layout.name,
                "current": current,
                "versions": [meta.model_dump(mode="json") for meta in rows],
            }
        )
        return 0
    for meta in rows:
        mark = "*" if meta.version == current else " "
        sys.stdout.write(
            f"{mark} {meta.version}  {meta.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{meta.documents} documents, {meta.chunks} chunks\n"
        )
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
        version = rollback(settings, settings.index, args.to_version)
    except CitewellError as exc:
        return fail(str(exc))
    if args.json:
        print_json({"index": settings.index, "current": version})
    else:
        sys.stdout.write(f"index {settings.index} now serves {version}\n")
    return 0
