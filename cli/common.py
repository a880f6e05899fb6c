"""Options and helpers shared by subcommands: settings, principals, JSON output."""

from __future__ import annotations

import argparse
import functools
import json
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from citewell.cli.arguments import INDEX_NAME, OutputPath
from citewell.core.errors import CitewellError, ConfigurationError, UsageError
from citewell.core.logging import configure_logging
from citewell.core.models import Principal
from citewell.core.settings import Settings, apply_process_environment
from citewell.retrieval.principals import PrincipalDirectory


def load_settings(args: argparse.Namespace | None = None) -> Settings:
    """Settings from the environment, with ``--index`` and ``--data-dir`` overrides."""
    overrides: dict[str, Any] = {}
    if args is not None:
        if getattr(args, "index", None):
            overrides["index"] = args.index
        if getattr(args, "data_dir", None):
            overrides["data_dir"] = args.data_dir
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigurationError(f"invalid settings (CITEWELL_* variables): {problems}") from exc
    apply_process_environment(settings)
    verbose = bool(getattr(args, "verbose", False))
    configure_logging("INFO" if verbose else "WARNING", json_output=True)
    return settings


def add_index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index", type=INDEX_NAME, help="index name (default: CITEWELL_INDEX or 'default')"
    )
    parser.add_argument(
        "--data-dir",
        type=OutputPath(directory=True),
        help="data directory (default: CITEWELL_DATA_DIR)",
    )


def add_principal_options(parser: argparse.ArgumentParser) -> None:
    who = parser.add_argument_group("principal (who is asking)")
    who.add_argument("--user", help="a principal named in the principals file")
    who.add_argument("--clearance", help="clearance level, e.g. internal")
    who.add_argument("--groups", help="comma-separated groups, e.g. engineering,hr")


def add_caller_options(parser: argparse.ArgumentParser) -> None:
    """Which index and who is asking: the options of every command that reads as a principal."""
    add_index_options(parser)
    add_principal_options(parser)


def load_caller(args: argparse.Namespace) -> tuple[Settings, Principal]:
    """Settings (see :func:`load_settings`) and the principal the options name."""
    settings = load_settings(args)
    return settings, principal_from_args(args, settings)


def principal_from_args(args: argparse.Namespace, settings: Settings) -> Principal:
    """The principal named by ``--user`` or built from ``--clearance``/``--groups``."""
    if args.user and (args.clearance or args.groups):
        raise UsageError("use either --user or --clearance/--groups, not both")
    if args.user:
        if settings.principals_file is None:
            raise UsageError("--user needs CITEWELL_PRINCIPALS_FILE")
        directory = PrincipalDirectory.load(settings.principals_file, settings.scheme)
        principal = directory.get(args.user)
        if principal is None:
            raise ConfigurationError(f"unknown user {args.user!r} in {settings.principals_file}")
        return principal
    if not args.clearance:
        raise UsageError("say who is asking: --user NAME or --clearance LEVEL --groups a,b")
    settings.scheme.rank(args.clearance)
    groups = frozenset(g.strip() for g in (args.groups or "").split(",") if g.strip())
    return Principal(name="cli", clearance=args.clearance, groups=groups)


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` safe to write to a terminal: control characters and line separators escaped
    (``\\x1b``), so text from a file name, a document or an LLM can neither drive the
    terminal (escape sequences) nor split its line and forge another; ``newlines`` keeps
    line breaks and tabs."""
    kept = "\n\t" if newlines else ""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Zl", "Zp") and c not in kept
        else c
        for c in text
    )


def print_json(model: BaseModel | dict[str, Any]) -> None:
    if isinstance(model, BaseModel):
        sys.stdout.write(model.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(json.dumps(model, indent=2, default=str) + "\n")


def reporting_errors(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """The function a command's parser runs: ``run``, with a ``CitewellError`` ending as one
    line on stderr and exit status 2 (as :func:`citewell.cli.main.main` also makes of it),
    however the command is called."""

    @functools.wraps(run)
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CitewellError as exc:
            return fail(str(exc))

    return command


def fail(message: str, code: int = 2) -> int:
    """Print a clear error for the user and return the exit code."""
    sys.stderr.write(f"citewell: error: {message}\n")
    return code
