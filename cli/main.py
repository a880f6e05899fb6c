"""The ``citewell`` command. Each subcommand lives in its own module exposing
``register(subparsers)``; this file only wires them together and turns what escapes a command
(Ctrl-C, errors) into one line and an exit status, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from citewell.cli.arguments import CitewellArgumentParser
from citewell.cli.common import fail
from citewell.core.errors import CitewellError
from citewell.ingestion.interrupts import sigint_recorded

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

# Exit status of a run ended by Ctrl-C: 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130


def citewell_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("citewell")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = CitewellArgumentParser(
        prog="citewell", description="Enterprise RAG ingestion and retrieval with citations."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress (JSON lines on stderr)"
    )
    parser.add_argument("--version", action="version", version=f"citewell {citewell_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with sigint_recorded():  # a Ctrl-C lost inside a finaliser still stops the run
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        # Every index write is one transaction: an interrupted run publishes nothing.
        sys.stderr.write("citewell: interrupted; the published version is unchanged\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `citewell search ... | head`: the reader left, nothing to say
        return 0
    except CitewellError as exc:
        return fail(str(exc))
    except Exception as exc:  # a defect: one line; the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with -v for the traceback)"
        return fail(f"unexpected {type(exc).__name__}: {exc}{hint}", 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
