"""CORS for browser clients such as the CDS Hooks sandbox (CONTRACT §1, CORS_ORIGINS)."""

from __future__ import annotations

import json

import pytest

from cds_service import create_app

ENDPOINTS = [
    "/cds-services",
    "/cds-services/spine-postop-patient-view",
    "/cds-services/spine-postop-order-select/feedback",
]
SANDBOX = "https://sandbox.cds-hooks.org"
OTHER = "https://evil.example"
SANDBOX_JWKS = {"keys": [{
    "kty": "EC", "use": "sig", "crv": "P-384", "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
    "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
    "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
    "alg": "ES384"}]}


def _client(tmp_path_factory, **config):
    folder = tmp_path_factory.mktemp("db")
    return create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}", "TESTING": True,
                       **config}).test_client()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return _client(tmp_path_factory)


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    return _client(tmp_path_factory, CORS_ORIGINS=[SANDBOX])


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    return _client(tmp_path_factory,
                   JWT_ISSUERS={"https://sandbox.cds-hooks.org": {"jwks": SANDBOX_JWKS}})


def preflight(client, path: str, origin: str = SANDBOX, method: str = "POST"):
    return client.options(path, headers={
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    })


def header_set(response, name: str) -> set[str]:
    return {v.strip().lower() for v in response.headers.get(name, "").split(",") if v.strip()}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_succeeds(client, path):
    assert preflight(client, path).status_code in (200, 204)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_allows_the_origin(client, path):
    allowed = preflight(client, path).headers.get("Access-Control-Allow-Origin")
    assert allowed in ("*", SANDBOX)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_allows_authorization_and_content_type(client, path):
    assert {"authorization", "content-type"} <= header_set(preflight(client, path),
                                                          "Access-Control-Allow-Headers")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_allows_post(client, path):
    assert "post" in header_set(preflight(client, path), "Access-Control-Allow-Methods")


def test_discovery_preflight_allows_get(client):
    response = preflight(client, "/cds-services", method="GET")
    assert "get" in header_set(response, "Access-Control-Allow-Methods")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_never_allows_credentials(client, path):
    assert "Access-Control-Allow-Credentials" not in preflight(client, path).headers


def test_actual_response_carries_allow_origin(client):
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_error_response_carries_allow_origin_so_browsers_can_read_it(client):
    response = client.post("/cds-services/spine-postop-patient-view", data=b"{",
                           content_type="application/json", headers={"Origin": SANDBOX})
    assert response.status_code == 400
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)


def test_any_origin_is_allowed_by_default(client):
    assert preflight(client, ENDPOINTS[1], origin=OTHER).headers.get(
        "Access-Control-Allow-Origin") in ("*", OTHER)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_cors_origins_allows_the_listed_origin(restricted, path):
    assert preflight(restricted, path).headers.get("Access-Control-Allow-Origin") == SANDBOX


@pytest.mark.parametrize("path", ENDPOINTS)
def test_cors_origins_gives_another_origin_no_allow_origin(restricted, path):
    assert "Access-Control-Allow-Origin" not in preflight(restricted, path, origin=OTHER).headers


def test_cors_origins_gives_another_origin_no_allow_origin_on_actual_requests(restricted):
    response = restricted.get("/cds-services", headers={"Origin": OTHER})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_origins_from_env_restricts_origins(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("CDS_CORS_ORIGINS", json.dumps([SANDBOX]))
    client = _client(tmp_path_factory)
    assert "Access-Control-Allow-Origin" not in preflight(client, ENDPOINTS[0],
                                                          origin=OTHER).headers
    assert preflight(client, ENDPOINTS[0]).headers.get("Access-Control-Allow-Origin") == SANDBOX


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_needs_no_token_when_jwt_is_required(secured, path):
    response = preflight(secured, path)
    assert response.status_code in (200, 204)
    assert {"authorization", "content-type"} <= header_set(response,
                                                          "Access-Control-Allow-Headers")


def test_unauthenticated_call_is_still_refused_when_jwt_is_required(secured):
    response = secured.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.status_code == 401
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
