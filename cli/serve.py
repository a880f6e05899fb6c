"""``citewell serve``: run the retrieval API with uvicorn."""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from citewell.cli.arguments import PORT
from citewell.cli.common import add_index_options, fail, load_settings, reporting_errors
from citewell.core.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the HTTP API (search, answer, OpenAI-compatible chat, MCP; OpenAPI at /docs)",
        description="Serve POST /v1/search, /v1/answer, /v1/chat/completions, GET /v1/models, "
        "MCP over streamable HTTP at /mcp, /healthz, /readyz and /metrics. Credentials come "
        "from CITEWELL_PRINCIPALS_FILE (API keys) and CITEWELL_JWT_SECRET or "
        "CITEWELL_JWT_JWKS_FILE (bearer tokens).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=PORT, default=8000, help="port (default 8000; 0: any)")
    add_index_options(parser)
    parser.set_defaults(func=reporting_errors(run))


def banner(settings: Settings, url: str) -> str:
    """What `citewell serve` says once it listens: where, which index and version, the docs."""
    from citewell.cli.main import citewell_version
    from citewell.retrieval.index import IndexLayout

    version = IndexLayout(settings, settings.index).current_version()
    serving = (
        f"index {settings.index} version {version}"
        if version is not None
        else f"index {settings.index} (no published version yet: /readyz answers 503 until "
        f"`citewell ingest FOLDER --index {settings.index}`)"
    )
    return (
        f"citewell {citewell_version()} serving {serving}\n"
        f"  API     {url}/v1/search\n"
        f"  health  {url}/healthz   ready {url}/readyz\n"
        f"  docs    {url}/docs\n"
        "  Ctrl-C to stop\n"
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` as uvicorn binds one (IPv6 for a host with ':')."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so `citewell --help` stays fast.
    import uvicorn

    from citewell.api.main import create_app

    settings = load_settings(args)
    app = create_app(settings)  # fails fast on a bad principals file

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening: say where (the real port when --port 0)
                port = args.port
                for server in self.servers:
                    for sock in server.sockets:
                        port = sock.getsockname()[1]
                host = f"[{args.host}]" if ":" in args.host else args.host
                sys.stdout.write(banner(settings, f"http://{host}:{port}"))
                sys.stdout.flush()

    # Bound here, not by uvicorn, which logs a failed bind as a JSON line and exits 3.
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1)
    # log_config=None: keep the JSON logging configured by load_settings.
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None, access_log=False)
    server = AnnouncingServer(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    # uvicorn returns after a failed bind or startup, having logged why.
    return 0 if server.started else 1
