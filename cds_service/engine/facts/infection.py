"""Facts about postoperative infection: markers, diagnoses, and workup already done."""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.engine.facts import (
    EvaluationContext,
    Evidence,
    Fact,
    absent,
    evidence_of,
    fact,
)
from cds_service.engine.facts.imaging import pending_evidence
from cds_service.engine.facts.surgery import performed
from cds_service.engine.record import Entry


@dataclass(frozen=True)
class Marker:
    vs_id: str
    name: str
    threshold: str  # thresholds key
    unit: str  # canonical unit, as shown on cards
    comparison: str  # ">" or ">="
    conversions: dict[str, float]  # accepted unit spellings (lower case) -> factor to canonical


_TEMPERATURE_UNITS = {"cel": 1.0, "°c": 1.0, "c": 1.0, "degc": 1.0}
_FAHRENHEIT_UNITS = {"[degf]", "°f", "f", "degf"}
MARKERS = (
    Marker("body-temperature", "Temperature", "fever_celsius", "°C", ">=", _TEMPERATURE_UNITS),
    Marker("crp", "CRP", "crp_mg_per_l", "mg/L", ">",
           {"mg/l": 1.0, "mg/dl": 10.0, "ug/ml": 1.0, "µg/ml": 1.0}),
    Marker("esr", "ESR", "esr_mm_per_h", "mm/h", ">",
           {"mm/h": 1.0, "mm/hr": 1.0, "mm/[h]": 1.0, "mm/hour": 1.0}),
    Marker("wbc", "WBC", "wbc_10e3_per_ul", "×10³/µL", ">",
           {"10*3/ul": 1.0, "10*9/l": 1.0, "10^3/ul": 1.0, "10^9/l": 1.0, "k/ul": 1.0,
            "x10e3/ul": 1.0, "10*3/mm3": 1.0, "/ul": 0.001, "/mm3": 0.001, "10*3/µl": 1.0,
            "10^3/µl": 1.0, "k/µl": 1.0, "x10^9/l": 1.0, "giga/l": 1.0}),
)


def canonical_value(marker: Marker, quantity: dict) -> float | None:
    """The quantity in the marker's canonical unit, or None if it cannot be read."""
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if quantity.get("comparator") in ("<", "<="):
        return None  # an upper bound says nothing about exceeding a threshold
    for unit in (quantity.get("code"), quantity.get("unit")):
        if not isinstance(unit, str):
            continue
        key = unit.strip().lower()
        if marker.vs_id == "body-temperature" and key in _FAHRENHEIT_UNITS:
            return (float(value) - 32.0) * 5.0 / 9.0
        if key in marker.conversions:
            return float(value) * marker.conversions[key]
    return None


def _exceeds(marker: Marker, value: float, limit: float) -> bool:
    return value >= limit if marker.comparison == ">=" else value > limit


def _recent(ctx: EvaluationContext, entry: Entry) -> bool:
    return entry.date is not None and entry.date >= ctx.since("recent_result_days") \
        and ctx.not_future(entry.date)


@fact("infection_markers_abnormal", """Within the recent-result window (default 7 days):
      temperature at or above the fever threshold (default 38.0 °C, °F converted), CRP above
      its threshold (default 10 mg/L, mg/dL converted), ESR above its threshold (default
      30 mm/h) or WBC above its threshold (default 11.0 ×10³/µL), or a recorded fever.
      Values in units the service cannot convert are not compared.""")
def infection_markers_abnormal(ctx: EvaluationContext) -> Fact:
    evidence: list[Evidence] = []
    for marker in MARKERS:
        limit = ctx.threshold(marker.threshold)
        for entry, _ in ctx.coded("Observation", marker.vs_id):
            quantity = entry.resource.get("valueQuantity")
            if not _recent(ctx, entry) or not isinstance(quantity, dict):
                continue
            value = canonical_value(marker, quantity)
            if value is not None and _exceeds(marker, value, limit):
                shown = f"{value:.1f}".rstrip("0").rstrip(".")
                evidence.append(evidence_of(
                    entry, f"{marker.name} {shown} {marker.unit} (threshold "
                    f"{marker.comparison} {limit:g} {marker.unit})", when="resulted"))
    for rtype in ("Condition", "Observation"):
        for entry, _ in ctx.coded(rtype, "fever"):
            if _recent(ctx, entry):
                evidence.append(evidence_of(entry, f"Fever recorded ({entry.label})",
                                            when="onset"))
    return Fact("", bool(evidence), evidence)


@fact("postop_infection_condition", """An active Condition of spinal epidural abscess or
      postoperative spine infection (deep or organ-space surgical-site infection, hardware
      infection, discitis, vertebral osteomyelitis), confirmed or suspected, dated on or
      after (or undated with) a spine surgery performed within the recent-surgery window
      (default 90 days).""")
def postop_infection_condition(ctx: EvaluationContext) -> Fact:
    recent = ctx.fact("recent_spine_surgery")
    if not recent:
        return absent()
    earliest = recent["procedures"][-1].date
    found = [e for e, _ in ctx.coded("Condition", "spinal-epidural-abscess",
                                     "postoperative-spine-infection")
             if e.date is None or e.date.date() >= earliest.date()]
    if not found:
        return absent()
    evidence = [performed(recent["latest"])]
    evidence += [evidence_of(e, when="onset") for e in found]
    return Fact("", True, evidence, {"conditions": found})


@fact("infection_suspected", """Infection is suspected: an enhancing postoperative
      collection, a postoperative spine infection Condition, or an active (confirmed or
      suspected) spinal epidural abscess Condition of any date.""")
def infection_suspected(ctx: EvaluationContext) -> Fact:
    evidence: list[Evidence] = []
    for name in ("enhancing_postop_collection", "postop_infection_condition"):
        evidence += ctx.fact(name).evidence
    for entry, _ in ctx.coded("Condition", "spinal-epidural-abscess"):
        candidate = evidence_of(entry, when="onset")
        if candidate not in evidence:
            evidence.append(candidate)
    return Fact("", bool(evidence), evidence)


def _resulted_or_ordered(ctx: EvaluationContext, vs_id: str) -> Fact:
    evidence = [evidence_of(e, when="resulted") for e, _ in ctx.coded("Observation", vs_id)
                if _recent(ctx, e)]
    evidence += pending_evidence(ctx, vs_id)
    return Fact("", bool(evidence), evidence)


@fact("esr_recent_or_pending", """An ESR resulted within the recent-result window
      (default 7 days), or ordered and pending.""")
def esr_recent_or_pending(ctx: EvaluationContext) -> Fact:
    return _resulted_or_ordered(ctx, "esr")


@fact("crp_recent_or_pending", """A CRP resulted within the recent-result window
      (default 7 days), or ordered and pending.""")
def crp_recent_or_pending(ctx: EvaluationContext) -> Fact:
    return _resulted_or_ordered(ctx, "crp")


@fact("cbc_recent_or_pending", """A white cell count (CBC) resulted within the
      recent-result window (default 7 days), or a CBC ordered and pending.""")
def cbc_recent_or_pending(ctx: EvaluationContext) -> Fact:
    return _resulted_or_ordered(ctx, "wbc")


@fact("blood_cultures_recent_or_pending", """Blood cultures resulted within the
      recent-result window (default 7 days), or ordered and pending.""")
def blood_cultures_recent_or_pending(ctx: EvaluationContext) -> Fact:
    return _resulted_or_ordered(ctx, "blood-culture")
