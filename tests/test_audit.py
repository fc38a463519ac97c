"""The audit record: one row per hook call, committed before the response, naming the
call (hookInstance, service, hook, real time, status, duration) and the rules that
fired and were suppressed; nothing about the patient."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cds_service.scenario import build_request, default_fixtures_dir, load_scenario

PV = "spine-postop-patient-view"
CASE = load_scenario(default_fixtures_dir() / "source-case-1.json")
ORDER_CASE = load_scenario(default_fixtures_dir() / "conservative-care-delays-decompression"
                           "--fires-order-sign-esi-several-drafts.json")
AUDIT_COLUMNS = ("hook_instance", "service_id", "hook", "answered_at", "status", "rules_fired",
                 "rules_suppressed", "duration_ms")


@pytest.fixture
def app(make_app):
    return make_app(EVALUATION_TIME="2026-06-15T12:00:00Z", PATIENT_HASH_SECRET="audit-secret")


@pytest.fixture
def client(app):
    return app.test_client()


def audit(app) -> list:
    return app.extensions["cds"].storage.audit_records()


def request_for(app, service_id: str, scenario=CASE) -> dict:
    service = app.extensions["cds"].knowledge.services[service_id]
    return build_request(service, scenario.resources, draft_orders=scenario.draft_orders)


def test_a_hook_call_writes_exactly_one_audit_record(app, client):
    body = request_for(app, PV)
    started = time.perf_counter()
    response = client.post(f"/cds-services/{PV}", json=body)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    [row] = audit(app)
    assert (row.hook_instance, row.service_id, row.hook, row.status) == (
        body["hookInstance"], PV, "patient-view", 200)
    assert 0 < row.duration_ms <= elapsed_ms


def test_the_audit_record_lists_the_rules_that_fired_in_card_order(app, client):
    response = client.post(f"/cds-services/{PV}", json=request_for(app, PV))
    [row] = audit(app)
    shown = [card["source"]["topic"]["code"] for card in response.get_json()["cards"]]
    assert json.loads(row.rules_fired) == shown == [
        "urgent-decompression", "postop-infection-workup", "early-postop-imaging-caveat"]
    assert json.loads(row.rules_suppressed) == []


def test_every_call_of_every_service_has_its_own_record(app, client):
    calls = [(PV, request_for(app, PV)),
             ("spine-postop-order-sign", request_for(app, "spine-postop-order-sign", ORDER_CASE)),
             (PV, request_for(app, PV))]
    for service_id, body in calls:
        assert client.post(f"/cds-services/{service_id}", json=body).status_code == 200
    rows = audit(app)
    assert [(r.service_id, r.hook_instance) for r in rows] == [
        (service_id, body["hookInstance"]) for service_id, body in calls]
    assert json.loads(rows[1].rules_fired) == ["conservative-care-delays-decompression"]


def test_a_call_without_cards_is_audited_too(app, client):
    body = request_for(app, PV)
    body["prefetch"] = {key: {"resourceType": "Bundle", "type": "searchset"}
                        for key in body["prefetch"] if key != "patient"} | {
        "patient": body["prefetch"]["patient"]}
    assert client.post(f"/cds-services/{PV}", json=body).get_json() == {"cards": []}
    [row] = audit(app)
    assert (row.status, json.loads(row.rules_fired)) == (200, [])


def test_the_time_is_the_real_clock_in_utc_not_evaluation_time(app, client):
    before = datetime.now(UTC)
    client.post(f"/cds-services/{PV}", json=request_for(app, PV))
    [row] = audit(app)
    answered = row.answered_at if row.answered_at.tzinfo else row.answered_at.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= answered <= datetime.now(UTC)


def test_a_refused_call_is_audited_with_its_status(app, client):
    body = request_for(app, PV)
    del body["context"]["patientId"]
    assert client.post(f"/cds-services/{PV}", json=body).status_code == 400
    [row] = audit(app)
    assert (row.hook_instance, row.status, json.loads(row.rules_fired)) == (
        body["hookInstance"], 400, [])


def test_a_hook_sent_to_the_wrong_service_is_audited_as_400(app, client):
    body = request_for(app, PV)
    response = client.post("/cds-services/spine-postop-order-sign", json=body)
    assert response.status_code == 400
    [row] = audit(app)
    assert (row.service_id, row.hook, row.status) == (
        "spine-postop-order-sign", "patient-view", 400)


def test_feedback_writes_no_audit_record(app, client):
    item = {"card": str(uuid.uuid4()), "outcome": "overridden",
            "outcomeTimestamp": "2026-06-15T12:00:00Z"}
    assert client.post(f"/cds-services/{PV}/feedback",
                       json={"feedback": [item]}).status_code == 200
    assert audit(app) == []


def test_no_patient_data_is_in_any_audit_column(app, client):
    body = request_for(app, PV)
    patient = body["prefetch"]["patient"]
    client.post(f"/cds-services/{PV}", json=body)
    [row] = audit(app)
    stored = " ".join(str(getattr(row, column)) for column in AUDIT_COLUMNS)
    identifying = [patient["id"], patient["birthDate"], *patient["name"][0]["given"],
                   patient["name"][0]["family"]]
    assert [value for value in identifying if value in stored] == []


def test_audit_false_writes_no_record(make_app):
    app = make_app(EVALUATION_TIME="2026-06-15T12:00:00Z", AUDIT=False,
                   PATIENT_HASH_SECRET="audit-secret")
    client = app.test_client()
    assert client.post(f"/cds-services/{PV}", json=request_for(app, PV)).status_code == 200
    body = request_for(app, PV)
    del body["context"]
    assert client.post(f"/cds-services/{PV}", json=body).status_code == 400
    assert audit(app) == []


def test_audit_false_keeps_suppression_working(make_app):
    app = make_app(EVALUATION_TIME="2026-06-15T12:00:00Z", AUDIT=False,
                   PATIENT_HASH_SECRET="audit-secret")
    client = app.test_client()
    cards = client.post(f"/cds-services/{PV}", json=request_for(app, PV)).get_json()["cards"]
    warning = next(c for c in cards if c["indicator"] == "warning")
    item = {"card": warning["uuid"], "outcome": "overridden",
            "outcomeTimestamp": "2026-06-15T12:00:00Z"}
    client.post(f"/cds-services/{PV}/feedback", json={"feedback": [item]})
    again = client.post(f"/cds-services/{PV}", json=request_for(app, PV)).get_json()["cards"]
    assert warning["source"] not in [c["source"] for c in again]
