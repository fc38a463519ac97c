"""Facts about opioid therapy: when it started and whether it goes on."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from cds_service.engine.dates import parse_fhir_datetime
from cds_service.engine.facts import EvaluationContext, Fact, absent, evidence_of, fact
from cds_service.engine.record import Entry, _codings, concept_text

# Text fallback for opioid orders that carry no usable code.
_OPIOID_NAMES = re.compile(
    r"\b(oxycodone|hydrocodone|hydromorphone|morphine|fentanyl|tramadol|tapentadol|codeine"
    r"|oxymorphone|methadone|meperidine|pethidine|percocet|norco|vicodin|dilaudid)\b",
    re.IGNORECASE)
_DURATION_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30}


def medication_codings(ctx: EvaluationContext, entry: Entry) -> tuple[list, str]:
    """Codings and text of what a MedicationRequest prescribes (reference resolved)."""
    res = entry.resource
    codings, text = list(entry.codings), entry.text
    ref = res.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        target = ref["reference"]
        medication = None
        if target.startswith("#"):
            medication = next((c for c in res.get("contained") or ()
                               if isinstance(c, dict) and c.get("id") == target[1:]), None)
        else:
            found = ctx.record.resolve(target)
            medication = found.resource if found else None
        if isinstance(medication, dict):
            codings += _codings(medication.get("code"))
            text = text or concept_text(medication.get("code"))
        text = text or (ref.get("display") if isinstance(ref.get("display"), str) else "")
    return codings, text


def is_opioid(ctx: EvaluationContext, entry: Entry) -> bool:
    codings, text = medication_codings(ctx, entry)
    key = (tuple(codings), text)
    known = ctx.memo.get(key)  # a chart repeats the same few products many times
    if known is None:
        known = bool(ctx.valuesets["opioids"].first_match(codings)
                     or (text and _OPIOID_NAMES.search(text)))
        ctx.memo[key] = known
    return known


def _start(res: dict) -> datetime | None:
    candidates = [parse_fhir_datetime(res.get("authoredOn"))]
    dispense = res.get("dispenseRequest")
    if isinstance(dispense, dict) and isinstance(dispense.get("validityPeriod"), dict):
        candidates.append(parse_fhir_datetime(dispense["validityPeriod"].get("start")))
    return min((c for c in candidates if c), default=None)


def _end(ctx: EvaluationContext, entry: Entry, start: datetime) -> datetime:
    res = entry.resource
    dispense = res.get("dispenseRequest") if isinstance(res.get("dispenseRequest"), dict) else {}
    period = dispense.get("validityPeriod")
    if isinstance(period, dict) and parse_fhir_datetime(period.get("end")):
        return parse_fhir_datetime(period.get("end"))
    supply = dispense.get("expectedSupplyDuration")
    if isinstance(supply, dict) and isinstance(supply.get("value"), (int, float)):
        unit = str(supply.get("code") or supply.get("unit") or "d").lower()
        return start + timedelta(days=float(supply["value"]) * _DURATION_DAYS.get(unit, 1))
    for dosage in res.get("dosageInstruction") or ():
        repeat = ((dosage or {}).get("timing") or {}).get("repeat") or {}
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict) and parse_fhir_datetime(bounds.get("end")):
            return parse_fhir_datetime(bounds.get("end"))
    if entry.status == "active":
        return max(ctx.now, start)
    return start + ctx.days("assumed_opioid_supply_days")


def opioid_courses(ctx: EvaluationContext) -> list[tuple[Entry, datetime, datetime]]:
    """Active or completed opioid requests with their start and end, oldest first."""
    courses = []
    for entry in ctx.record.entries("MedicationRequest"):
        start = _start(entry.resource)
        if start is not None and ctx.not_future(start) and is_opioid(ctx, entry):
            courses.append((entry, start, _end(ctx, entry, start)))
    return sorted(courses, key=lambda c: c[1])


def current_therapy(ctx: EvaluationContext) -> list[tuple[Entry, datetime, datetime]]:
    """The unbroken run of opioid courses that reaches now (gaps up to the grace period)."""
    grace = ctx.days("opioid_gap_days")
    run: list[tuple[Entry, datetime, datetime]] = []
    for course in opioid_courses(ctx):
        if run and course[1] > max(c[2] for c in run) + grace:
            run = []
        run.append(course)
    if run and max(c[2] for c in run) + grace >= ctx.now:
        return run
    return []


@fact("prolonged_opioid_therapy", """Opioid therapy (MedicationRequest active or completed,
      consecutive prescriptions chained when the gap is within the grace period, default 14
      days) that started at least the prolonged-opioid threshold ago (default 28 days).
      On patient-view the therapy must still be active; on order hooks a draft opioid order
      under evaluation must continue it (a first opioid order never counts).""")
def prolonged_opioid_therapy(ctx: EvaluationContext) -> Fact:
    run = current_therapy(ctx)
    if not run:
        return absent()
    start = run[0][1]
    if start > ctx.since("prolonged_opioid_days"):
        return absent()
    if ctx.hook == "patient-view":
        if not any(entry.status == "active" for entry, _, _ in run):
            return absent()
        drafts = []
    else:
        drafts = [o for o in ctx.orders if o.type == "MedicationRequest" and is_opioid(ctx, o)]
        if not drafts:
            return absent()
    evidence = [evidence_of(e, f"{medication_codings(ctx, e)[1] or 'Opioid'} ({e.status})",
                            s, when="started") for e, s, _ in run]
    evidence += [evidence_of(o, f"{medication_codings(ctx, o)[1] or 'Opioid'} (draft order)",
                             when="drafted") for o in drafts]
    return Fact("", True, evidence, {"start": start, "days": (ctx.now - start).days,
                                     "drafts": drafts})
