"""One hook call, start to finish, with no HTTP in sight:

validate (CDS Hooks schema) -> gather record (prefetch + FHIR fetch) -> index ->
facts -> rules -> cards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cds_service.engine.evaluate import FiredRule, fire_rules
from cds_service.engine.facts import EvaluationContext
from cds_service.engine.knowledge import Knowledge, ServiceDefinition
from cds_service.engine.record import Entry, PatientRecord, make_entry, reference_key
from cds_service.engine.render import OrderContext, render_card
from cds_service.errors import ClientError, Violation, bad_request
from cds_service.fhir.prefetch import gather
from cds_service.protocol.cards import Card
from cds_service.protocol.validation import validate_request
from cds_service.time_budget import Deadline

_PATIENT_FIELDS = ("subject", "patient")


@dataclass
class Outcome:
    """What one invocation produced, for the response and for the request log."""

    cards: list[Card]
    rule_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resources: int = 0
    duration_ms: float = 0.0
    #: card uuid -> the FHIR references of the facts behind that card (its reason)
    references: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: rule ids of the cards held back by suppression (see ``suppression``)
    suppressed: list[str] = field(default_factory=list)

    def response(self) -> dict:
        return {"cards": [card.to_json() for card in self.cards]}


def _other_patient(resource: dict, patient_ref: str) -> bool:
    """True when the resource names a different patient than the one in context."""
    for name in _PATIENT_FIELDS:
        value = resource.get(name)
        if value is None:
            continue
        if isinstance(value, dict) and value.get("reference") == patient_ref:
            return False  # the common case, without parsing the reference
        key = reference_key(value)
        if key and key.startswith("Patient/"):
            return key != patient_ref
    return False


def _references(fired: FiredRule) -> tuple[str, ...]:
    """The FHIR references behind a fired rule (an evidence item may cite several)."""
    return tuple(sorted({ref for item in fired.evidence for ref in item.refs}))


def _draft_entries(context: dict) -> list[Entry]:
    bundle = context.get("draftOrders")
    entries = []
    if isinstance(bundle, dict):
        for ordinal, item in enumerate(bundle.get("entry") or ()):
            resource = item.get("resource") if isinstance(item, dict) else None
            if isinstance(resource, dict):
                entry = make_entry(resource, ordinal)
                if entry is not None:
                    entries.append(entry)
    return entries


def _orders_under_evaluation(hook: str, context: dict, drafts: list[Entry]) -> list[Entry]:
    if hook == "order-sign":
        return drafts
    if hook == "order-select":
        selected = {s for s in context.get("selections") or () if isinstance(s, str)}
        return [d for d in drafts if d.ref in selected]
    return []


class HookService:
    """Invokes the services defined in the knowledge against a request body."""

    def __init__(self, knowledge: Knowledge, settings: dict,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.knowledge = knowledge
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        """Clinical 'now': EVALUATION_TIME when configured, else the clock."""
        return self.settings.get("EVALUATION_TIME") or self._clock()

    def service(self, service_id: str) -> ServiceDefinition:
        found = self.knowledge.services.get(service_id)
        if found is None:
            known = ", ".join(sorted(self.knowledge.services))
            raise ClientError(404, f"Unknown CDS service {service_id!r}",
                              [Violation("", f"known services: {known}")])
        return found

    def invoke(self, service_id: str, body: object, now: datetime | None = None,
               deadline: Deadline | None = None) -> Outcome:
        """Raises ``ClientError``: 400, 404, 412, and 503 when ``deadline`` (default: the
        REQUEST_TIME_BUDGET_SECONDS from now) passes before the cards are ready."""
        started = time.perf_counter()
        if deadline is None:
            deadline = Deadline(self.settings.get("REQUEST_TIME_BUDGET_SECONDS"), started)
        service = self.service(service_id)
        try:
            violations = validate_request(body, None)
        except RecursionError:  # a prefetch value nested close to the parser's limit
            raise bad_request("The request body is nested too deeply",
                              [Violation("/prefetch", "send FHIR resources, not deeply nested "
                                                      "arrays")]) from None
        if violations:
            raise bad_request("The hook request is not valid CDS Hooks 2.0", violations)
        assert isinstance(body, dict)
        if body["hook"] != service.hook:
            raise bad_request(
                f"Service {service.id!r} answers the {service.hook!r} hook, not {body['hook']!r}",
                [Violation("/hook", f"send hook {service.hook!r} to this service, or call the "
                                    f"service registered for {body['hook']!r}")])
        context = body["context"]
        try:
            gathered = gather(list(service.prefetch), body, self.settings, deadline=deadline)
        except ClientError:
            deadline.check("fetching FHIR data")  # data missing for want of time: 503, not 412
            raise
        deadline.check("fetching FHIR data")
        patient_ref = f"Patient/{context['patientId']}"
        resources = [r for key in gathered.resources for r in gathered.resources[key]
                     if not _other_patient(r, patient_ref)]
        record = PatientRecord.from_resources(resources,
                                              known_codes=self.knowledge.known_codes)
        deadline.check("indexing the record")
        drafts = _draft_entries(context)
        ctx = EvaluationContext(
            hook=service.hook, now=now or self.now(), record=record,
            valuesets=self.knowledge.valuesets, thresholds=self.knowledge.thresholds,
            orders=_orders_under_evaluation(service.hook, context, drafts), drafts=drafts)
        who = OrderContext(str(context["patientId"]), context.get("encounterId"),
                           context.get("userId"))
        fired_rules = fire_rules(self.knowledge, ctx)
        cards = [render_card(self.knowledge, ctx, fired, who) for fired in fired_rules]
        references = {card.uuid: _references(fired)
                      for card, fired in zip(cards, fired_rules, strict=True)}
        deadline.check("evaluating the rules")
        order = {"critical": 0, "warning": 1, "info": 2}
        cards.sort(key=lambda c: order[c.indicator])
        return Outcome(cards, [c.rule_id for c in cards], gathered.notes, len(record),
                       (time.perf_counter() - started) * 1000, references)
