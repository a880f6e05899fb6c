"""Checks shared by the tests that damage an index or its model: the API reports itself not
ready, and every search mode answers 503 with the fixed message, never results."""

from __future__ import annotations

from fastapi.testclient import TestClient

SEARCH_MODES = ("hybrid", "bm25", "dense")


def assert_not_ready(client: TestClient, reason: str) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["reason"] == reason


def assert_every_mode_refused(
    client: TestClient, query: str, headers: dict[str, str], detail: str, hidden: str
) -> None:
    """Each search mode answers 503 with ``detail``, a retry hint, and nothing of ``hidden``
    (a server path) in the body."""
    for mode in SEARCH_MODES:
        response = client.post(
            "/v1/search", json={"query": query, "k": 5, "mode": mode}, headers=headers
        )
        assert response.status_code == 503, (mode, response.text)
        assert response.json() == {"detail": detail}
        assert response.headers["retry-after"]
        assert hidden not in response.text
