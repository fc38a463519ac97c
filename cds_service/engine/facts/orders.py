"""Facts about the draft orders under evaluation (order-select: the selections;
order-sign: every draft), and about orders already placed."""

from __future__ import annotations

import re

from cds_service.engine.facts import EvaluationContext, Fact, evidence_of, fact
from cds_service.engine.facts.imaging import pending_evidence
from cds_service.engine.facts.medication import medication_codings
from cds_service.engine.findings import region_from_text
from cds_service.engine.record import Entry, concept_text

_CONSERVATIVE_TEXT = re.compile(
    r"physical therap|physiotherap|\bPT (?:eval|referral)|epidural (?:steroid )?injection"
    r"|\bESI\b|transforaminal", re.IGNORECASE)
_STEROID_TEXT = re.compile(
    r"prednison|methylprednisolon|medrol|dexamethason|prednisolon", re.IGNORECASE)
_NOT_ORAL_TEXT = re.compile(r"inject|intraven|\bIV\b|intramusc|\bIM\b|epidural|intra-?articular",
                            re.IGNORECASE)
ORAL_ROUTE = ("http://snomed.info/sct", "26643006")
_CT_TEXT = re.compile(r"\bCT\b|computed tomograph", re.IGNORECASE)
_GUIDED_TEXT = re.compile(r"guid|myelogra|aspirat|biops|drain", re.IGNORECASE)
_FUSION_TEXT = re.compile(r"fusion|arthrodesis|\bTLIF\b|\bPLIF\b|\bALIF\b|\bXLIF\b",
                          re.IGNORECASE)
_ASPIRATION_TEXT = re.compile(r"aspirat", re.IGNORECASE)


def _orders(ctx: EvaluationContext, rtype: str) -> list[Entry]:
    return [o for o in ctx.orders if o.type == rtype]


def _order_fact(items: list[tuple[Entry, dict]]) -> Fact:
    evidence = [evidence_of(o, f"{o.label or o.type} (draft order)", when="drafted")
                for o, _ in items]
    return Fact("", bool(items), evidence, {"orders": [
        {"entry": o, "ref": o.ref, "label": o.label or o.type, **extra} for o, extra in items]})


def _oral_steroid(ctx: EvaluationContext, order: Entry) -> bool:
    codings, text = medication_codings(ctx, order)
    if not (ctx.valuesets["systemic-corticosteroids"].first_match(codings)
            or (text and _STEROID_TEXT.search(text))):
        return False
    routes = []
    for dosage in order.resource.get("dosageInstruction") or ():
        if isinstance(dosage, dict) and isinstance(dosage.get("route"), dict):
            routes.append(dosage["route"])
    if routes:
        return any(ORAL_ROUTE in [(c.get("system"), c.get("code")) for c in
                                  r.get("coding") or () if isinstance(c, dict)]
                   or "oral" in concept_text(r).lower() for r in routes)
    return not (text and _NOT_ORAL_TEXT.search(text))


@fact("draft_conservative_care", """A draft order, among those under evaluation, for
      conservative-only care: physical therapy referral or evaluation, epidural steroid
      injection, or an oral corticosteroid course (coded, or recognised by name).""")
def draft_conservative_care(ctx: EvaluationContext) -> Fact:
    items = []
    for order in _orders(ctx, "ServiceRequest"):
        if ctx.valuesets["physical-therapy"].first_match(order.codings):
            items.append((order, {"kind": "physical therapy"}))
        elif ctx.valuesets["epidural-steroid-injection"].first_match(order.codings):
            items.append((order, {"kind": "epidural steroid injection"}))
        elif _CONSERVATIVE_TEXT.search(order.text):
            items.append((order, {"kind": "conservative care"}))
    for order in _orders(ctx, "MedicationRequest"):
        if _oral_steroid(ctx, order):
            items.append((order, {"kind": "oral corticosteroid course"}))
    return _order_fact(items)


@fact("draft_spine_ct", """A draft order, among those under evaluation, for CT of the
      spine (coded, or named in the order text), not CT-guided procedures or myelography.
      Remembers the region (lumbar when not stated).""")
def draft_spine_ct(ctx: EvaluationContext) -> Fact:
    items = []
    for order in _orders(ctx, "ServiceRequest"):
        info = ctx.valuesets["spine-ct"].first_match(order.codings)
        if info is not None:
            items.append((order, {"region": info.region or "lumbar"}))
        elif (_CT_TEXT.search(order.text) and not _GUIDED_TEXT.search(order.text)
              and region_from_text(order.text)):
            items.append((order, {"region": region_from_text(order.text)}))
    return _order_fact(items)


@fact("draft_lumbar_fusion", """A draft order, among those under evaluation, for a lumbar
      fusion (coded, or named in the order text: fusion, arthrodesis, TLIF, PLIF...).""")
def draft_lumbar_fusion(ctx: EvaluationContext) -> Fact:
    items = [(o, {}) for o in _orders(ctx, "ServiceRequest")
             if ctx.valuesets["lumbar-fusion"].first_match(o.codings)
             or (_FUSION_TEXT.search(o.text) and region_from_text(o.text) in ("lumbar", None))]
    return _order_fact(items)


@fact("draft_image_guided_aspiration", """A draft order, among those under evaluation, for
      image-guided aspiration or drainage of a fluid collection (coded, or named).""")
def draft_image_guided_aspiration(ctx: EvaluationContext) -> Fact:
    items = [(o, {}) for o in _orders(ctx, "ServiceRequest")
             if ctx.valuesets["image-guided-aspiration"].first_match(o.codings)
             or _ASPIRATION_TEXT.search(o.text)]
    return _order_fact(items)


def _pending(ctx: EvaluationContext, vs_id: str) -> Fact:
    evidence = pending_evidence(ctx, vs_id)
    return Fact("", bool(evidence), evidence)


@fact("spine_consult_pending", """A spine surgery (neurosurgery or orthopaedic) referral
      already ordered and not completed, or among this session's draft orders.""")
def spine_consult_pending(ctx: EvaluationContext) -> Fact:
    return _pending(ctx, "spine-surgery-referral")


@fact("physical_therapy_active", """A physical therapy referral already ordered and not
      completed, or among this session's draft orders.""")
def physical_therapy_active(ctx: EvaluationContext) -> Fact:
    return _pending(ctx, "physical-therapy")
