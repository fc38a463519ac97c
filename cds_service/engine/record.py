"""The patient record, indexed cheaply from raw FHIR JSON.

Every resource becomes an ``Entry``: its reference, the codings of the concept
it records, its clinical date, and whether it *counts* under the reading
conventions of ``clinical/rules.md`` (statuses, verification, negation).
Nothing here builds a ``fhir.resources`` model: parsing every resource with
pydantic costs 15-25x the JSON parse, and the rules need only a few fields.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cds_service.engine.dates import parse_fhir_datetime
from cds_service.engine.valuesets import ValueSet, normalise_code

# Confirmation levels. ``None`` means the resource does not count at all.
CONFIRMED = "confirmed"
SUSPECTED = "suspected"

_CONDITION_ACTIVE = {"active", "recurrence", "relapse"}
_CONDITION_SUSPECTED = {"provisional", "differential", "unconfirmed"}
_CONDITION_EXCLUDED = {"refuted", "entered-in-error"}
_OBSERVATION_COUNTS = {"final", "amended", "corrected", "preliminary"}
_REPORT_COUNTS = {"final", "amended", "corrected", "preliminary", "appended", "partial"}
_IMAGING_EXCLUDED = {"cancelled", "entered-in-error"}
_MEDICATION_COUNTS = {"active", "completed"}
_ORDER_PENDING = {"draft", "active", "on-hold"}

SNOMED = "http://snomed.info/sct"
# Values that deny the finding an Observation records.
_DENYING_CODES = {
    (SNOMED, "2667000"),  # Absent
    (SNOMED, "260385009"),  # Negative
    (SNOMED, "272519000"),  # Absence findings
    ("http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "NEG"),
}
_DENYING_WORDS = {"absent", "negative", "not present", "not detected", "no", "none"}
_NEGATIVE_INTERPRETATIONS = {"NEG", "ND"}


def _codings(concept: object) -> list[tuple[str, str]]:
    # On the hot path (every resource of every request): exact type checks, no helpers.
    if concept.__class__ is not dict:
        return []
    codings = concept.get("coding")
    if codings.__class__ is not list:
        return []
    out = []
    for coding in codings:
        if coding.__class__ is dict:
            system = coding.get("system")
            code = coding.get("code")
            if system.__class__ is str and code.__class__ is str:
                out.append((system, code))
    return out


def _first_code(concept: object) -> str | None:
    codings = _codings(concept)
    return codings[0][1] if codings else None


def _status_codes(concept: object) -> set[str]:
    return {code for _, code in _codings(concept)}


_SEMANTIC_TAG = re.compile(r"\s+\((?:procedure|disorder|finding|regime/therapy|situation"
                           r"|morphologic abnormality|observable entity|qualifier value)\)$")


def plain_display(display: str) -> str:
    """A code display without its SNOMED CT semantic tag."""
    return _SEMANTIC_TAG.sub("", display.strip())


def concept_text(concept: object) -> str:
    """The human text of a CodeableConcept: its text, else the first display
    (without a SNOMED CT semantic tag such as "(disorder)")."""
    if not isinstance(concept, dict):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            return plain_display(coding["display"])
    return ""


def reference_key(reference: object) -> str | None:
    """``Type/id`` for a literal reference (relative, absolute or versioned)."""
    if isinstance(reference, dict):
        reference = reference.get("reference")
    if not isinstance(reference, str) or not reference:
        return None
    if reference.startswith(("urn:uuid:", "urn:oid:", "#")):
        return reference
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return None


def _period_start(value: object) -> datetime | None:
    if isinstance(value, dict):
        return parse_fhir_datetime(value.get("start"))
    return None


def _observation_denied(obs: dict) -> bool:
    if obs.get("valueBoolean") is False:
        return True
    value_concept = obs.get("valueCodeableConcept")
    if isinstance(value_concept, dict):
        if any(c in _DENYING_CODES for c in _codings(value_concept)):
            return True
        if concept_text(value_concept).strip().lower() in _DENYING_WORDS:
            return True
    value_string = obs.get("valueString")
    if isinstance(value_string, str) and value_string.strip().lower() in _DENYING_WORDS:
        return True
    for interpretation in obs.get("interpretation") or ():
        if _status_codes(interpretation) & _NEGATIVE_INTERPRETATIONS:
            return True
    return False


@dataclass(slots=True)
class Entry:
    """One resource with what the rules read from it."""

    resource: dict
    type: str
    ref: str
    codings: list[tuple[str, str]]
    date: datetime | None
    certainty: str | None  # CONFIRMED, SUSPECTED or None (does not count)
    status: str | None = None
    text_source: object = None  # the CodeableConcept (or string) the label comes from
    seq: int = 0  # position in the record, so that lookups keep the record's order
    _text: str | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """Human text of what the resource records (computed when first asked for)."""
        if self._text is None:
            source = self.text_source
            self._text = source.strip() if isinstance(source, str) else concept_text(source)
        return self._text

    @property
    def counts(self) -> bool:
        return self.certainty is not None

    @property
    def label(self) -> str:
        return self.text or (self.codings[0][1] if self.codings else self.type)


def _condition_entry(res: dict, ref: str) -> Entry:
    clinical = _status_codes(res.get("clinicalStatus"))
    verification = _status_codes(res.get("verificationStatus"))
    certainty: str | None = CONFIRMED
    if clinical and not clinical & _CONDITION_ACTIVE:
        certainty = None
    elif not clinical and any(key.startswith("abatement") for key in res):
        certainty = None  # an abated condition without a status is over, not active
    elif verification & _CONDITION_EXCLUDED:
        certainty = None
    elif verification & _CONDITION_SUSPECTED:
        certainty = SUSPECTED
    date = (
        parse_fhir_datetime(res.get("onsetDateTime"))
        or _period_start(res.get("onsetPeriod"))
        or parse_fhir_datetime(res.get("recordedDate"))
    )
    return Entry(res, "Condition", ref, _codings(res.get("code")), date, certainty,
                 _first_code(res.get("clinicalStatus")), res.get("code"))


def _observation_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    counts = status in _OBSERVATION_COUNTS and not _observation_denied(res)
    codings = _codings(res.get("code")) + _codings(res.get("valueCodeableConcept"))
    date = (
        parse_fhir_datetime(res.get("effectiveDateTime"))
        or _period_start(res.get("effectivePeriod"))
        or parse_fhir_datetime(res.get("effectiveInstant"))
        or parse_fhir_datetime(res.get("issued"))
    )
    return Entry(res, "Observation", ref, codings, date, CONFIRMED if counts else None,
                 status if isinstance(status, str) else None, res.get("code"))


def _procedure_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    date = parse_fhir_datetime(res.get("performedDateTime")) or _period_start(
        res.get("performedPeriod"))
    return Entry(res, "Procedure", ref, _codings(res.get("code")), date,
                 CONFIRMED if status == "completed" else None,
                 status if isinstance(status, str) else None, res.get("code"))


def _report_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    codings = []
    for concept in res.get("conclusionCode") or ():
        codings.extend(_codings(concept))
    date = (
        parse_fhir_datetime(res.get("effectiveDateTime"))
        or _period_start(res.get("effectivePeriod"))
        or parse_fhir_datetime(res.get("issued"))
    )
    return Entry(res, "DiagnosticReport", ref, codings, date,
                 CONFIRMED if status in _REPORT_COUNTS else None,
                 status if isinstance(status, str) else None, res.get("code"))


def _imaging_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    codings = []
    for concept in res.get("procedureCode") or ():
        codings.extend(_codings(concept))
    return Entry(res, "ImagingStudy", ref, codings, parse_fhir_datetime(res.get("started")),
                 None if status in _IMAGING_EXCLUDED else CONFIRMED,
                 status if isinstance(status, str) else None,
                 res.get("description"))


def _request_date(res: dict) -> datetime | None:
    return parse_fhir_datetime(res.get("authoredOn")) or parse_fhir_datetime(
        res.get("occurrenceDateTime")) or _period_start(res.get("occurrencePeriod"))


def _medication_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    return Entry(res, "MedicationRequest", ref, _codings(res.get("medicationCodeableConcept")),
                 _request_date(res), CONFIRMED if status in _MEDICATION_COUNTS else None,
                 status if isinstance(status, str) else None,
                 res.get("medicationCodeableConcept"))


def _service_request_entry(res: dict, ref: str) -> Entry:
    status = res.get("status")
    counts = status in _ORDER_PENDING or status == "completed"
    return Entry(res, "ServiceRequest", ref, _codings(res.get("code")), _request_date(res),
                 CONFIRMED if counts else None, status if isinstance(status, str) else None,
                 res.get("code"))


def _other_entry(res: dict, ref: str) -> Entry:
    return Entry(res, res["resourceType"], ref, _codings(res.get("code")), None, CONFIRMED)


_BUILDERS = {
    "Condition": _condition_entry,
    "Observation": _observation_entry,
    "Procedure": _procedure_entry,
    "DiagnosticReport": _report_entry,
    "ImagingStudy": _imaging_entry,
    "MedicationRequest": _medication_entry,
    "ServiceRequest": _service_request_entry,
}


def make_entry(resource: dict, ordinal: int) -> Entry | None:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return None
    rid = resource.get("id")
    ref = f"{rtype}/{rid}" if isinstance(rid, str) and rid else f"{rtype}/#{ordinal}"
    builder = _BUILDERS.get(rtype, _other_entry)
    return builder(resource, ref)


_ROUTINE = frozenset({"vital-signs", "laboratory", "social-history", "survey", "activity"})
FINDING_SYSTEM = "urn:spine-cds:finding"


def routine_measurement(resource: dict) -> bool:
    """An Observation in a routine category (vital signs, laboratory, ...): a measurement,
    never an imaging finding."""
    categories = resource.get("category")
    if categories.__class__ is not list:
        return False
    return any(code in _ROUTINE for category in categories for _system, code in _codings(category))


def _irrelevant_measurement(resource: dict, known_codes: frozenset[tuple[str, str]]) -> bool:
    """A vital sign or lab Observation whose codes are in no value set: no fact reads it
    (imaging findings are never read from routine categories either)."""
    if resource.get("resourceType") != "Observation" or not routine_measurement(resource):
        return False
    for system, code in _codings(resource.get("code")) + _codings(
            resource.get("valueCodeableConcept")):
        if system == FINDING_SYSTEM or (system, normalise_code(system, code)) in known_codes:
            return False
    return True


@dataclass
class PatientRecord:
    """Every resource of the patient, by type and by reference."""

    by_type: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    by_ref: dict[str, Entry] = field(default_factory=dict)
    sequence: list[Entry] = field(default_factory=list)
    _by_code: dict[tuple[str, str], list[Entry]] | None = None
    _by_system: dict[str, list[tuple[str, Entry]]] | None = None

    @classmethod
    def from_resources(cls, resources: Iterable[dict],
                       full_urls: dict[str, dict] | None = None,
                       known_codes: frozenset[tuple[str, str]] | None = None) -> PatientRecord:
        """Index ``resources``. With ``known_codes`` (every code of every value set),
        routine measurements no fact can use (a heart rate, a glucose) are left out."""
        record = cls()
        seen: set[str] = set()
        for ordinal, resource in enumerate(resources):
            if not isinstance(resource, dict):
                continue
            if known_codes is not None and _irrelevant_measurement(resource, known_codes):
                continue
            entry = make_entry(resource, ordinal)
            if entry is None or entry.ref in seen:
                continue  # the same resource prefetched under two keys counts once
            seen.add(entry.ref)
            entry.seq = len(record.sequence)
            record.sequence.append(entry)
            record.by_type[entry.type].append(entry)
            record.by_ref[entry.ref] = entry
        for url, resource in (full_urls or {}).items():
            key = f"{resource.get('resourceType')}/{resource.get('id')}"
            if key in record.by_ref:
                record.by_ref[url] = record.by_ref[key]
        return record

    def _build_code_index(self) -> None:
        by_code: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        by_system: dict[str, list[tuple[str, Entry]]] = defaultdict(list)
        for entries in self.by_type.values():
            for entry in entries:
                if not entry.counts:
                    continue
                for system, code in entry.codings:
                    by_code[(system, normalise_code(system, code))].append(entry)
                    by_system[system].append((code, entry))
        self._by_code, self._by_system = by_code, by_system

    def with_codes_in(self, valueset: ValueSet) -> set[int]:
        """Sequence numbers of counting entries with a code in ``valueset`` (any type)."""
        if self._by_code is None:
            self._build_code_index()
        found = {e.seq for key in valueset.codes for e in self._by_code.get(key, ())}
        for system, prefix in valueset.prefixes:
            upper = prefix.upper()
            found.update(e.seq for code, e in self._by_system.get(system, ())
                         if code.upper().startswith(upper))
        return found

    def entries(self, rtype: str, *, counting: bool = True) -> list[Entry]:
        found = self.by_type.get(rtype, [])
        return [e for e in found if e.counts] if counting else list(found)

    def resolve(self, reference: object) -> Entry | None:
        key = reference_key(reference)
        return self.by_ref.get(key) if key else None

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_type.values())
