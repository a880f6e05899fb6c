"""Authentication: API keys, HS256 and JWKS bearer tokens, act-for, and what a body cannot claim."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from citewell.api.main import create_app
from citewell.core.errors import ConfigurationError
from citewell.retrieval.principals import hash_api_key
from tests.api.conftest import (
    JWT_SECRET,
    KEYS,
    FakeServingIndex,
    audit_lines,
    hs256_token,
    load_chunks,
)

QUERY = {"query": "cerebral white matter development in newborn infants", "k": 10}


def _search(client: TestClient, headers: dict[str, str], body: dict | None = None):
    return client.post("/v1/search", json=body or QUERY, headers=headers)


def _classifications(response) -> set[str]:
    return {hit["classification"] for hit in response.json()["results"]}


def test_no_credentials_is_401_with_challenge(client):
    response = _search(client, {})
    assert response.status_code == 401
    assert "Bearer" in response.headers["www-authenticate"]
    assert response.json() == {"detail": "authentication required"}


def test_bad_api_key_is_401(client, fake_index):
    response = _search(client, {"X-API-Key": "not-a-key"})
    assert response.status_code == 401
    assert fake_index.seen == []  # the service was never called


def test_api_key_principal_sees_only_its_scope(client, fake_index):
    response = _search(client, {"X-API-Key": KEYS["alice"]})
    assert response.status_code == 200
    body = response.json()
    assert body["principal"] == "alice"
    # alice: internal clearance, engineering + everyone → public and internal, never hr.
    assert _classifications(response) == {"public", "internal"}
    assert len(body["results"]) == 4
    principal, _ = fake_index.seen[-1]
    assert principal.groups == frozenset({"engineering"})


def test_api_key_and_bearer_together_is_401(client):
    headers = {"X-API-Key": KEYS["alice"], "Authorization": f"Bearer {hs256_token()}"}
    assert _search(client, headers).status_code == 401


def test_hs256_token_gives_claimed_groups_and_clearance(client, fake_index):
    token = hs256_token(sub="carol", clearance="restricted", groups=["hr"])
    response = _search(client, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["principal"] == "carol"
    assert _classifications(response) == {"public", "confidential", "restricted"}
    principal, _ = fake_index.seen[-1]
    assert (principal.clearance, principal.groups) == ("restricted", frozenset({"hr"}))


@pytest.mark.parametrize(
    ("token_kwargs", "detail"),
    [
        ({"expires_in": -120}, "bearer token expired"),
        ({"secret": "another-secret-0123456789-abcdefghijkl"}, "invalid bearer token"),
        ({"clearance": "top-secret"}, "bearer token has an unknown clearance"),
        ({"clearance": None}, "bearer token has no clearance claim"),
        ({"groups": "hr"}, "bearer token groups claim must be a list"),
    ],
)
def test_invalid_tokens_are_401(client, fake_index, token_kwargs, detail):
    token = hs256_token(**token_kwargs)
    response = _search(client, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["detail"] == detail
    assert fake_index.seen == []


def test_token_without_exp_is_401(client):
    token = jwt.encode(
        {"sub": "bob", "clearance": "public", "groups": []},
        JWT_SECRET,
        algorithm="HS256",
    )
    assert _search(client, {"Authorization": f"Bearer {token}"}).status_code == 401


def test_audience_and_issuer_are_checked(make_settings, principals_file, shared_data):
    settings = make_settings(
        principals_file=principals_file,
        jwt_secret=JWT_SECRET,
        jwt_audience="citewell",
        jwt_issuer="https://idp.example",
    )
    app = create_app(settings, FakeServingIndex(load_chunks(shared_data), settings))
    with TestClient(app) as client:
        good = hs256_token(aud="citewell", iss="https://idp.example")
        wrong_aud = hs256_token(aud="payroll", iss="https://idp.example")
        wrong_iss = hs256_token(aud="citewell", iss="https://evil.example")
        no_aud = hs256_token(iss="https://idp.example")
        assert _search(client, {"Authorization": f"Bearer {good}"}).status_code == 200
        for token in (wrong_aud, wrong_iss, no_aud):
            assert _search(client, {"Authorization": f"Bearer {token}"}).status_code == 401


@pytest.fixture
def rsa_keys(tmp_path: Path):
    """A JWKS file with one RSA public key, and the private keys to sign with."""
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(good.public_key()))
    jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")
    return path, good, other


def _rs256(private_key, kid: str = "k1", **claims) -> str:
    body: dict[str, object] = {"sub": "dave", "clearance": "internal", "groups": ["engineering"]}
    body.update(claims)
    body.setdefault("exp", int(time.time() + 300))
    return jwt.encode(body, private_key, algorithm="RS256", headers={"kid": kid})


def test_jwks_rs256_tokens(make_settings, principals_file, shared_data, rsa_keys):
    jwks_path, good, other = rsa_keys
    settings = make_settings(principals_file=principals_file, jwt_jwks_file=jwks_path)
    app = create_app(settings, FakeServingIndex(load_chunks(shared_data), settings))
    public_pem = good.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with TestClient(app) as client:
        ok = _search(client, {"Authorization": f"Bearer {_rs256(good)}"})
        assert ok.status_code == 200
        assert ok.json()["principal"] == "dave"
        assert _classifications(ok) == {"public", "internal"}
        # Signed by a key not in the JWKS, or naming an unknown kid.
        assert _search(client, {"Authorization": f"Bearer {_rs256(other)}"}).status_code == 401
        assert (
            _search(client, {"Authorization": f"Bearer {_rs256(good, kid='k9')}"}).status_code
            == 401
        )
        # Algorithm confusion: an HS256 token whose HMAC key is the public key must not verify.
        forged = _hmac_token(
            {"alg": "HS256", "typ": "JWT", "kid": "k1"},
            {"sub": "eve", "clearance": "restricted", "groups": ["hr"], "exp": time.time() + 60},
            public_pem,
        )
        assert _search(client, {"Authorization": f"Bearer {forged}"}).status_code == 401
        # Key rotation: a key added to the JWKS file is accepted without a restart.
        rotated = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key()))
        rotated.update({"kid": "k2", "alg": "RS256"})
        keys = json.loads(jwks_path.read_text())["keys"] + [rotated]
        jwks_path.write_text(json.dumps({"keys": keys}))
        os.utime(jwks_path, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        token = _rs256(other, kid="k2")
        assert _search(client, {"Authorization": f"Bearer {token}"}).status_code == 200


def _hmac_token(header: dict, claims: dict, key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("alg", [["HS256"], {"name": "HS256"}, 256])
def test_token_whose_alg_header_is_not_a_string_is_401_and_audited(
    client, fake_index, api_settings, alg
):
    """A forged header with a list or object as ``alg`` was a 500 (an unhashable value looked up
    in the set of algorithms), unaudited, for a caller with no credentials at all."""
    claims = {"sub": "eve", "clearance": "restricted", "groups": ["hr"], "exp": time.time() + 60}
    token = _hmac_token({"alg": alg, "typ": "JWT"}, claims, JWT_SECRET.encode())
    for headers in (
        {"Authorization": f"Bearer {token}"},
        {"X-API-Key": KEYS["gateway"], "X-Act-For": token},
    ):
        response = _search(client, headers)
        assert response.status_code == 401, response.text
        assert response.json() == {"detail": "token signed with an unknown key or algorithm"}
    assert fake_index.seen == []
    lines = audit_lines(api_settings)
    assert [(x["event"], x["outcome"], x["reason"]) for x in lines] == [
        ("auth", "denied", "jwt_key"),
        ("act_for", "denied", "jwt_key"),
    ]


@pytest.mark.parametrize(
    "extra",
    [
        {"groups": ["hr"]},
        {"clearance": "restricted"},
        {"principal": "hrbot"},
        {"filters": {"groups": ["hr"]}},
        {"filters": {"classification": "restricted"}},
    ],
)
def test_body_cannot_assert_groups_or_clearance(client, fake_index, extra):
    response = _search(client, {"X-API-Key": KEYS["alice"]}, {**QUERY, **extra})
    assert response.status_code == 422
    assert fake_index.seen == []


def test_act_for_runs_as_end_user_and_is_audited(client, fake_index, api_settings):
    user_token = hs256_token(sub="frank", clearance="internal", groups=["engineering"])
    response = _search(client, {"X-API-Key": KEYS["gateway"], "X-Act-For": user_token})
    assert response.status_code == 200
    assert response.json()["principal"] == "frank"
    assert _classifications(response) == {"public", "internal"}
    principal, _ = fake_index.seen[-1]
    assert principal.groups == frozenset({"engineering"})  # not the gateway's "service"
    lines = audit_lines(api_settings)
    act = [line for line in lines if line["event"] == "act_for"]
    search = [line for line in lines if line["event"] == "search"]
    assert act[-1]["outcome"] == "ok"
    assert (act[-1]["caller"], act[-1]["principal"]) == ("search-gateway", "frank")
    assert (search[-1]["caller"], search[-1]["principal"]) == ("search-gateway", "frank")


def test_act_for_never_exceeds_the_gateway_clearance(client, fake_index):
    # The gateway holds "confidential"; a user token claiming "restricted" is capped.
    user_token = hs256_token(sub="gina", clearance="restricted", groups=["hr"])
    response = _search(client, {"X-API-Key": KEYS["gateway"], "X-Act-For": user_token})
    assert response.status_code == 200
    assert _classifications(response) == {"public", "confidential"}
    assert fake_index.seen[-1][0].clearance == "confidential"


def test_act_for_by_others_is_403_and_audited(client, fake_index, api_settings):
    user_token = hs256_token(sub="frank", clearance="restricted", groups=["hr"])
    response = _search(client, {"X-API-Key": KEYS["alice"], "X-Act-For": user_token})
    assert response.status_code == 403
    assert fake_index.seen == []
    denied = audit_lines(api_settings)[-1]
    assert (denied["event"], denied["outcome"], denied["caller"]) == ("act_for", "denied", "alice")
    # A bearer-token caller cannot act for anyone either, even with a valid user token.
    bearer = hs256_token(sub="search-gateway", clearance="restricted", groups=["service"])
    response = _search(client, {"Authorization": f"Bearer {bearer}", "X-Act-For": user_token})
    assert response.status_code == 403


def test_act_for_with_invalid_user_token_is_401(client, fake_index):
    bad = hs256_token(sub="frank", expires_in=-300)
    response = _search(client, {"X-API-Key": KEYS["gateway"], "X-Act-For": bad})
    assert response.status_code == 401
    assert fake_index.seen == []


def test_principals_file_changes_apply_without_restart(client, principals_file):
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 200
    body = yaml.safe_load(principals_file.read_text())
    del body["principals"]["alice"]  # revoke alice
    body["principals"]["judy"] = {"clearance": "public", "api_key_sha256": hash_api_key("judy-k")}
    principals_file.write_text(yaml.safe_dump(body))
    os.utime(principals_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 401
    assert _search(client, {"X-API-Key": "judy-k"}).json()["principal"] == "judy"
    # A broken edit is refused and the last valid file stays in force.
    principals_file.write_text("principals: [not, a, mapping")
    os.utime(principals_file, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    assert _search(client, {"X-API-Key": "judy-k"}).status_code == 200


def test_a_removed_principals_file_revokes_every_key_until_it_is_back(client, principals_file):
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 200
    kept = principals_file.read_text()
    principals_file.unlink()  # an operator revoking every key, or a file moved away
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 401
    principals_file.write_text(kept)
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 200


def _replace_keeping_mtime(path: Path, text: str) -> None:
    """Replace ``path`` by a new file with the old one's modification time, as ``rsync -a``,
    ``cp -p``, ``tar x`` or a switched symlink into a store of fixed-mtime files (Nix) do."""
    mtime_ns = path.stat().st_mtime_ns
    staged = path.with_name(path.name + ".new")
    staged.write_text(text, encoding="utf-8")
    os.utime(staged, ns=(mtime_ns, mtime_ns))
    os.replace(staged, path)
    assert path.stat().st_mtime_ns == mtime_ns


def test_a_principals_file_replaced_with_the_same_mtime_still_revokes(client, principals_file):
    """The file was re-read only when its mtime changed: a revocation deployed with the old
    file's mtime kept the revoked key working until the next restart."""
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 200
    body = yaml.safe_load(principals_file.read_text())
    del body["principals"]["alice"]
    _replace_keeping_mtime(principals_file, yaml.safe_dump(body))
    assert _search(client, {"X-API-Key": KEYS["alice"]}).status_code == 401, (
        "a revoked key must be refused once the file no longer names it"
    )
    # Edited in place, same size, mtime put back (``cp -p`` onto the file): a lowered
    # clearance applies too.
    body = yaml.safe_load(principals_file.read_text())
    text = yaml.safe_dump(body)
    lowered = text.replace("clearance: restricted", "clearance: public    ")
    assert len(lowered) == len(text) and lowered != text
    mtime_ns = principals_file.stat().st_mtime_ns
    time.sleep(0.05)  # past the file system's timestamp tick
    principals_file.write_text(lowered, encoding="utf-8")
    os.utime(principals_file, ns=(mtime_ns, mtime_ns))
    hits = _search(client, {"X-API-Key": KEYS["hrbot"]})
    assert hits.status_code == 200
    assert _classifications(hits) <= {"public"}, "a lowered clearance must apply"


def test_a_jwks_file_replaced_with_the_same_mtime_drops_the_removed_key(
    make_settings, principals_file, shared_data, rsa_keys
):
    """A key removed from the JWKS file (a compromised key rotated out) stayed accepted when the
    new file kept the old one's mtime."""
    jwks_path, good, other = rsa_keys
    settings = make_settings(principals_file=principals_file, jwt_jwks_file=jwks_path)
    app = create_app(settings, FakeServingIndex(load_chunks(shared_data), settings))
    with TestClient(app) as client:
        assert _search(client, {"Authorization": f"Bearer {_rs256(good)}"}).status_code == 200
        replacement = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key()))
        replacement.update({"kid": "k2", "alg": "RS256"})
        _replace_keeping_mtime(jwks_path, json.dumps({"keys": [replacement]}))
        assert _search(client, {"Authorization": f"Bearer {_rs256(good)}"}).status_code == 401, (
            "a key removed from the JWKS file must be refused"
        )
        token = _rs256(other, kid="k2")
        assert _search(client, {"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("content", [None, "{not json", '{"keys": [{"kty": "nope"}]}'])
def test_a_jwks_file_that_cannot_be_used_fails_at_start(
    make_settings, principals_file, shared_data, tmp_path: Path, content: str | None
) -> None:
    """The JWKS file was first read on the first bearer token: the server started (and said
    ready) with a missing or broken file, and every JWT request was a 500, as the principals
    file fails at start instead."""
    jwks = tmp_path / "jwks.json"
    if content is not None:
        jwks.write_text(content, encoding="utf-8")
    settings = make_settings(principals_file=principals_file, jwt_jwks_file=jwks)
    with pytest.raises(ConfigurationError, match=r"JWKS file .*jwks\.json"):
        create_app(settings, FakeServingIndex(load_chunks(shared_data), settings))
