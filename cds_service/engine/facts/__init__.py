"""Clinical facts: what the rules are written in.

Each fact is a named function of the evaluation context, registered with a
sentence a clinician can review. A fact remembers the resources and dates it
came from (``Evidence``) so that every card can explain itself. Facts are
computed at most once per request, and only when a rule asks for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cds_service.engine.dates import format_date
from cds_service.engine.findings import ImagingIndex
from cds_service.engine.record import SUSPECTED, Entry, PatientRecord
from cds_service.engine.valuesets import CodeInfo, ValueSet


@dataclass(frozen=True)
class Evidence:
    """One fact behind a card: what, when, and the FHIR reference it came from."""

    text: str
    date: datetime | None
    refs: tuple[str, ...]  # the resource first, then what it links to (e.g. its ImagingStudy)
    suspected: bool = False
    when: str = "dated"

    @property
    def ref(self) -> str:
        """The resource the fact was read from."""
        return self.refs[0]

    def markdown(self) -> str:
        qualifier = " (suspected)" if self.suspected else ""
        refs = ", ".join(self.refs)
        return f"{self.text}{qualifier}: {self.when} {format_date(self.date)}, `{refs}`"


@dataclass
class Fact:
    name: str
    holds: bool
    evidence: list[Evidence] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:  # lets card templates read f.name.side
        return self.attrs[key]

    def __bool__(self) -> bool:
        return self.holds


@dataclass(frozen=True)
class FactDefinition:
    name: str
    description: str
    compute: Callable[[EvaluationContext], Fact]


FACTS: dict[str, FactDefinition] = {}


def fact(name: str, description: str):
    """Register a fact function under ``name`` with a reviewable description."""

    def register(func: Callable[[EvaluationContext], Fact]):
        if name in FACTS:
            raise ValueError(f"fact {name!r} registered twice")
        FACTS[name] = FactDefinition(name, " ".join(description.split()), func)
        return func

    return register


@dataclass
class EvaluationContext:
    """Everything one evaluation reads: the record, 'now', the knowledge, the orders."""

    hook: str
    now: datetime
    record: PatientRecord
    valuesets: dict[str, ValueSet]
    thresholds: dict[str, float]
    orders: list[Entry] = field(default_factory=list)  # the draft orders under evaluation
    drafts: list[Entry] = field(default_factory=list)  # every draft order of the session
    memo: dict = field(default_factory=dict)  # per-request lookups facts may share
    _facts: dict[str, Fact] = field(default_factory=dict)
    _imaging: ImagingIndex | None = None

    def fact(self, name: str) -> Fact:
        cached = self._facts.get(name)
        if cached is None:
            cached = FACTS[name].compute(self)
            cached.name = name
            self._facts[name] = cached
        return cached

    @property
    def imaging(self) -> ImagingIndex:
        if self._imaging is None:
            self._imaging = ImagingIndex(self.record, self.valuesets)
        return self._imaging

    def threshold(self, name: str) -> float:
        return self.thresholds[name]

    def days(self, name: str) -> timedelta:
        return timedelta(days=self.thresholds[name])

    def since(self, name: str) -> datetime:
        """The instant ``thresholds[name]`` days before now."""
        return self.now - self.days(name)

    def coded(self, rtype: str, *vs_ids: str,
              entries: Iterable[Entry] | None = None) -> list[tuple[Entry, CodeInfo]]:
        """Counting entries of ``rtype`` with a code in any of the value sets."""
        out = []
        if entries is None:  # the whole record: narrow it down with the code index first
            candidates: set[int] = set()
            for vs_id in vs_ids:
                candidates |= self.record.with_codes_in(self.valuesets[vs_id])
            pool = [e for e in map(self.record.sequence.__getitem__, sorted(candidates))
                    if e.type == rtype]
        else:
            pool = list(entries)
        for entry in pool:
            for vs_id in vs_ids:
                info = self.valuesets[vs_id].first_match(entry.codings)
                if info is not None:
                    out.append((entry, info))
                    break
        return out

    def not_future(self, date: datetime | None) -> bool:
        """A date that is not after now (a day of slack for time zones)."""
        return date is not None and date <= self.now + timedelta(days=1)


def evidence_of(entry: Entry, text: str | None = None, date: datetime | None = None,
                when: str = "dated", suspected: bool | None = None) -> Evidence:
    if suspected is None:
        suspected = entry.certainty == SUSPECTED
    return Evidence(text or entry.label, date or entry.date, (entry.ref,), suspected, when)


def absent(**attrs: Any) -> Fact:
    return Fact("", False, [], dict(attrs))


# Fact modules register themselves on import.
from cds_service.engine.facts import (  # noqa: E402,F401
    cervical,
    imaging,
    infection,
    medication,
    neuro,
    orders,
    surgery,
)
