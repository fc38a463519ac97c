"""Facts about imaging findings after spine surgery."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from cds_service.engine.facts import (
    EvaluationContext,
    Evidence,
    Fact,
    absent,
    evidence_of,
    fact,
)
from cds_service.engine.facts.surgery import SPINE_SURGERY_SETS, performed, surgeries
from cds_service.engine.findings import ImagingFinding
from cds_service.engine.record import SUSPECTED, Entry, plain_display

_NAMES = {
    "fluid-collection": "Postoperative fluid collection",
    "rim-enhancement": "Rim or peripheral enhancement",
    "neural-compression": "Compression of neural elements",
    "disc-herniation": "Lumbar disc herniation",
}


def finding_evidence(finding: ImagingFinding) -> Evidence:
    modality = {"MR": "MRI", "CT": "CT"}.get(finding.modality or "", "imaging")
    name = _NAMES[finding.concept]
    if finding.how == "text":
        quoted = finding.phrase if len(finding.phrase) <= 160 else finding.phrase[:157] + "..."
        text = f'{name} on {modality} (report text: "{quoted}")'
    else:
        text = f"{name} on {modality} ({plain_display(finding.phrase)})"
    refs = (finding.source.ref,) if finding.study is None else (finding.source.ref,
                                                                 finding.study.ref)
    return Evidence(text, finding.date, refs, finding.certainty == SUSPECTED, "imaged")


def _dated(ctx: EvaluationContext, findings: list[ImagingFinding]) -> list[ImagingFinding]:
    return [f for f in findings if ctx.not_future(f.date)]


def _after(findings: list[ImagingFinding], start: datetime) -> list[ImagingFinding]:
    """Findings dated on or after ``start`` (same-day imaging counts as after)."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return [f for f in findings if f.date is not None and f.date >= day]


def _finding_fact(findings: list[ImagingFinding], **attrs) -> Fact:
    if not findings:
        return absent()
    findings = sorted(findings, key=lambda f: f.date, reverse=True)
    return Fact("", True, [finding_evidence(f) for f in findings],
                {"findings": findings, "latest": findings[0], **attrs})


@fact("lumbar_herniation_confirmed", """A confirmed lumbar disc herniation of any date:
      coded (Condition, Observation, report conclusion), the spine-cds code, or asserted
      in report text. Provisional diagnoses and uncertain wording do not count.""")
def lumbar_herniation_confirmed(ctx: EvaluationContext) -> Fact:
    return _finding_fact([f for f in ctx.imaging.of("disc-herniation") if f.confirmed])


@fact("recurrent_lumbar_herniation", """A confirmed lumbar disc herniation recorded after a
      completed lumbar discectomy (recurrence is inferred from the dates).""")
def recurrent_lumbar_herniation(ctx: EvaluationContext) -> Fact:
    discectomies = surgeries(ctx, "lumbar-discectomy")
    if not discectomies:
        return absent()
    first = discectomies[-1]
    herniations = [f for f in ctx.imaging.of("disc-herniation") if f.confirmed and f.date
                   and f.date.date() > first.date.date() and ctx.not_future(f.date)]
    fact_ = _finding_fact(herniations, discectomy=first)
    if fact_.holds:
        fact_.evidence.insert(0, performed(first))
    return fact_


@fact("postop_collection_after_recent_discectomy", """A fluid collection on imaging
      (confirmed or suspected) dated on or after a lumbar discectomy performed within the
      recent-surgery window (default 90 days).""")
def postop_collection_after_recent_discectomy(ctx: EvaluationContext) -> Fact:
    recent = ctx.fact("recent_lumbar_discectomy")
    if not recent:
        return absent()
    surgery: Entry = recent["latest"]
    found = _after(_dated(ctx, ctx.imaging.of("fluid-collection")), surgery.date)
    fact_ = _finding_fact(found, surgery=surgery)
    if fact_.holds:
        fact_.evidence.insert(0, performed(surgery))
    return fact_


def _enhancing_events(ctx: EvaluationContext, since: datetime) -> list[list[ImagingFinding]]:
    """Imaging events that show both a collection and rim enhancement."""
    events: dict[str, list[ImagingFinding]] = defaultdict(list)
    for finding in _after(_dated(ctx, ctx.imaging.findings), since):
        if finding.concept in ("fluid-collection", "rim-enhancement"):
            events[finding.event].append(finding)
    return [group for group in events.values()
            if {f.concept for f in group} == {"fluid-collection", "rim-enhancement"}]


@fact("enhancing_postop_collection", """A fluid collection with rim or peripheral
      enhancement on the same imaging study (or the same report, or the same day when
      nothing links them), dated on or after a spine surgery performed within the
      recent-surgery window (default 90 days).""")
def enhancing_postop_collection(ctx: EvaluationContext) -> Fact:
    recent = ctx.fact("recent_spine_surgery")
    if not recent:
        return absent()
    surgery: Entry = recent["procedures"][-1]  # the earliest recent surgery opens the window
    events = _enhancing_events(ctx, surgery.date)
    if not events:
        return absent()
    findings = [f for group in events for f in group]
    fact_ = _finding_fact(findings, surgery=recent["latest"])
    fact_.evidence.insert(0, performed(recent["latest"]))
    return fact_


@fact("early_postop_mri_finding", """An MRI dated within the early-postoperative window
      (default 42 days) after a spine surgery performed within the recent-surgery window,
      showing a fluid collection or enhancement.""")
def early_postop_mri_finding(ctx: EvaluationContext) -> Fact:
    recent = ctx.fact("recent_spine_surgery")
    if not recent:
        return absent()
    window = ctx.days("early_postop_imaging_days")
    found = []
    for surgery in recent["procedures"]:
        for finding in _after(_dated(ctx, ctx.imaging.findings), surgery.date):
            if (finding.modality == "MR"
                    and finding.concept in ("fluid-collection", "rim-enhancement")
                    and finding.date - surgery.date <= window):
                found.append(finding)
    if not found:
        return absent()
    latest = max(found, key=lambda f: f.date)
    days_after = (latest.date - recent["latest"].date).days
    fact_ = _finding_fact(found, surgery=recent["latest"], days_after=max(days_after, 0))
    fact_.evidence.insert(0, performed(recent["latest"]))
    return fact_


def _imaging_after(ctx: EvaluationContext, finding: ImagingFinding) -> list[Entry]:
    own = finding.study.ref if finding.study else None
    return [s for s in ctx.imaging.lumbar_imaging()
            if s.ref != own and s.date is not None and s.date.date() > finding.date.date()]


@fact("chronic_postop_seroma", """A postoperative seroma or fluid collection shown on
      imaging after a lumbar fusion, that imaging dated at least the chronic-seroma
      threshold ago (default 120 days), with no imaging of the lumbar spine since
      (imaging whose region is not recorded counts as lumbar).""")
def chronic_postop_seroma(ctx: EvaluationContext) -> Fact:
    fusions = surgeries(ctx, "lumbar-fusion")
    if not fusions:
        return absent()
    cutoff = ctx.since("chronic_seroma_days")
    found = [f for f in _after(_dated(ctx, ctx.imaging.of("fluid-collection")),
                               fusions[-1].date)
             if f.date <= cutoff and not _imaging_after(ctx, f)]
    return _finding_fact(found, age_days=(ctx.now - max((f.date for f in found),
                                                        default=ctx.now)).days)


@fact("late_persistent_collection", """A fluid collection still shown on imaging dated at
      least the chronic-seroma threshold (default 120 days) after the spine surgery
      before it.""")
def late_persistent_collection(ctx: EvaluationContext) -> Fact:
    ops = surgeries(ctx, *SPINE_SURGERY_SETS)
    found = []
    for finding in _dated(ctx, ctx.imaging.of("fluid-collection")):
        before = [s for s in ops if s.date <= finding.date]
        if before and finding.date - before[0].date >= ctx.days("chronic_seroma_days"):
            found.append(finding)
    return _finding_fact(found)


@fact("postop_collection_on_record", """A fluid collection on imaging dated on or after
      any completed spine surgery.""")
def postop_collection_on_record(ctx: EvaluationContext) -> Fact:
    ops = surgeries(ctx, *SPINE_SURGERY_SETS)
    if not ops:
        return absent()
    return _finding_fact(_after(_dated(ctx, ctx.imaging.of("fluid-collection")), ops[-1].date))


@fact("radiographic_neural_compression", """Imaging (coded, spine-cds code, or report
      text, confirmed or suspected) showing compression of the cord, cauda equina, thecal
      sac or a nerve root.""")
def radiographic_neural_compression(ctx: EvaluationContext) -> Fact:
    return _finding_fact(_dated(ctx, ctx.imaging.of("neural-compression")))


def _studies_or_orders(ctx: EvaluationContext, vs_id: str, modality: str, region: str,
                       within: timedelta | None) -> list[Evidence]:
    out = []
    for study in ctx.record.entries("ImagingStudy"):
        if (ctx.imaging.modality(study) == modality and ctx.imaging.region(study) == region
                and study.date is not None and ctx.not_future(study.date)
                and (within is None or study.date >= ctx.now - within)):
            out.append(evidence_of(study, study.text or f"{modality} {region} spine",
                                   when="imaged"))
    return out + pending_evidence(ctx, vs_id)


def pending_evidence(ctx: EvaluationContext, *vs_ids: str) -> list[Evidence]:
    """One evidence line per order with a code in the value sets not yet done."""
    return [evidence_of(o, f"{o.label} (ordered, {o.status})", when="ordered")
            for o, _ in pending_orders(ctx, *vs_ids)]


def pending_orders(ctx: EvaluationContext, *vs_ids: str):
    pool = [e for e in ctx.record.entries("ServiceRequest") if e.status != "completed"]
    pool += [e for e in ctx.drafts if e.type == "ServiceRequest"]
    return ctx.coded("ServiceRequest", *vs_ids, entries=pool)


@fact("lumbar_mri_recent_or_pending", """An MRI of the lumbar spine within the
      recent-MRI window (default 14 days), or one ordered and not yet done.""")
def lumbar_mri_recent_or_pending(ctx: EvaluationContext) -> Fact:
    evidence = _studies_or_orders(ctx, "lumbar-mri", "MR", "lumbar",
                                  ctx.days("recent_lumbar_mri_days"))
    return Fact("", bool(evidence), evidence)


@fact("lumbar_ct_recent_or_pending", """A CT of the lumbar spine within the recent-CT window
      (default 30 days), or one ordered and not yet done.""")
def lumbar_ct_recent_or_pending(ctx: EvaluationContext) -> Fact:
    evidence = _studies_or_orders(ctx, "spine-ct", "CT", "lumbar",
                                  ctx.days("recent_lumbar_ct_days"))
    return Fact("", bool(evidence), evidence)


@fact("cervical_mri_recent_or_pending", """An MRI of the cervical spine within the
      myelopathy-sign window (default 90 days), or one ordered and not yet done.""")
def cervical_mri_recent_or_pending(ctx: EvaluationContext) -> Fact:
    evidence = _studies_or_orders(ctx, "cervical-mri", "MR", "cervical",
                                  ctx.days("myelopathy_sign_days"))
    return Fact("", bool(evidence), evidence)


@fact("spine_mri_pending", "An MRI of the lumbar or cervical spine ordered and not yet done.")
def spine_mri_pending(ctx: EvaluationContext) -> Fact:
    evidence = pending_evidence(ctx, "lumbar-mri", "cervical-mri")
    return Fact("", bool(evidence), evidence)
