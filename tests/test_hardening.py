"""Security headers on every response, and the time budget of a hook call.

Headers: nosniff, no referrer, no framing everywhere; the API gets
``Content-Security-Policy: default-src 'none'`` and ``Cache-Control: no-store``,
the /sandbox page a same-origin policy it can live with.

Time budget (REQUEST_TIME_BUDGET_SECONDS): a hook call that would take longer
answers 503 with Retry-After and a JSON error, never a 500; the FHIR fetch gets
only what is left of the budget.
"""

from __future__ import annotations

import io
import time

import pytest

from cds_service.errors import ClientError
from cds_service.time_budget import Deadline
from cds_service.web.headers import API_CSP
from tests.fhir_server import FakeFhirServer
from tests.source_case import CASE_1, PV, PV_ID, SOME_JWKS, case1_request, module_app

ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
          "X-Frame-Options": "DENY"}


app = module_app()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def assert_api_headers(response) -> None:
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name
    assert response.headers.get("Content-Security-Policy") == API_CSP
    assert response.headers.get("Cache-Control") == "no-store"


# -- headers -----------------------------------------------------------------------


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/cds-services", 200),
    ("POST", PV, 415),
    ("POST", "/cds-services/no-such-service", 404),
    ("GET", "/no/such/path", 404),
    ("DELETE", "/cds-services", 405),
    ("OPTIONS", "/cds-services", 200),
    ("GET", "/healthz", 200),
    ("GET", "/metrics", 200),
])
def test_every_api_response_carries_the_security_headers(client, method, path, status):
    response = client.open(path, method=method, headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"})
    assert response.status_code == status
    assert_api_headers(response)


def test_a_hook_response_is_never_cached(app, client):
    response = client.post(PV, json=case1_request())
    assert response.status_code == 200
    assert_api_headers(response)


def test_a_jwt_refusal_carries_the_security_headers(make_app):
    client = make_app(JWT_ISSUERS={"https://ehr.example.org": {"jwks": SOME_JWKS}}).test_client()
    response = client.get("/cds-services")
    assert response.status_code == 401
    assert_api_headers(response)


def test_a_body_over_the_limit_gets_413_with_the_security_headers(make_app):
    client = make_app(MAX_REQUEST_BYTES=1000).test_client()
    response = client.post(PV, data=b"{" + b" " * 2000 + b"}",
                           content_type="application/json")
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert_api_headers(response)


def test_a_chunked_body_over_the_limit_gets_413_not_a_truncated_parse(make_app):
    limited = make_app(MAX_REQUEST_BYTES=1000)
    body = b'{"hook": "patient-view"}' + b" " * 2000  # valid JSON if cut at the limit
    response = limited.test_client().post(
        PV, input_stream=io.BytesIO(body), content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert "1000 bytes" in response.get_json()["error"]


def test_an_internal_error_carries_the_security_headers(app, client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["cds"].hooks, "invoke", broken)
    response = client.post(PV, json=case1_request())
    assert response.status_code == 500
    assert_api_headers(response)


@pytest.mark.parametrize("path", ["/sandbox", "/sandbox/static/sandbox.js"])
def test_the_sandbox_gets_a_same_origin_policy_and_no_framing(client, path):
    response = client.get(path)
    if response.status_code == 404:
        pytest.skip("the sandbox is not part of this build")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    for name, value in ALWAYS.items():
        assert response.headers.get(name) == value, name


# -- time budget -------------------------------------------------------------------


def _fetching_request(fhir: FakeFhirServer) -> dict:
    body = case1_request()
    del body["prefetch"]["conditions"]
    body["fhirServer"] = fhir.base_url
    return body


def assert_out_of_time(response) -> None:
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()
    assert "time budget" in body["error"]
    assert "REQUEST_TIME_BUDGET_SECONDS" in body["details"][0]["message"]
    assert_api_headers(response)


def test_a_slow_fhir_server_past_the_budget_gets_503_with_retry_after(make_app):
    app = make_app(REQUEST_TIME_BUDGET_SECONDS=0.5)
    with FakeFhirServer(CASE_1.resources) as fhir:
        fhir.delay_seconds = 2.0
        started = time.monotonic()
        response = app.test_client().post(PV, json=_fetching_request(fhir))
        elapsed = time.monotonic() - started
    assert_out_of_time(response)
    assert elapsed < 1.5, "the FHIR fetch got only what was left of the budget"


def test_a_fhir_server_slower_than_its_own_timeout_is_still_412(make_app):
    app = make_app(REQUEST_TIME_BUDGET_SECONDS=10, FHIR_TOTAL_TIMEOUT=0.3)
    with FakeFhirServer(CASE_1.resources) as fhir:
        fhir.delay_seconds = 1.0
        response = app.test_client().post(PV, json=_fetching_request(fhir))
    assert response.status_code == 412
    assert "Retry-After" not in response.headers


def test_a_call_past_the_budget_without_fetching_gets_503(make_app):
    app = make_app(REQUEST_TIME_BUDGET_SECONDS=1e-6)
    response = app.test_client().post(PV, json=case1_request())
    assert_out_of_time(response)


def test_a_budget_of_zero_means_no_budget(make_app):
    app = make_app(REQUEST_TIME_BUDGET_SECONDS=0)
    response = app.test_client().post(PV, json=case1_request())
    assert response.status_code == 200
    assert "Retry-After" not in response.headers


def test_the_budget_counts_from_the_start_of_the_request(app):
    spent = Deadline(5.0, started=time.perf_counter() - 6.0)
    with pytest.raises(ClientError) as raised:
        app.extensions["cds"].hooks.invoke(PV_ID, case1_request(), deadline=spent)
    assert raised.value.status == 503
