"""``/docs`` works offline: Swagger UI's assets come from a package, not a CDN. Checked in a real
headless Chromium whose only reachable host is the server: the page lists the operations, and
it requested nothing from anywhere else."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from citewell.api.main import create_app
from citewell.core.settings import Settings
from tests.api.conftest import FakeServingIndex
from tests.api.live import live_server
from tests.browser import chromium_or_skip, visit_page

pytestmark = pytest.mark.slow

OPERATIONS = (
    "Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.textContent)"
)


@pytest.fixture
def server(api_settings: Settings, fake_index: FakeServingIndex) -> Iterator[str]:
    chromium_or_skip()
    with live_server(create_app(api_settings, fake_index)) as base:
        yield base


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).netloc for u in urls if urlsplit(u).scheme in ("http", "https", "ws")}


def test_docs_page_references_only_the_server(server):
    for path in ("/docs",):
        html = httpx.get(f"{server}{path}").text
        absolute = re.findall(r"""(?:src|href)\s*=\s*["'](\w+:)?//([^/"']+)""", html)
        assert absolute == [], f"{path} loads from {absolute}"
        assert "cdn." not in html and "googleapis" not in html


def test_swagger_ui_renders_the_operations_offline(server):
    visit = visit_page(
        f"{server}/docs",
        ready="document.querySelectorAll('.opblock-summary-path').length > 0",
        expressions={"operations": OPERATIONS, "title": "document.title"},
    )
    operations = set(visit.values["operations"] or [])
    assert {"/v1/search", "/v1/answer", "/v1/chat/completions", "/v1/models"} <= operations, visit
    host = urlsplit(server).netloc
    assert _hosts(visit.requested) == {host}, visit.requested
    assert not visit.failed, visit.failed


def test_no_redoc_page(server):
    # ReDoc's bundle fetches from cdn.redoc.ly even when served locally: it is not offered.
    assert httpx.get(f"{server}/redoc").status_code == 404
