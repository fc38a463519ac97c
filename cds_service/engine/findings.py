"""Imaging findings, however they were recorded.

A finding may arrive as a coded Condition or Observation, as a
``DiagnosticReport.conclusionCode``, as one of the service's own
``urn:spine-cds:finding`` codes, or only as text (report conclusion,
``valueString``, ``code.text``). All of them become ``ImagingFinding``s with
the modality, region and date of the ImagingStudy they are linked to, when
they are linked to one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cds_service.engine.findings_text import find_findings
from cds_service.engine.record import (
    CONFIRMED,
    FINDING_SYSTEM,
    SUSPECTED,
    Entry,
    PatientRecord,
    concept_text,
    routine_measurement,
)
from cds_service.engine.valuesets import CodeInfo, ValueSet

FINDING_CONCEPTS = ("fluid-collection", "rim-enhancement", "neural-compression", "disc-herniation")
# Value sets whose codes record one of the finding concepts.
CODED_FINDINGS = {
    "postoperative-fluid-collection": "fluid-collection",
    "lumbar-disc-herniation": "disc-herniation",
}
DCM = "http://dicom.nema.org/resources/ontology/DCM"

# Cheap screen before the text matcher: most texts in a record are labs and vitals.
_MAYBE_FINDING = re.compile(
    r"collect|seroma|enhanc|herniat|hnp|extru|protru|prolap|compress|efface|impinge|abscess"
    r"|h(?:a)?ematoma|pseudomening|fluid|mass effect|displac|pocket", re.IGNORECASE)
_MR_TEXT = re.compile(r"\bMRI?\b|magnetic resonance", re.IGNORECASE)
_CT_TEXT = re.compile(r"\bCT\b|computed tomograph", re.IGNORECASE)
_LUMBAR_TEXT = re.compile(r"lumb|l-?spine|\bL[1-5]\b|lumbosacral|\bL5-?S1\b", re.IGNORECASE)
_CERVICAL_TEXT = re.compile(r"cervic|c-?spine|\bC[1-7]\b", re.IGNORECASE)
_THORACIC_TEXT = re.compile(r"thorac|t-?spine", re.IGNORECASE)
_REGION_BODY_SITES = {  # SNOMED body structures of the spine regions
    "122496007": "lumbar",
    "122494005": "cervical",
    "122495006": "thoracic",
}


_OWN_FINDING_CODES = ValueSet("spine-cds-findings", "The service's own finding codes", "",
                              prefixes=((FINDING_SYSTEM, ""),))
_ASSERTED = ("present", "uncertain")
_SENTENCE_END = re.compile(r"[.;\n](?:\s|$)")


def sentence_around(text: str, start: int, end: int) -> str:
    """The sentence of ``text`` that holds the span, to quote it on a card."""
    begin = 0
    for match in _SENTENCE_END.finditer(text, 0, start):
        begin = match.end()
    stop = _SENTENCE_END.search(text, end)
    return text[begin: stop.start() + 1 if stop else len(text)].strip()


@dataclass(frozen=True)
class ImagingFinding:
    concept: str
    certainty: str
    date: datetime | None
    modality: str | None
    region: str | None
    event: str
    source: Entry
    study: Entry | None
    how: str  # "code", "text" or "spine-cds code"
    phrase: str
    info: CodeInfo | None = None

    @property
    def confirmed(self) -> bool:
        return self.certainty == CONFIRMED


def study_modalities(study: Entry) -> set[str]:
    res = study.resource
    found = set()
    for coding in res.get("modality") or ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            found.add(coding["code"].upper())
    for series in res.get("series") or ():
        if isinstance(series, dict):
            modality = series.get("modality")
            if isinstance(modality, dict) and isinstance(modality.get("code"), str):
                found.add(modality["code"].upper())
    return found


def modality_from_text(text: str) -> str | None:
    if _MR_TEXT.search(text):
        return "MR"
    if _CT_TEXT.search(text):
        return "CT"
    return None


def region_from_text(text: str) -> str | None:
    for pattern, region in ((_LUMBAR_TEXT, "lumbar"), (_CERVICAL_TEXT, "cervical"),
                            (_THORACIC_TEXT, "thoracic")):
        if pattern.search(text):
            return region
    return None


class ImagingIndex:
    """Modality, region and findings of the record's imaging, computed once."""

    def __init__(self, record: PatientRecord, valuesets: dict[str, ValueSet]) -> None:
        self.record = record
        self.valuesets = valuesets
        self._report_of_result: dict[str, Entry] = {}
        for report in record.entries("DiagnosticReport", counting=False):
            for result in report.resource.get("result") or ():
                target = record.resolve(result)
                if target is not None:
                    self._report_of_result[target.ref] = report
        self.findings: list[ImagingFinding] = self._collect()

    # -- studies ---------------------------------------------------------------
    def modality(self, study: Entry) -> str | None:
        found = study_modalities(study)
        for preferred in ("MR", "CT"):
            if preferred in found:
                return preferred
        if found:
            return sorted(found)[0]
        return self._coded_modality(study) or modality_from_text(study.text)

    def _coded_modality(self, entry: Entry) -> str | None:
        for vs_id, modality in (("lumbar-mri", "MR"), ("cervical-mri", "MR"), ("spine-ct", "CT")):
            vs = self.valuesets.get(vs_id)
            if vs is not None and vs.first_match(entry.codings):
                return modality
        return None

    def region(self, entry: Entry) -> str | None:
        for vs_id in ("lumbar-mri", "cervical-mri", "spine-ct"):
            vs = self.valuesets.get(vs_id)
            info = vs.first_match(entry.codings) if vs else None
            if info is not None and info.region:
                return info.region
        for series in entry.resource.get("series") or ():
            body = series.get("bodySite") if isinstance(series, dict) else None
            if isinstance(body, dict) and body.get("code") in _REGION_BODY_SITES:
                return _REGION_BODY_SITES[body["code"]]
        return region_from_text(entry.text)

    def study_of(self, entry: Entry) -> Entry | None:
        res = entry.resource
        links: list = []
        if entry.type == "Observation":
            links = list(res.get("derivedFrom") or ()) + list(res.get("partOf") or ())
        elif entry.type == "Condition":
            for evidence in res.get("evidence") or ():
                if isinstance(evidence, dict):
                    links.extend(evidence.get("detail") or ())
        elif entry.type == "DiagnosticReport":
            links = list(res.get("imagingStudy") or ())
        for link in links:
            target = self.record.resolve(link)
            if target is None:
                continue
            if target.type == "ImagingStudy":
                return target
            if target.type == "DiagnosticReport" and target is not entry:
                return self.study_of(target)
        report = self._report_of_result.get(entry.ref)
        if report is not None:
            return self.study_of(report)
        return None

    # -- findings --------------------------------------------------------------
    def _finding(self, concept: str, certainty: str, entry: Entry, how: str, phrase: str,
                 info: CodeInfo | None = None) -> ImagingFinding:
        study = self.study_of(entry)
        if study is not None:
            date = study.date or entry.date
            modality = self.modality(study)
            region = self.region(study)
            event = study.ref
        else:
            date = entry.date
            modality = self._coded_modality(entry) if entry.type == "DiagnosticReport" else None
            modality = modality or modality_from_text(entry.text)
            region = self.region(entry) if entry.type == "DiagnosticReport" else None
            event = f"day:{date.date().isoformat()}" if date else entry.ref
        return ImagingFinding(concept, certainty, date, modality, region, event, entry, study,
                              how, phrase, info)

    def _texts(self, entry: Entry) -> list[str]:
        res = entry.resource
        texts = []
        if entry.type == "DiagnosticReport":
            texts.append(res.get("conclusion"))
        elif entry.type == "Observation":
            if "valueQuantity" in res or routine_measurement(res):
                return []  # measurements, vital signs and lab results carry no imaging findings
            texts += [entry.text, res.get("valueString"),
                      concept_text(res.get("valueCodeableConcept"))]
        elif entry.type == "Condition":
            texts.append(entry.text)
        return [t for t in texts if isinstance(t, str) and t and _MAYBE_FINDING.search(t)]

    def _collect(self) -> list[ImagingFinding]:
        found: list[ImagingFinding] = []
        coded = self.record.with_codes_in(_OWN_FINDING_CODES)
        for vs_id in CODED_FINDINGS:
            if vs_id in self.valuesets:
                coded |= self.record.with_codes_in(self.valuesets[vs_id])
        for rtype in ("Condition", "Observation", "DiagnosticReport"):
            for entry in self.record.entries(rtype):
                seen: set[str] = set()
                if entry.seq in coded:
                    self._coded_findings(entry, found, seen)
                for text in self._texts(entry):
                    for mention in find_findings(text):
                        if mention.concept in seen or mention.status not in _ASSERTED:
                            continue
                        certainty = entry.certainty if mention.status == "present" else SUSPECTED
                        found.append(self._finding(mention.concept, certainty, entry, "text",
                                                   sentence_around(text, mention.start,
                                                                   mention.end)))
                        seen.add(mention.concept)
        return found

    def _coded_findings(self, entry: Entry, found: list[ImagingFinding], seen: set[str]) -> None:
        for system, code in entry.codings:
            if system == FINDING_SYSTEM and code in FINDING_CONCEPTS and code not in seen:
                found.append(self._finding(code, entry.certainty, entry, "spine-cds code", code))
                seen.add(code)
        for vs_id, concept in CODED_FINDINGS.items():
            vs = self.valuesets.get(vs_id)
            info = vs.first_match(entry.codings) if vs else None
            if info is not None and concept not in seen:
                found.append(self._finding(concept, entry.certainty, entry, "code",
                                           info.display, info))
                seen.add(concept)

    def of(self, concept: str) -> list[ImagingFinding]:
        return [f for f in self.findings if f.concept == concept]

    def lumbar_imaging(self) -> list[Entry]:
        """Studies of the lumbar spine, and studies whose region is not recorded."""
        return [s for s in self.record.entries("ImagingStudy")
                if self.region(s) in ("lumbar", None)]
