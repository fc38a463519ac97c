"""GET /metrics: Prometheus text format, counted in one process (the Flask test client).

Metrics are process-wide, so every test compares a scrape after its calls with
one before them. Several worker processes are covered in test_metrics_served.py.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from cds_service import metrics
from tests.fhir_server import FakeFhirServer
from tests.source_case import CASE_1, PATIENT_DATA, PV, PV_ID, SOME_JWKS, case1_request, module_app

TOKEN = "metrics-test-access-token-0123456789"


app = module_app(FHIR_RETRIES=0)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for sample in family.samples}


class Delta:
    """What a block of calls added to each sample: ``delta("cds_cards_total", rule=...)``."""

    def __init__(self, client) -> None:
        self.client = client

    def __enter__(self) -> Delta:
        self.before = scrape(self.client)
        return self

    def __exit__(self, *exc: object) -> None:
        self.after = scrape(self.client)

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE cds_requests_total counter" in response.get_data(as_text=True)


def test_metrics_off_is_404(make_app):
    response = make_app(METRICS=False).test_client().get("/metrics")
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_requests_are_counted_by_service_and_status(app, client):
    with Delta(client) as delta:
        assert client.post(PV, json=case1_request()).status_code == 200
        assert client.post(PV, json={"hook": "patient-view"}).status_code == 400
    invoke = {"endpoint": "cds_hooks.invoke", "service": PV_ID}
    assert delta("cds_requests_total", **invoke, status="200") == 1
    assert delta("cds_requests_total", **invoke, status="400") == 1
    assert delta("cds_request_duration_seconds_count", **invoke) == 2


def test_unknown_service_ids_are_counted_as_unknown(client):
    with Delta(client) as delta:
        assert client.post("/cds-services/Casey-Synthetic-1979", json={}).status_code == 404
    assert delta("cds_requests_total", endpoint="cds_hooks.invoke", service="unknown",
                 status="404") == 1
    assert not any("Casey" in str(labels) for _name, labels in delta.after)


def test_latency_buckets_span_5_ms_to_10_s(client):
    client.get("/cds-services")
    buckets = {dict(labels)["le"] for name, labels in scrape(client)
               if name == "cds_request_duration_seconds_bucket"}
    assert {"0.005", "0.01", "0.1", "1.0", "10.0", "+Inf"} <= buckets


def test_cards_are_counted_by_rule_and_indicator(app, client):
    with Delta(client) as delta:
        cards = client.post(PV, json=case1_request()).get_json()["cards"]
    assert sorted(card["source"]["topic"]["code"] for card in cards) == CASE_1.expected_rules
    for (rule, indicator), count in Counter(
            (card["source"]["topic"]["code"], card["indicator"]) for card in cards).items():
        assert delta("cds_cards_total", service=PV_ID, rule=rule,
                     indicator=indicator) == count


def test_metrics_carry_no_patient_data(app, client):
    client.post(PV, json=case1_request())
    text = client.get("/metrics").get_data(as_text=True)
    for secret in PATIENT_DATA:
        assert secret not in text


def _fetching_request(fhir: FakeFhirServer, *, drop: tuple[str, ...]) -> dict:
    body = case1_request()
    for key in drop:
        del body["prefetch"][key]
    body["fhirServer"] = fhir.base_url
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read",
                                 "subject": "cds-service"}
    return body


def test_fhir_fetches_are_counted_by_interaction(app, client):
    with FakeFhirServer(CASE_1.resources) as fhir, Delta(client) as delta:
        body = _fetching_request(fhir, drop=("patient", "conditions"))
        assert client.post(PV, json=body).status_code == 200
    assert delta("cds_fhir_fetches_total", interaction="read", outcome="ok") == 1
    assert delta("cds_fhir_fetches_total", interaction="search", outcome="ok") == 1
    assert delta("cds_fhir_fetch_duration_seconds_count", interaction="search") == 1


def test_failed_fhir_fetches_are_counted(app, client):
    with FakeFhirServer(CASE_1.resources) as fhir, Delta(client) as delta:
        fhir.fail_next(1, status=500)
        client.post(PV, json=_fetching_request(fhir, drop=("conditions",)))
    assert delta("cds_fhir_fetches_total", interaction="search", outcome="failed") == 1


def test_jwt_rejections_are_counted(make_app):
    client = make_app(JWT_ISSUERS={"https://ehr.example.org": {"jwks": SOME_JWKS}}).test_client()
    with Delta(client) as delta:
        assert client.get("/cds-services",
                          headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401
    assert delta("cds_jwt_rejections_total", endpoint="cds_hooks.discovery") == 1


def test_feedback_outcomes_are_counted(client):
    items = [{"card": str(uuid.uuid4()), "outcome": outcome,
              "outcomeTimestamp": "2026-06-15T12:00:00Z"}
             for outcome in ("accepted", "overridden", "overridden")]
    items[0]["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
    with Delta(client) as delta:
        assert client.post(f"{PV}/feedback", json={"feedback": items}).status_code == 200
    assert delta("cds_feedback_total", service=PV_ID, outcome="accepted") == 1
    assert delta("cds_feedback_total", service=PV_ID, outcome="overridden") == 2


def test_a_metrics_failure_never_fails_the_call(client, monkeypatch, caplog):
    def broken():
        raise OSError("the multiprocess folder is gone")

    monkeypatch.setattr(metrics, "_metrics", broken)
    monkeypatch.setattr(metrics, "_failed", set())
    assert client.post(PV, json=case1_request()).status_code == 200
    assert any("metrics: record_request failed" in r.getMessage() for r in caplog.records)


# -- several worker processes -----------------------------------------------------


@pytest.fixture
def isolated_multiprocess(monkeypatch):
    """Undo what switching to multiprocess mode does to this process."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, "")  # remembers the value to restore
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)


def test_one_worker_needs_no_shared_folder(isolated_multiprocess):
    assert metrics.gunicorn_settings(1) == {}
    assert metrics.MULTIPROC_ENV not in os.environ


def test_several_workers_get_a_fresh_folder_removed_on_exit(isolated_multiprocess):
    hooks = metrics.gunicorn_settings(3)
    folder = os.environ[metrics.MULTIPROC_ENV]
    assert os.path.isdir(folder) and not os.listdir(folder)
    assert set(hooks) == {"child_exit", "on_exit"}
    hooks["on_exit"](None)
    assert not os.path.exists(folder)


def test_folders_left_by_killed_servers_are_removed(isolated_multiprocess, tmp_path,
                                                    monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = tmp_path / "cds-metrics-999999999-abc"
    running = tmp_path / f"cds-metrics-{os.getppid()}-def"
    for folder in (killed, running):
        folder.mkdir()
    hooks = metrics.gunicorn_settings(2)
    assert not killed.exists() and running.exists()
    hooks["on_exit"](None)


def test_a_folder_given_by_the_operator_is_used_and_kept(isolated_multiprocess, tmp_path,
                                                         monkeypatch):
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    hooks = metrics.gunicorn_settings(2)
    assert set(hooks) == {"child_exit"}
    assert os.environ[metrics.MULTIPROC_ENV] == str(tmp_path)
