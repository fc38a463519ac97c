"""Alert fatigue, through HTTP: a card overridden for a patient is not shown again for the
same rule and reason (the FHIR references behind it) within SUPPRESSION_WINDOW_HOURS,
unless it is critical. Patients are stored only as HMAC-SHA256(secret, patientId).

Source case 1 (evaluated on 2026-06-15) fires one card of each indicator:
urgent-decompression (critical), postop-infection-workup (warning) and
early-postop-imaging-caveat (info).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import stat
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import flask
import pytest
from sqlalchemy import create_engine, inspect, select, table, text

from cds_service.config import ConfigError
from cds_service.scenario import build_request, default_fixtures_dir, load_scenario
from cds_service.suppression import SECRET_FILE, load_secret
from tests.conftest import assert_conformant

CASE = load_scenario(default_fixtures_dir() / "source-case-1.json")
CASE_PATIENT = "case1-patient"
PATIENT = "patient-7c1d94e2-distinctive"
EVALUATION_TIME = "2026-06-15T12:00:00Z"
SECRET = "suppression-test-secret"
CRITICAL, WARNING, INFO = ("urgent-decompression", "postop-infection-workup",
                           "early-postop-imaging-caveat")
SERVICES = {"patient-view": "spine-postop-patient-view",
            "order-select": "spine-postop-order-select",
            "order-sign": "spine-postop-order-sign"}


def record(patient_id: str = PATIENT, extra: tuple[dict, ...] = ()) -> list[dict]:
    """Source case 1 as the record of ``patient_id``, with ``extra`` resources added."""
    resources = json.loads(json.dumps(CASE.resources).replace(CASE_PATIENT, patient_id))
    return resources + [copy.deepcopy(r) for r in extra]


def second_mri_report() -> dict:
    """Another report of the same enhancing collection: new evidence for the warning."""
    report = copy.deepcopy(next(r for r in record() if r["id"] == "mri-lumbar-report"))
    report.update(id="mri-lumbar-report-2", effectiveDateTime="2026-06-15T08:00:00Z")
    return report


def call(client, resources: list[dict] | None = None, hook: str = "patient-view",
         drafts: list[dict] | None = None) -> dict[str, dict]:
    """Invoke the service for ``hook``; the cards by rule id."""
    app = client.application
    service = app.extensions["cds"].knowledge.services[SERVICES[hook]]
    body = build_request(service, record() if resources is None else resources,
                         draft_orders=drafts)
    response = client.post(f"/cds-services/{service.id}", json=body)
    assert response.status_code == 200, response.get_json()
    assert_conformant(response.get_json())
    return {card["source"]["topic"]["code"]: card for card in response.get_json()["cards"]}


def send_feedback(client, card: dict, outcome: str = "overridden",
                  hook: str = "patient-view") -> None:
    item: dict = {"card": card["uuid"], "outcome": outcome,
                  "outcomeTimestamp": "2026-06-15T12:05:00Z"}
    if outcome == "overridden" and card.get("overrideReasons"):
        item["overrideReason"] = {"reason": card["overrideReasons"][0]}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    response = client.post(f"/cds-services/{SERVICES[hook]}/feedback",
                           json={"feedback": [item]})
    assert response.status_code == 200, response.get_json()


@pytest.fixture
def app(make_app):
    return make_app(EVALUATION_TIME=EVALUATION_TIME, PATIENT_HASH_SECRET=SECRET)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def clock(app):
    """The storage's real clock, frozen and movable: ``clock.now += timedelta(...)``."""

    class Clock:
        now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

        def __call__(self) -> datetime:
            return self.now

    frozen = Clock()
    app.extensions["cds"].storage.clock = frozen
    return frozen


def test_the_case_fires_one_card_of_each_indicator(client):
    cards = call(client)
    assert {rule: card["indicator"] for rule, card in cards.items()} == {
        CRITICAL: "critical", WARNING: "warning", INFO: "info"}


def test_an_overridden_warning_card_is_not_shown_again_for_the_same_patient(client):
    send_feedback(client, call(client)[WARNING])
    assert sorted(call(client)) == sorted([CRITICAL, INFO])


def test_an_overridden_info_card_is_not_shown_again(client):
    send_feedback(client, call(client)[INFO])
    assert INFO not in call(client)


def test_the_audit_record_lists_the_suppressed_rule(app, client):
    send_feedback(client, call(client)[WARNING])
    call(client)
    last = app.extensions["cds"].storage.audit_records()[-1]
    assert json.loads(last.rules_suppressed) == [WARNING]
    assert sorted(json.loads(last.rules_fired)) == sorted([CRITICAL, WARNING, INFO])


def test_an_overridden_critical_card_is_still_shown(app, client):
    send_feedback(client, call(client)[CRITICAL])
    assert CRITICAL in call(client)
    assert json.loads(app.extensions["cds"].storage.audit_records()[-1].rules_suppressed) == []


def test_another_patient_still_sees_the_card(client):
    send_feedback(client, call(client)[WARNING])
    assert WARNING in call(client, record("another-patient"))


def test_the_card_shows_again_once_the_window_has_passed(client, clock):
    send_feedback(client, call(client)[WARNING])
    clock.now += timedelta(hours=24, seconds=1)
    assert WARNING in call(client)


def test_the_card_stays_hidden_until_the_window_ends(client, clock):
    send_feedback(client, call(client)[WARNING])
    clock.now += timedelta(hours=23, minutes=59)
    assert WARNING not in call(client)


def test_the_window_follows_suppression_window_hours(make_app):
    client = make_app(EVALUATION_TIME=EVALUATION_TIME, PATIENT_HASH_SECRET=SECRET,
                      SUPPRESSION_WINDOW_HOURS=1).test_client()
    storage = client.application.extensions["cds"].storage
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    storage.clock = lambda: start
    send_feedback(client, call(client)[WARNING])
    storage.clock = lambda: start + timedelta(minutes=61)
    assert WARNING in call(client)


def test_the_window_runs_on_the_real_clock_not_evaluation_time(client, clock):
    """Overridden in 2020 by the clock: a window read from EVALUATION_TIME (2026) would
    already be over."""
    clock.now = datetime(2020, 1, 1, tzinfo=UTC)
    send_feedback(client, call(client)[WARNING])
    assert WARNING not in call(client)


def test_the_card_shows_again_when_new_evidence_fires_it(client):
    send_feedback(client, call(client)[WARNING])
    assert WARNING in call(client, record(extra=(second_mri_report(),)))


def test_new_data_that_is_not_evidence_keeps_the_card_hidden(client):
    heart_rate = {"resourceType": "Observation", "id": "pulse", "status": "final",
                  "subject": {"reference": f"Patient/{PATIENT}"},
                  "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                  "effectiveDateTime": "2026-06-15T07:00:00Z",
                  "valueQuantity": {"value": 72, "unit": "/min"}}
    send_feedback(client, call(client)[WARNING])
    assert WARNING not in call(client, record(extra=(heart_rate,)))


def test_accepted_feedback_does_not_suppress(app, client):
    send_feedback(client, call(client)[WARNING], outcome="accepted")
    assert WARNING in call(client)
    assert app.extensions["cds"].storage.card_overrides() == []


def test_an_override_of_an_unknown_card_is_stored_but_suppresses_nothing(app, client):
    call(client)
    send_feedback(client, {"uuid": str(uuid.uuid4())})
    assert WARNING in call(client)
    assert app.extensions["cds"].storage.card_overrides() == []


def test_an_override_sent_to_another_service_suppresses_nothing(client):
    send_feedback(client, call(client)[WARNING], hook="order-sign")
    assert WARNING in call(client)


def test_the_override_records_the_reason_code(app, client):
    card = call(client)[WARNING]
    send_feedback(client, card)
    [override] = app.extensions["cds"].storage.card_overrides()
    assert (override.card_uuid, override.rule_id, override.override_code) == (
        card["uuid"], WARNING, card["overrideReasons"][0]["code"])


def test_an_override_at_order_select_hides_the_same_card_at_order_sign(make_app):
    """The reason includes the draft order: the same order reaching order-sign is not news."""
    scenario = load_scenario(default_fixtures_dir() / "conservative-care-delays-decompression"
                             "--fires-order-select-pt-referral-ces.json")
    client = make_app(EVALUATION_TIME=scenario.evaluation_time,
                      PATIENT_HASH_SECRET=SECRET).test_client()
    rule = "conservative-care-delays-decompression"
    selected = [o for o in scenario.draft_orders
                if f"{o['resourceType']}/{o['id']}" in scenario.selections]
    card = call(client, scenario.resources, "order-select", selected)[rule]
    send_feedback(client, card, hook="order-select")
    assert rule not in call(client, scenario.resources, "order-sign", selected)


def test_a_window_of_zero_turns_suppression_off(make_app):
    app = make_app(EVALUATION_TIME=EVALUATION_TIME, PATIENT_HASH_SECRET=SECRET,
                   SUPPRESSION_WINDOW_HOURS=0)
    client = app.test_client()
    send_feedback(client, call(client)[WARNING])
    assert WARNING in call(client)
    assert app.extensions["cds"].storage.issued_cards() == []


def test_every_card_shown_is_remembered_with_its_patient_key_and_reason(app, client):
    cards = call(client)
    issued = {row.card_uuid: row for row in app.extensions["cds"].storage.issued_cards()}
    assert set(issued) == {card["uuid"] for card in cards.values()}
    key = hmac.new(SECRET.encode(), PATIENT.encode(), hashlib.sha256).hexdigest()
    for rule, card in cards.items():
        row = issued[card["uuid"]]
        assert (row.rule_id, row.indicator, row.patient_key, row.service_id) == (
            rule, card["indicator"], key, "spine-postop-patient-view")
        assert len(row.reason) == 64


def database_text(path: Path) -> str:
    """Every value of every table, as text."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        values = [str(value) for name in inspect(connection).get_table_names()
                  for row in connection.execute(select(text("*")).select_from(table(name)))
                  for value in row]
    engine.dispose()
    return "\n".join(values)


def test_the_patient_id_never_appears_in_clear_in_the_database(make_app, tmp_path):
    database = tmp_path / "pseudonymous.sqlite"
    app = make_app(DATABASE_URL=f"sqlite:///{database}", EVALUATION_TIME=EVALUATION_TIME,
                   PATIENT_HASH_SECRET=SECRET)
    client = app.test_client()
    send_feedback(client, call(client)[WARNING])
    send_feedback(client, call(client)[INFO])
    call(client, record(extra=(second_mri_report(),)))
    storage = app.extensions["cds"].storage
    assert storage.card_overrides() and storage.issued_cards() and storage.audit_records()

    files = [p for p in tmp_path.iterdir() if p.name.startswith(database.name)]
    raw = b"".join(p.read_bytes() for p in files)
    in_clear = [form for form in (PATIENT.encode(), PATIENT.encode("utf-16-le")) if form in raw]
    assert in_clear == []
    assert PATIENT not in database_text(database)
    storage.close()


def test_the_patient_key_is_the_hmac_sha256_of_the_patient_id(app):
    suppression = app.extensions["cds"].history.suppression
    assert suppression.patient_key(PATIENT) == hmac.new(
        SECRET.encode(), PATIENT.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """Flask's instance folder redirected to tmp_path, and no secret in the environment."""
    folder = tmp_path / "instance"
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(folder))
    monkeypatch.delenv("CDS_PATIENT_HASH_SECRET", raising=False)
    return folder


def test_without_a_configured_secret_one_is_created_with_mode_0600(make_app, instance):
    make_app()
    secret = instance / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text()) == 64


def test_the_created_secret_is_reused_by_the_next_start(make_app, instance):
    first = make_app().extensions["cds"].history.suppression.patient_key(PATIENT)
    written = (instance / SECRET_FILE).read_bytes()
    second = make_app().extensions["cds"].history.suppression.patient_key(PATIENT)
    assert first == second
    assert (instance / SECRET_FILE).read_bytes() == written


def test_workers_starting_together_agree_on_one_secret(tmp_path):
    barrier = threading.Barrier(8)
    secrets: list[bytes] = []

    def start() -> None:
        barrier.wait()
        secrets.append(load_secret(None, str(tmp_path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(secrets) == 8 and len(set(secrets)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]


def test_a_configured_secret_creates_no_file(make_app, instance):
    make_app(PATIENT_HASH_SECRET=SECRET)
    assert not (instance / SECRET_FILE).exists()


def test_an_empty_configured_secret_is_refused(make_app):
    with pytest.raises(ConfigError, match="PATIENT_HASH_SECRET"):
        make_app(PATIENT_HASH_SECRET="")
