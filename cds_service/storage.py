"""Persistent storage, via SQLAlchemy: card feedback, an audit record of every hook
call, and the cards issued and overridden (for suppression, see ``suppression``).

SQLite in the instance folder by default (WAL journal, synchronous=FULL so that
an acknowledged write survives a crash); any SQLAlchemy URL via DATABASE_URL
(``postgresql://`` uses psycopg 3). The schema is created and upgraded by the
Alembic migrations in ``cds_service/migrations`` when a ``Storage`` opens.

Every write is one transaction, committed before the method returns: the web
layer answers only after that, so nothing acknowledged is lost when the process
dies right after. No table holds a patient id: patients are an HMAC (``patient_key``).
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    insert,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from cds_service import migrations


def _columns(row: Base) -> dict:
    """The column values set on an unsaved ORM object, for a Core insert."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns
            if getattr(row, c.key) is not None}


class Base(DeclarativeBase):
    pass


class FeedbackRecord(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    card_uuid: Mapped[str] = mapped_column(String(200), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    accepted_suggestions: Mapped[str | None] = mapped_column(Text, nullable=True)
    override_system: Mapped[str | None] = mapped_column(String(500), nullable=True)
    override_code: Mapped[str | None] = mapped_column(String(200), nullable=True)
    override_display: Mapped[str | None] = mapped_column(String(500), nullable=True)
    user_comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    outcome_timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditRecord(Base):
    """One hook call: who was asked what, what fired, what was held back. No patient data."""

    __tablename__ = "invocation_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hook_instance: Mapped[str | None] = mapped_column(String(200), index=True, nullable=True)
    service_id: Mapped[str] = mapped_column(String(200))
    hook: Mapped[str | None] = mapped_column(String(100), nullable=True)
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[int] = mapped_column(Integer)
    rules_fired: Mapped[str] = mapped_column(Text)  # JSON list of rule ids, before suppression
    rules_suppressed: Mapped[str] = mapped_column(Text)  # JSON list, a subset of rules_fired
    duration_ms: Mapped[float] = mapped_column(Float)


class IssuedCardRecord(Base):
    """A card the service returned, so that feedback on it can be tied to its reason."""

    __tablename__ = "issued_card"

    card_uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(200))
    rule_id: Mapped[str] = mapped_column(String(200))
    indicator: Mapped[str] = mapped_column(String(20))
    patient_key: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class CardOverride(Base):
    """A clinician overrode an issued card: the same (patient, rule, reason) is held back."""

    __tablename__ = "card_override"
    __table_args__ = (Index("ix_card_override_patient_key_overridden_at",
                            "patient_key", "overridden_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    card_uuid: Mapped[str] = mapped_column(String(64))
    patient_key: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(64))
    override_code: Mapped[str | None] = mapped_column(String(200), nullable=True)
    overridden_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _instant(text: str) -> datetime:
    """An RFC 3339 date-time (as validated) as an aware UTC datetime.

    Accepts lower-case ``t``/``z`` and a leap second (stored as :59), which
    ``datetime.fromisoformat`` refuses; converts to UTC because SQLite keeps
    no offset.
    """
    text = text.upper().replace("Z", "+00:00")
    if text[17:19] == "60":
        text = text[:17] + "59" + text[19:]
    return datetime.fromisoformat(text).astimezone(UTC)


def default_database_url(instance_path: str) -> str:
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'cds_service.sqlite'}"


def _engine_url(url: str) -> URL:
    """The URL, with psycopg 3 (the ``postgres`` extra) as the driver of ``postgresql://``."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


#: Engines whose pooled connections a forked child (a server worker) must not use: the
#: child starts with an empty pool and leaves the parent's connections alone.
_forked_pools: weakref.WeakSet[Engine] = weakref.WeakSet()


def _drop_inherited_connections() -> None:
    for engine in list(_forked_pools):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")  # first: the next pragma may wait for a lock
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


class Storage:
    def __init__(self, url: str, clock: Callable[[], datetime] | None = None) -> None:
        self.url = url
        #: The real clock (UTC) for every stored time; replaceable in tests.
        self.clock = clock or (lambda: datetime.now(UTC))
        parsed = _engine_url(url)
        in_memory = parsed.get_backend_name() == "sqlite" and parsed.database in (None, "",
                                                                                  ":memory:")
        # An in-memory database lives as long as its one connection, shared by all threads.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}} \
            if in_memory else {"pool_pre_ping": True}
        self.engine: Engine = create_engine(parsed, **options)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        migrations.upgrade(self.engine)
        if not in_memory:
            _forked_pools.add(self.engine)

    def record_feedback(self, service_id: str, items: list[dict]) -> int:
        """Store every feedback item in one transaction; returns how many were stored.

        An ``overridden`` item about a card this service issued also records the
        override, which suppresses that card's rule and reason for the patient.
        """
        now = self.clock()
        rows: list[Base] = []
        for item in items:
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            accepted = item.get("acceptedSuggestions")
            rows.append(FeedbackRecord(
                service_id=service_id,
                card_uuid=item["card"],
                outcome=item["outcome"],
                accepted_suggestions=json.dumps([s["id"] for s in accepted]) if accepted else None,
                override_system=reason.get("system"),
                override_code=reason.get("code"),
                override_display=reason.get("display"),
                user_comment=(item.get("overrideReason") or {}).get("userComment"),
                outcome_timestamp=_instant(item["outcomeTimestamp"]),
                received_at=now,
            ))
        overridden = {item["card"]: ((item.get("overrideReason") or {}).get("reason") or {})
                      .get("code") for item in items if item["outcome"] == "overridden"}
        with Session(self.engine) as session, session.begin():
            if overridden:
                issued = session.scalars(select(IssuedCardRecord).where(
                    IssuedCardRecord.card_uuid.in_(overridden),
                    IssuedCardRecord.service_id == service_id))
                rows += [CardOverride(card_uuid=card.card_uuid, patient_key=card.patient_key,
                                      rule_id=card.rule_id, reason=card.reason,
                                      override_code=overridden[card.card_uuid],
                                      overridden_at=now) for card in issued]
            session.add_all(rows)
        return len(items)

    def record_invocation(self, audit: AuditRecord | None,
                          issued: Iterable[IssuedCardRecord]) -> None:
        """The audit record and the issued cards of one hook call, in one transaction."""
        cards = [_columns(card) for card in issued]
        if audit is None and not cards:
            return
        # Core inserts, not the ORM unit of work: this runs on every hook call.
        with self.engine.begin() as connection:
            if cards:
                connection.execute(insert(IssuedCardRecord), cards)
            if audit is not None:
                connection.execute(insert(AuditRecord), [_columns(audit)])

    def overrides_since(self, patient_key: str, since: datetime) -> set[tuple[str, str]]:
        """(rule id, reason) of every override for this patient at or after ``since``."""
        query = select(CardOverride.rule_id, CardOverride.reason).where(
            CardOverride.patient_key == patient_key, CardOverride.overridden_at >= since)
        with self.engine.connect() as connection:
            return {(rule, reason) for rule, reason in connection.execute(query)}

    def forget_issued_cards(self, before: datetime) -> int:
        """Delete the issued cards older than ``before`` (their overrides stay); how many."""
        with self.engine.begin() as connection:
            return connection.execute(
                delete(IssuedCardRecord).where(IssuedCardRecord.issued_at < before)).rowcount

    def _all(self, model: type[Base], order) -> list:
        with Session(self.engine) as session:
            return list(session.scalars(select(model).order_by(order)))

    def feedback(self, card_uuid: str | None = None) -> list[FeedbackRecord]:
        query = select(FeedbackRecord).order_by(FeedbackRecord.id)
        if card_uuid is not None:
            query = query.where(FeedbackRecord.card_uuid == card_uuid)
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def audit_records(self) -> list[AuditRecord]:
        return self._all(AuditRecord, AuditRecord.id)

    def issued_cards(self) -> list[IssuedCardRecord]:
        return self._all(IssuedCardRecord, IssuedCardRecord.issued_at)

    def card_overrides(self) -> list[CardOverride]:
        return self._all(CardOverride, CardOverride.id)

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar() == 1

    def close(self) -> None:
        self.engine.dispose()
