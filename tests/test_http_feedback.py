"""POST /cds-services/{id}/feedback: CDS Hooks 2.0 §Feedback, stored via DATABASE_URL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import flask
import pytest

from cds_service import create_app
from tests.conftest import REFERENCE

EXAMPLES = REFERENCE / "examples"
needs_reference = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                     reason=f"reference examples not found in {EXAMPLES}")

FB = "/cds-services/spine-postop-patient-view/feedback"
SPEC_EXAMPLES = [
    "stu2-19-example-suggestion-accepted.json",
    "stu2-20-example-overridden-guidance-without-overridereason.json",
    "stu2-21-example-overridden-guidance-with-overridereason.json",
]


@pytest.fixture(scope="module")
def app(module_client):
    return module_client.application


@pytest.fixture(scope="module")
def client(module_client):
    return module_client


def fresh(name: str) -> dict:
    """A spec example with a card id no other test uses."""
    body = example(name)
    for entry in body["feedback"]:
        entry["card"] = f"{entry['card']}-{uuid.uuid4()}"
    return body


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def item(card: str | None = None, outcome: str = "overridden", **extra) -> dict:
    return {"card": card or str(uuid.uuid4()), "outcome": outcome,
            "outcomeTimestamp": "2024-05-01T12:00:00Z", **extra}


def stored(app, *cards: str) -> list:
    """The stored rows of these card ids, in insertion order."""
    rows = app.extensions["cds"].storage.feedback()
    return [row for row in rows if row.card_uuid in cards]


def cards(body: dict) -> list[str]:
    return [entry["card"] for entry in body["feedback"]]


@needs_reference
@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_spec_feedback_example_is_accepted(client, name):
    response = client.post(FB, json=example(name))
    assert response.status_code == 200
    assert response.mimetype == "application/json"


@needs_reference
@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_spec_feedback_example_is_persisted(app, client, name):
    body = fresh(name)
    sent = body["feedback"][0]
    assert client.post(FB, json=body).status_code == 200
    [row] = stored(app, sent["card"])
    assert row.outcome == sent["outcome"]
    assert row.service_id == "spine-postop-patient-view"


@needs_reference
def test_accepted_suggestions_are_persisted(app, client):
    body = fresh(SPEC_EXAMPLES[0])
    client.post(FB, json=body)
    [row] = stored(app, *cards(body))
    assert json.loads(row.accepted_suggestions) == ["e56e1945-20b3-4393-8503-a1a20fd73152"]


@needs_reference
def test_override_reason_and_comment_are_persisted(app, client):
    body = fresh(SPEC_EXAMPLES[2])
    client.post(FB, json=body)
    [row] = stored(app, *cards(body))
    assert (row.override_code, row.override_system) == (
        "d7ecf885", "https://example.com/cds-hooks/override-reason-system")
    assert row.user_comment == "A comment entered by the clinician."


def test_outcome_timestamp_is_persisted_as_the_instant_sent(app, client):
    body = {"feedback": [item(outcomeTimestamp="2024-05-01T14:00:00+02:00")]}
    assert client.post(FB, json=body).status_code == 200
    [row] = stored(app, *cards(body))
    when = row.outcome_timestamp
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    assert when == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("timestamp", ["2024-05-01t12:00:00z", "2016-12-31T23:59:60Z",
                                       "2024-05-01T12:00:00.123456789-05:00"])
def test_every_rfc3339_timestamp_form_is_stored(app, client, timestamp):
    body = {"feedback": [item(outcomeTimestamp=timestamp)]}
    assert client.post(FB, json=body).status_code == 200
    assert len(stored(app, *cards(body))) == 1


def test_several_items_in_one_request_are_all_stored(app, client):
    body = {"feedback": [item(), item(outcome="accepted", acceptedSuggestions=[{"id": "s1"}]),
                         item()]}
    response = client.post(FB, json=body)
    assert response.status_code == 200
    assert [row.card_uuid for row in stored(app, *cards(body))] == cards(body)


def test_feedback_is_stored_per_service(app, client):
    body = {"feedback": [item()]}
    other = "/cds-services/spine-postop-order-sign/feedback"
    assert client.post(other, json=body).status_code == 200
    [row] = stored(app, *cards(body))
    assert row.service_id == "spine-postop-order-sign"


def test_response_reports_how_many_items_were_stored(client):
    response = client.post(FB, json={"feedback": [item(), item()]})
    assert response.get_json() == {"stored": 2}


def test_accepted_without_accepted_suggestions_is_400_with_pointer(client):
    response = client.post(FB, json={"feedback": [item(outcome="accepted")]})
    assert response.status_code == 400
    assert "/feedback/0/acceptedSuggestions" in [d["pointer"]
                                                 for d in response.get_json()["details"]]


def test_invalid_outcome_is_400(client):
    response = client.post(FB, json={"feedback": [item(outcome="dismissed")]})
    assert response.status_code == 400
    assert "/feedback/0/outcome" in [d["pointer"] for d in response.get_json()["details"]]


@pytest.mark.parametrize("timestamp", ["2024-05-01", "2024-05-01T12:00:00", "01/05/2024 12:00",
                                       "2024-05-01T25:00:00Z", "2024-02-30T12:00:00Z"])
def test_outcome_timestamp_not_rfc3339_is_400(client, timestamp):
    response = client.post(FB, json={"feedback": [item(outcomeTimestamp=timestamp)]})
    assert response.status_code == 400
    assert "/feedback/0/outcomeTimestamp" in [d["pointer"]
                                              for d in response.get_json()["details"]]


def test_unknown_service_feedback_is_404_and_stores_nothing(app, client):
    body = {"feedback": [item()]}
    response = client.post("/cds-services/nope/feedback", json=body)
    assert response.status_code == 404
    assert response.get_json()["error"]
    assert stored(app, *cards(body)) == []


def test_nothing_is_stored_when_one_item_is_invalid(app, client):
    before = len(app.extensions["cds"].storage.feedback())
    body = {"feedback": [item(), item(), item(outcome="accepted")]}
    response = client.post(FB, json=body)
    assert response.status_code == 400
    assert stored(app, *cards(body)) == []
    assert len(app.extensions["cds"].storage.feedback()) == before


def test_nothing_is_stored_for_a_malformed_body(app, client):
    before = len(app.extensions["cds"].storage.feedback())
    response = client.post(FB, data=b'{"feedback": [', content_type="application/json")
    assert response.status_code == 400
    assert len(app.extensions["cds"].storage.feedback()) == before


def test_database_url_setting_is_honoured(tmp_path):
    database = tmp_path / "feedback.sqlite"
    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "TESTING": True})
    assert app.test_client().post(FB, json={"feedback": [item("persisted")]}).status_code == 200
    app.extensions["cds"].storage.close()

    reopened = create_app({"DATABASE_URL": f"sqlite:///{database}", "TESTING": True})
    assert database.is_file()
    assert [row.card_uuid for row in reopened.extensions["cds"].storage.feedback()] \
        == ["persisted"]


def test_default_database_lives_in_the_instance_folder(tmp_path, monkeypatch):
    """create_app has no instance-path setting; Flask's lookup is redirected to tmp_path."""
    instance = tmp_path / "instance"
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(instance))
    monkeypatch.delenv("CDS_DATABASE_URL", raising=False)
    app = create_app({"TESTING": True})
    assert Path(app.instance_path) == instance
    assert app.test_client().post(FB, json={"feedback": [item("here")]}).status_code == 200

    files = list(instance.glob("*.sqlite"))
    assert [row.card_uuid for row in app.extensions["cds"].storage.feedback()] == ["here"]
    assert len(files) == 1
    assert app.extensions["cds"].storage.url == f"sqlite:///{files[0]}"
