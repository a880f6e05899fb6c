"""``citewell mcp``: serve the search and answer tools over MCP (stdio or HTTP)."""

from __future__ import annotations

import argparse

from citewell.cli.common import (
    add_caller_options,
    fail,
    load_caller,
)
from citewell.core.errors import CitewellError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mcp", help="serve search and answer tools over MCP for agent frameworks"
    )
    add_caller_options(parser)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from citewell.agent.factory import build_agent
    from citewell.api.mcp_server import build_mcp_server
    from citewell.retrieval.service import open_search_service

    try:
        # stdout is the MCP channel on stdio: logs go to stderr (configure_logging does that).
        settings, principal = load_caller(args)
        service = open_search_service(settings)
    except CitewellError as exc:
        return fail(str(exc))
    try:
        server = build_mcp_server(
            service, build_agent(settings, service, service.embedder), principal
        )
        if args.transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=args.host, port=args.port)
    finally:
        service.close()
    return 0
