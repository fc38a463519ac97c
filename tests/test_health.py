"""GET /healthz and /readyz: liveness and readiness for the orchestrator.

Outside /cds-services: no JWT, no CORS. Readiness means the knowledge is
loaded and the database answers; a 503 names the check that failed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.source_case import SOME_JWKS, module_app

app = module_app()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_ok_with_every_check(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok",
                                   "checks": {"knowledge": "ok", "database": "ok"}}


def test_readyz_is_503_naming_the_database_when_it_does_not_answer(app, client, monkeypatch):
    def broken() -> bool:
        raise OSError("connection refused by db.internal:5432 for user admin")

    monkeypatch.setattr(app.extensions["cds"].storage, "ping", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"] == {"knowledge": "ok", "database": "failed"}
    assert "db.internal" not in response.get_data(as_text=True)


def test_readyz_is_503_naming_the_knowledge_when_no_service_is_loaded(app, client, monkeypatch):
    monkeypatch.setattr(app.extensions["cds"], "knowledge", SimpleNamespace(services={}))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"knowledge": "failed", "database": "ok"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_operational_endpoints_need_no_jwt_when_jwt_is_on(make_app, path):
    client = make_app(JWT_ISSUERS={"https://ehr.example.org": {"jwks": SOME_JWKS}}).test_client()
    assert client.get("/cds-services").status_code == 401
    assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_operational_endpoints_send_no_cors_headers(client, path):
    response = client.get(path, headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_healthz_refuses_post_with_405(client):
    response = client.post("/healthz")
    assert response.status_code == 405
    assert response.headers["Allow"]
