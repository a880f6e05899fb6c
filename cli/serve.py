"""``citewell serve``: run the retrieval API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from citewell.cli.common import add_index_options, fail, load_settings
from citewell.core.errors import CitewellError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the HTTP API (search, health, metrics; OpenAPI at /docs)",
        description="Serve POST /v1/search, /healthz, /readyz and /metrics. Credentials come "
        "from CITEWELL_PRINCIPALS_FILE (API keys) and CITEWELL_JWT_SECRET or "
        "CITEWELL_JWT_JWKS_FILE (bearer tokens).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_index_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports here so `citewell --help` stays fast.
    import uvicorn

    from citewell.api.main import create_app

    try:
        settings = load_settings(args)
        app = create_app(settings)  # fails fast on a bad principals file
    except CitewellError as exc:
        return fail(str(exc))
    # log_config=None: keep the JSON logging configured by load_settings.
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False)
    return 0
