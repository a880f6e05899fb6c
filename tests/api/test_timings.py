"""Server timings (``took_ms``, answer ``timings``) go to operator principals only: how long a
query took depends on the whole index, including what the caller may not see (SECURITY.md,
timing side channel)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from citewell.api.routes import answer as answer_route
from tests.agent.fakes import HashingEmbedder
from tests.api.conftest import KEYS, hs256_token

QUERY = {"query": "white matter", "k": 3}


def _search(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    response = client.post("/v1/search", json=QUERY, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_took_ms_is_absent_for_users_and_present_for_operators(client: TestClient) -> None:
    assert "took_ms" not in _search(client, {"X-API-Key": KEYS["alice"]})
    assert "took_ms" not in _search(client, {"Authorization": f"Bearer {hs256_token()}"})
    operator = _search(client, {"X-API-Key": KEYS["ops"]})
    assert isinstance(operator["took_ms"], float) and operator["took_ms"] >= 0


def test_a_token_cannot_claim_to_be_an_operator(client: TestClient) -> None:
    token = hs256_token(sub="ops", operator=True, can_act_for=True)
    assert "took_ms" not in _search(client, {"Authorization": f"Bearer {token}"})


def test_an_operator_acting_for_a_user_gets_no_timings(client: TestClient) -> None:
    # The response is the end user's: it must not carry what the user may not learn.
    headers = {"X-API-Key": KEYS["ops-gateway"], "X-Act-For": hs256_token(sub="bob")}
    body = _search(client, headers)
    assert body["principal"] == "bob"
    assert "took_ms" not in body


def test_answer_timings_only_for_operators(client: TestClient, fake_index) -> None:
    fake_index.embedder = HashingEmbedder()
    app: Any = client.app
    if not any(getattr(r, "path", None) == "/v1/answer" for r in app.routes):
        app.include_router(answer_route.router)
    question = {"question": "What changes in newborn white matter?"}
    user = client.post("/v1/answer", json=question, headers={"X-API-Key": KEYS["alice"]})
    assert user.status_code == 200, user.text
    assert "timings" not in user.json()
    ops = client.post("/v1/answer", json=question, headers={"X-API-Key": KEYS["ops"]})
    assert ops.status_code == 200, ops.text
    assert ops.json()["timings"]["total_ms"] >= 0


def test_openapi_documents_took_ms_as_optional(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SearchResponseBody"]
    assert "took_ms" in schema["properties"]
    assert "took_ms" not in schema.get("required", [])
