"""Storage beyond its schema: in-memory SQLite, the retention of issued cards, and
connections that a forked worker must not share with its parent."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from cds_service.storage import CardOverride, IssuedCardRecord, Storage

FEEDBACK = {"card": "kept", "outcome": "overridden", "outcomeTimestamp": "2024-05-01T12:00:00Z"}


def test_an_in_memory_database_works():
    storage = Storage("sqlite://")
    storage.record_feedback("s", [FEEDBACK])
    assert [row.card_uuid for row in storage.feedback()] == ["kept"]


def test_forgetting_old_issued_cards_keeps_the_newer_ones_and_every_override(tmp_path):
    url = f"sqlite:///{tmp_path / 'retention.sqlite'}"
    storage = Storage(url)
    now = datetime.now(UTC)
    card = {"service_id": "s", "rule_id": "r", "indicator": "warning", "patient_key": "k",
            "reason": "f"}
    storage.record_invocation(None, [
        IssuedCardRecord(card_uuid="old", issued_at=now - timedelta(days=8), **card),
        IssuedCardRecord(card_uuid="recent", issued_at=now - timedelta(days=6), **card)])
    with storage.engine.begin() as connection:
        connection.execute(CardOverride.__table__.insert(), [{
            "card_uuid": "old", "patient_key": "k", "rule_id": "r", "reason": "f",
            "overridden_at": now - timedelta(days=8)}])
    assert storage.forget_issued_cards(now - timedelta(days=7)) == 1
    assert [row.card_uuid for row in storage.issued_cards()] == ["recent"]
    assert [row.card_uuid for row in storage.card_overrides()] == ["old"]
    storage.close()


def test_a_forked_worker_opens_its_own_connections(tmp_path):
    storage = Storage(f"sqlite:///{tmp_path / 'fork.sqlite'}")
    storage.record_feedback("s", [FEEDBACK])  # the parent now holds a pooled connection
    parent_pool = storage.engine.pool
    pid = os.fork()
    if pid == 0:  # the worker: exit code 0 when it started with a pool of its own
        code = 1
        try:
            fresh = storage.engine.pool is not parent_pool and storage.engine.pool.checkedin() == 0
            storage.record_feedback("s", [FEEDBACK | {"card": "from-the-worker"}])
            code = 0 if fresh else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage.engine.pool is parent_pool
    assert [row.card_uuid for row in storage.feedback()] == ["kept", "from-the-worker"]
    storage.close()
