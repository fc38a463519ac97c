"""Fired rules become cards: texts from the rule's templates, facts with their dates
and references, evidence with its strength, and suggestions as FHIR R4 orders."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from jinja2 import TemplateError

from cds_service.engine.dates import format_date
from cds_service.engine.evaluate import FiredRule, holds
from cds_service.engine.facts import EvaluationContext, Fact
from cds_service.engine.knowledge import Knowledge
from cds_service.protocol.cards import (
    RULE_TOPIC_SYSTEM,
    SUMMARY_LIMIT,
    Action,
    Card,
    Coding,
    Source,
    Suggestion,
)

log = logging.getLogger(__name__)
_USER_TYPES = ("Practitioner/", "PractitionerRole/")


@dataclass(frozen=True)
class OrderContext:
    """Who the suggested orders are for and by whom (from the hook context)."""

    patient_id: str
    encounter_id: str | None = None
    user_id: str | None = None


class FactsView:
    """``f.<fact name>`` inside card templates: facts computed on demand."""

    def __init__(self, ctx: EvaluationContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Fact:
        return self._ctx.fact(name)


def _variables(ctx: EvaluationContext, fired: FiredRule) -> dict:
    return {"f": FactsView(ctx), "t": ctx.thresholds, "order": fired.order,
            "now": ctx.now, "date": format_date}


def _fit_summary(text: str) -> str:
    if len(text) < SUMMARY_LIMIT:
        return text
    log.warning("summary over %d characters shortened", SUMMARY_LIMIT - 1)
    return text[: SUMMARY_LIMIT - 2].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def _detail(rule_text: str, fired: FiredRule) -> str:
    lines = [rule_text.strip(), "", "**What the record shows**", ""]
    lines += [f"- {item.markdown()}" for item in fired.evidence]
    evidence = fired.rule.evidence
    lines += ["", f"**Evidence** ({evidence['strength']})", ""]
    for ref in evidence["references"]:
        strength = f" — {ref['strength']}" if ref.get("strength") else ""
        lines.append(f"- [{ref['label']}]({ref['url']}){strength}")
    return "\n".join(lines)


def _service_request(template: dict, who: OrderContext, rule_id: str, reasons: list[str],
                     note: str) -> dict:
    resource: dict = {
        "resourceType": "ServiceRequest",
        "id": str(uuid.uuid4()),
        "status": "draft",
        "intent": "order",
        "priority": template["priority"],
        "code": {"coding": [dict(c) for c in template["coding"]], "text": template["text"]},
        "subject": {"reference": f"Patient/{who.patient_id}"},
        "note": [{"text": note}],
    }
    if template.get("category"):
        resource["category"] = [{"coding": [dict(template["category"])]}]
    if who.encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{who.encounter_id}"}
    if who.user_id and who.user_id.startswith(_USER_TYPES):
        resource["requester"] = {"reference": who.user_id}
    if reasons:
        resource["reasonReference"] = [{"reference": r} for r in reasons]
    return resource


def _reason_refs(fired: FiredRule) -> list[str]:
    refs = []
    for item in fired.evidence:
        ref = item.ref
        if ref.split("/", 1)[0] in ("Condition", "Observation", "DiagnosticReport") \
                and "#" not in ref and ref not in refs:
            refs.append(ref)
    return refs[:5]


def _suggestions(knowledge: Knowledge, ctx: EvaluationContext, fired: FiredRule,
                 who: OrderContext) -> list[Suggestion]:
    variables = _variables(ctx, fired)
    out = []
    for template in fired.rule.suggestions:
        if any(holds(ctx, c) for c in template.unless):
            continue
        if not all(holds(ctx, c) for c in template.when):
            continue
        order = knowledge.orders.get(template.order.render(variables).strip())
        if order is None:
            continue  # e.g. no MRI order defined for this region
        label = " ".join(template.label.render(variables).split())
        actions = []
        if template.replaces_order and fired.order is not None:
            actions.append(Action("delete", f"Remove the draft order: {fired.order['label']}",
                                  resource_id=fired.order["ref"]))
        for copy in range(template.copies):
            suffix = f" (set {copy + 1} of {template.copies})" if template.copies > 1 else ""
            resource = _service_request(order, who, fired.rule.id, _reason_refs(fired),
                                        f"Suggested by the spine post-op CDS rule "
                                        f"{fired.rule.id}{suffix}.")
            actions.append(Action("create", f"Order {order['text'].lower()}{suffix}",
                                  resource=resource))
        out.append(Suggestion(label, tuple(actions), template.recommended))
    return out


def render_card(knowledge: Knowledge, ctx: EvaluationContext, fired: FiredRule,
                who: OrderContext) -> Card:
    rule = fired.rule
    variables = _variables(ctx, fired)
    try:
        summary = " ".join(rule.summary.render(variables).split())
        detail = rule.detail.render(variables)
    except TemplateError as exc:  # a defect in a rule file, caught by the fixture tests
        raise RuntimeError(f"rule {rule.id}: card template failed: {exc}") from exc
    suggestions = tuple(_suggestions(knowledge, ctx, fired, who))
    source = rule.evidence["source"]
    return Card(
        summary=_fit_summary(summary),
        indicator=rule.indicator,
        source=Source(source["label"], source["url"],
                      Coding(RULE_TOPIC_SYSTEM, rule.id, rule.title)),
        detail=_detail(detail, fired),
        suggestions=suggestions,
        selection_behavior=rule.selection_behavior if suggestions else None,
        override_reasons=tuple(Coding(r["system"], r["code"], r["display"])
                               for r in rule.override_reasons),
    )
