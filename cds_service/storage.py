"""Persistent storage: card feedback, via SQLAlchemy.

SQLite in the instance folder by default (WAL journal, synchronous=FULL so that
an acknowledged write survives a crash); any SQLAlchemy URL via DATABASE_URL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    DateTime,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


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


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Storage:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)

    def record_feedback(self, service_id: str, items: list[dict]) -> int:
        """Store every feedback item in one transaction; returns how many were stored."""
        now = datetime.now(UTC)
        rows = []
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
        with Session(self.engine) as session, session.begin():
            session.add_all(rows)
        return len(rows)

    def feedback(self, card_uuid: str | None = None) -> list[FeedbackRecord]:
        query = select(FeedbackRecord).order_by(FeedbackRecord.id)
        if card_uuid is not None:
            query = query.where(FeedbackRecord.card_uuid == card_uuid)
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(
                FeedbackRecord)).scalar() is not None

    def close(self) -> None:
        self.engine.dispose()
