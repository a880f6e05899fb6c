"""``citewell mcp``: serve the search and answer tools over MCP on stdio, as one principal.

A principal named with ``--user`` is looked up in the principals file again for every tool call
(as ``citewell serve`` does for every request), so a session kept open for days never keeps a
clearance or group taken away, nor serves a user removed from the file.

MCP over HTTP is served by ``citewell serve`` at ``/mcp``, behind the API's authentication;
this command never opens a network listener.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from citewell.cli.arguments import Pattern
from citewell.cli.common import add_caller_options, fail, load_caller, reporting_errors
from citewell.core.errors import CitewellError

EPILOG = """example (after `citewell demo`, which builds the index `demo`):
  CITEWELL_PRINCIPALS_FILE=examples/principals.yaml citewell mcp --index demo --user carol

MCP over HTTP: `citewell serve` answers at /mcp with the same credentials as /v1/*."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve search and answer tools over MCP (stdio) for agent frameworks",
        description="Serve the `search` and `answer` tools over MCP on stdin/stdout, as the "
        "principal given here (a --user is looked up in the principals file again for every "
        "tool call). Every tool call is audited (CITEWELL_AUDIT_LOG).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_caller_options(parser)
    parser.add_argument(
        "--transport",
        type=Pattern(
            r"^stdio$",
            "transport (only stdio here: MCP over HTTP is served by `citewell serve` at /mcp)",
            "stdio",
        ),
        default="stdio",
        help="stdio (the only transport here; for HTTP use `citewell serve`, path /mcp)",
    )
    parser.set_defaults(func=reporting_errors(run))


def run(args: argparse.Namespace) -> int:
    from citewell.agent.factory import build_agent
    from citewell.api.audit import AuditLog
    from citewell.api.auth import AuthContext, LocalPrincipal, PrincipalsFile
    from citewell.api.mcp_server import stdio_mcp_server
    from citewell.api.metrics import ApiMetrics
    from citewell.api.operations import Operations
    from citewell.retrieval.service import open_search_service

    # stdout is the MCP channel: logs go to stderr (configure_logging does that).
    settings, principal = load_caller(args)
    service = open_search_service(settings)
    try:
        try:
            # Fail now, with the reason, rather than on every tool call.
            service.warm_up()
        except CitewellError as exc:
            return fail(f"{exc}{_available_indexes(settings.data_dir, settings.index)}")
        agent = build_agent(settings, service, service.embedder)
        operations = Operations(
            settings,
            service,
            lambda: agent,
            AuditLog(
                settings.audit_log or settings.data_dir / "audit.jsonl",
                log_queries=settings.audit_log_queries,
            ),
            ApiMetrics(),
        )
        caller: AuthContext | LocalPrincipal
        if args.user and settings.principals_file is not None:
            caller = LocalPrincipal(
                principal.name, PrincipalsFile(settings.principals_file, settings.scheme)
            )
        else:
            # --clearance/--groups: the flags are the principal; no file can change it.
            caller = AuthContext(principal=principal, method="local")
        server = stdio_mcp_server(operations, caller)
        server.run("stdio")
    finally:
        service.close()
    return 0


def _available_indexes(data_dir: Path, wanted: str) -> str:
    root = data_dir / "indexes"
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    names = [n for n in names if n != wanted]
    if not names:
        return f" (no index in {root}; `citewell demo` builds the sample index `demo`)"
    return f" (indexes in {root}: {', '.join(names)}; pick one with --index)"
