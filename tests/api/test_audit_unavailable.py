"""An audit log that cannot be written fails closed: 503, nothing answered unaudited."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citewell.api.errors import AUDIT_UNAVAILABLE_MESSAGE
from citewell.api.main import create_app
from citewell.core.settings import Settings
from tests.api.conftest import KEYS, FakeServingIndex

ALICE = {"X-API-Key": KEYS["alice"]}
QUERY = "cerebral white matter development in newborn infants"


@pytest.fixture
def blocked_client(api_settings: Settings, fake_index: FakeServingIndex, tmp_path: Path):
    # The audit log's folder is a regular file: every append fails with an OSError.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    settings = api_settings.model_copy(update={"audit_log": blocker / "audit.jsonl"})
    with TestClient(create_app(settings, fake_index)) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/search", {"query": QUERY, "k": 3}),
        ("/v1/answer", {"question": QUERY}),
        (
            "/v1/chat/completions",
            {"model": "citewell", "messages": [{"role": "user", "content": QUERY}]},
        ),
    ],
)
def test_unwritable_audit_log_is_503_without_results(blocked_client, api_settings, path, body):
    if "model" in body:
        body = {**body, "model": api_settings.index}
    response = blocked_client.post(path, json=body, headers=ALICE)
    assert response.status_code == 503
    assert response.json()["detail"] == AUDIT_UNAVAILABLE_MESSAGE
    assert response.headers["Retry-After"]
    text = response.text
    assert "results" not in response.json()
    assert "white matter" not in text.lower()
