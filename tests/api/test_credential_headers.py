"""Credential headers in every form a client (or an attacker) may send them: empty, blank,
duplicated, in the wrong place. A malformed credential header is a 400 and the request never
runs, whoever sends it; act-for is allowed only for principals with ``can_act_for``."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import KEYS, audit_lines, hs256_token

QUERY = {"query": "cerebral white matter development in newborn infants", "k": 10}
BLANK_VALUES = ["", " ", "\t", "   \t  "]


def _post(client: TestClient, headers: list[tuple[str, str]], path: str = "/v1/search"):
    # A list of pairs, so that one header can be sent twice.
    return client.post(path, json=QUERY, headers=headers)


@pytest.mark.parametrize("value", BLANK_VALUES)
def test_blank_act_for_is_400_and_nothing_runs(client, fake_index, api_settings, value):
    response = _post(client, [("X-API-Key", KEYS["gateway"]), ("X-Act-For", value)])
    assert response.status_code == 400, response.text
    assert "X-Act-For" in response.json()["detail"]
    assert fake_index.seen == []  # the gateway never ran as itself
    line = audit_lines(api_settings)[-1]
    assert (line["event"], line["outcome"], line["reason"]) == ("act_for", "rejected", "blank")
    assert line["caller"] == "search-gateway"


@pytest.mark.parametrize("value", BLANK_VALUES)
def test_blank_act_for_from_a_principal_without_the_right_is_400(client, fake_index, value):
    response = _post(client, [("X-API-Key", KEYS["alice"]), ("X-Act-For", value)])
    assert response.status_code == 400
    assert fake_index.seen == []


def test_two_act_for_headers_are_400(client, fake_index):
    token = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    headers = [("X-API-Key", KEYS["gateway"]), ("X-Act-For", token), ("X-Act-For", token)]
    assert _post(client, headers).status_code == 400
    # Even when one of them is empty: the server must not pick one.
    headers = [("X-API-Key", KEYS["gateway"]), ("X-Act-For", ""), ("X-Act-For", token)]
    assert _post(client, headers).status_code == 400
    assert fake_index.seen == []


@pytest.mark.parametrize(
    "headers",
    [
        [("X-API-Key", "")],
        [("X-API-Key", "  ")],
        [("X-API-Key", KEYS["alice"]), ("X-API-Key", KEYS["hrbot"])],
        [("Authorization", "Bearer ")],
        [("Authorization", "Bearer    ")],
        [("Authorization", "")],
    ],
    ids=["empty-key", "blank-key", "two-keys", "empty-bearer", "blank-bearer", "empty-auth"],
)
def test_malformed_credential_headers_are_400(client, fake_index, headers):
    response = _post(client, headers)
    assert response.status_code == 400, response.text
    assert fake_index.seen == []


def test_two_authorization_headers_are_400(client, fake_index):
    one = hs256_token(sub="bob", clearance="internal")
    two = hs256_token(sub="carol", clearance="restricted", groups=["hr"])
    headers = [("Authorization", f"Bearer {one}"), ("Authorization", f"Bearer {two}")]
    assert _post(client, headers).status_code == 400
    assert fake_index.seen == []


def test_blank_key_beside_a_valid_bearer_is_400(client, fake_index):
    # Not silently "the bearer wins": the request is ambiguous.
    headers = [("X-API-Key", ""), ("Authorization", f"Bearer {hs256_token()}")]
    assert _post(client, headers).status_code == 400
    assert fake_index.seen == []


def test_act_for_without_the_right_is_403_on_answer_too(client, fake_index):
    token = hs256_token(sub="frank", clearance="restricted", groups=["hr"])
    response = client.post(
        "/v1/answer",
        json={"question": "white matter?"},
        headers={"X-API-Key": KEYS["alice"], "X-Act-For": token},
    )
    assert response.status_code == 403
    assert fake_index.seen == []


@pytest.mark.parametrize("value", BLANK_VALUES)
def test_blank_act_for_is_400_on_answer(client, fake_index, value):
    response = client.post(
        "/v1/answer",
        json={"question": "white matter?"},
        headers=[("X-API-Key", KEYS["gateway"]), ("X-Act-For", value)],
    )
    assert response.status_code == 400
    assert fake_index.seen == []


def test_delegated_search_is_audited_with_both_principals(client, fake_index, api_settings):
    token = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    response = _post(client, [("X-API-Key", KEYS["gateway"]), ("X-Act-For", f" {token} ")])
    assert response.status_code == 200  # surrounding whitespace is not part of the token
    search = [line for line in audit_lines(api_settings) if line["event"] == "search"][-1]
    assert (search["principal"], search["caller"]) == ("frank", "search-gateway")


def test_malformed_headers_are_counted_as_denials(client):
    _post(client, [("X-API-Key", KEYS["gateway"]), ("X-Act-For", "")])
    metrics = client.get("/metrics").text
    assert 'citewell_access_denials_total{reason="blank",status="400"} 1.0' in metrics


def test_api_key_as_bearer_token(client, fake_index, api_settings):
    # OpenAI-style clients can only send "Authorization: Bearer <key>".
    response = _post(client, [("Authorization", f"Bearer {KEYS['alice']}")])
    assert response.status_code == 200, response.text
    assert response.json()["principal"] == "alice"
    line = [x for x in audit_lines(api_settings) if x["event"] == "search"][-1]
    assert line["auth_method"] == "api_key"
    assert _post(client, [("Authorization", "Bearer not-a-key")]).status_code == 401


def test_gateway_key_as_bearer_may_act_for(client, fake_index, api_settings):
    token = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    headers = [("Authorization", f"Bearer {KEYS['gateway']}"), ("X-Act-For", token)]
    response = _post(client, headers)
    assert response.status_code == 200
    assert response.json()["principal"] == "frank"
    headers = [("Authorization", f"Bearer {KEYS['gateway']}"), ("X-Act-For", " ")]
    assert _post(client, headers).status_code == 400
    line = audit_lines(api_settings)[-1]
    assert (line["event"], line["outcome"], line["caller"]) == (
        "act_for",
        "rejected",
        "search-gateway",
    )


def _authenticated_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every route that needs credentials: all of /v1 and /mcp, whatever is added later."""
    routes = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        if path.startswith(("/v1/", "/mcp")):
            methods = sorted(getattr(route, "methods", None) or {"POST"})
            routes.append((path, "POST" if "POST" in methods else methods[0]))
    return routes


def test_every_authenticated_route_refuses_bad_credential_headers(client, fake_index):
    routes = _authenticated_routes(client)
    assert {p for p, _ in routes} >= {
        "/v1/search",
        "/v1/answer",
        "/v1/chat/completions",
        "/v1/models",
        "/mcp",
    }
    user = hs256_token(sub="frank", clearance="restricted", groups=["hr"])
    cases = [
        ([], 401),
        ([("X-API-Key", KEYS["gateway"]), ("X-Act-For", "")], 400),
        ([("X-API-Key", KEYS["gateway"]), ("X-Act-For", "  ")], 400),
        ([("X-API-Key", KEYS["gateway"]), ("X-Act-For", user), ("X-Act-For", user)], 400),
        ([("X-API-Key", KEYS["alice"]), ("X-Act-For", user)], 403),
        ([("Authorization", f"Bearer {KEYS['alice']}"), ("X-Act-For", user)], 403),
        ([("Authorization", f"Bearer {hs256_token()}"), ("X-Act-For", user)], 403),
        ([("X-API-Key", "")], 400),
        ([("X-API-Key", "wrong")], 401),
    ]
    for path, method in routes:
        for headers, status in cases:
            headers = [*headers, ("Accept", "application/json, text/event-stream")]
            response = client.request(method, path, json={}, headers=headers)
            assert response.status_code == status, (path, headers, response.text)
    assert fake_index.seen == []


@pytest.mark.parametrize("name", ["X_Act_For", "Act-For", "X-Act-As", "xactfor"])
def test_act_for_lookalike_header_is_400(client, fake_index, name):
    # Ignoring a mangled act-for header would run the gateway as itself.
    token = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    response = _post(client, [("X-API-Key", KEYS["gateway"]), (name, token)])
    assert response.status_code == 400
    assert "X-Act-For" in response.json()["detail"]
    assert fake_index.seen == []
