"""The ``citewell`` command. Each subcommand lives in its own module exposing
``register(subparsers)``; this file only wires them together."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules, in help order. Each defines register(subparsers) and sets
# ``func(args) -> int`` on its parser via set_defaults.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "citewell.cli.ingest",
    "citewell.cli.search",
    "citewell.cli.ask",
    "citewell.cli.serve",
    "citewell.cli.mcp",
    "citewell.cli.evaluate",
    "citewell.cli.reranker",
    "citewell.cli.embedder",
    "citewell.cli.demo",
    "citewell.cli.index_admin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citewell", description="Enterprise RAG ingestion and retrieval with citations."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (JSON lines on stderr)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
