"""The storage against a real PostgreSQL: migrations (also by workers starting together),
feedback, audit and suppression through HTTP.

Runs when CDS_TEST_POSTGRES_URL names a database (``.ci/run`` installs, starts and
names one); each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, inspect, make_url, select, table, text

from cds_service import migrations
from cds_service.storage import Storage
from tests.test_storage_migrations import TABLES, assert_concurrent_starts_migrate_once
from tests.test_suppression import (
    CRITICAL,
    EVALUATION_TIME,
    INFO,
    PATIENT,
    WARNING,
    call,
    record,
    send_feedback,
)

POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="no PostgreSQL to test against: CDS_TEST_POSTGRES_URL is not set ("
           + (os.environ.get("CDS_TEST_POSTGRES_UNAVAILABLE")
              or "export CDS_TEST_POSTGRES_URL=postgresql://user:password@host/database, "
                 "or run .ci/run, which starts Debian's PostgreSQL")
           + ")")


@pytest.fixture
def database_url():
    """A URL whose connections work in a new, empty schema."""
    schema = f"cds_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"))
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def app(make_app, database_url):
    app = make_app(DATABASE_URL=database_url, EVALUATION_TIME=EVALUATION_TIME,
                   PATIENT_HASH_SECRET="postgres-secret")
    yield app
    app.extensions["cds"].storage.close()


@pytest.fixture
def client(app):
    return app.test_client()


def test_the_migrations_create_the_schema_at_head(database_url):
    storage = Storage(database_url)
    assert set(inspect(storage.engine).get_table_names()) == TABLES
    assert migrations.current_revision(storage.engine) == migrations.head()
    storage.close()


def test_workers_starting_together_migrate_once_without_error(database_url):
    assert_concurrent_starts_migrate_once(database_url, 4)


def test_feedback_is_stored_with_its_instant(app, client):
    item = {"card": str(uuid.uuid4()), "outcome": "overridden",
            "outcomeTimestamp": "2024-05-01T14:00:00+02:00",
            "overrideReason": {"reason": {"system": "urn:x", "code": "c", "display": "C"}}}
    response = client.post("/cds-services/spine-postop-patient-view/feedback",
                           json={"feedback": [item]})
    assert response.status_code == 200
    [row] = app.extensions["cds"].storage.feedback(item["card"])
    assert (row.outcome, row.override_code) == ("overridden", "c")
    assert row.outcome_timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_every_hook_call_has_one_audit_record(app, client):
    call(client)
    call(client, record("another-patient"))
    rows = app.extensions["cds"].storage.audit_records()
    assert [(row.status, row.service_id) for row in rows] == [
        (200, "spine-postop-patient-view")] * 2
    assert all(row.duration_ms > 0 for row in rows)
    assert sorted(json.loads(rows[0].rules_fired)) == sorted([CRITICAL, WARNING, INFO])


def test_an_overridden_warning_is_suppressed_and_audited(app, client):
    send_feedback(client, call(client)[WARNING])
    assert sorted(call(client)) == sorted([CRITICAL, INFO])
    last = app.extensions["cds"].storage.audit_records()[-1]
    assert json.loads(last.rules_suppressed) == [WARNING]


def test_an_overridden_critical_card_is_still_shown(client):
    send_feedback(client, call(client)[CRITICAL])
    assert CRITICAL in call(client)


def test_another_patient_still_sees_the_card(client):
    send_feedback(client, call(client)[WARNING])
    assert WARNING in call(client, record("another-patient"))


def test_the_card_shows_again_once_the_window_has_passed(app, client):
    storage = app.extensions["cds"].storage
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    storage.clock = lambda: start
    send_feedback(client, call(client)[WARNING])
    storage.clock = lambda: start + timedelta(hours=23, minutes=59)
    assert WARNING not in call(client)
    storage.clock = lambda: start + timedelta(hours=24, seconds=1)
    assert WARNING in call(client)


def test_the_patient_id_is_in_no_table(app, client):
    send_feedback(client, call(client)[WARNING])
    call(client)
    engine = app.extensions["cds"].storage.engine
    with engine.connect() as connection:
        values = [str(value) for name in inspect(connection).get_table_names()
                  for row in connection.execute(select(text("*")).select_from(table(name)))
                  for value in row]
    assert len(values) > 20
    assert [value for value in values if PATIENT in value] == []


def test_a_plain_postgresql_url_uses_psycopg(database_url):
    storage = Storage(make_url(database_url).set(drivername="postgresql")
                      .render_as_string(hide_password=False))
    assert storage.engine.dialect.driver == "psycopg"
    storage.close()
