"""FHIR date and dateTime values as aware UTC datetimes.

FHIR allows partial dates ("2026", "2026-05") and date-times without a zone
only in some places; a partial date is read as the start of its period, and a
missing zone as UTC. A value that does not parse is treated as absent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

UTC = UTC


@lru_cache(maxsize=4096)
def parse_fhir_datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def days_between(earlier: datetime, later: datetime) -> float:
    return (later - earlier) / timedelta(days=1)


def format_date(value: datetime | None) -> str:
    return value.date().isoformat() if value else "date not recorded"
