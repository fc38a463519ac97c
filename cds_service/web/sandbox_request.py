"""What a sandbox fire asks for, checked: a patient record, a service, orders and a time.

Scenario id or pasted Bundle, hook, draft orders, selections and evaluation time
arrive from the page as JSON (the record and the orders possibly as the text of
a textarea); every mistake is a 400 that names the field and what to send.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.config import parse_instant
from cds_service.engine.knowledge import ServiceDefinition
from cds_service.errors import Violation, bad_request
from cds_service.scenario import Scenario, ScenarioError, record_resources, the_patient


@dataclass
class FireInput:
    """A fire request, checked: what to send to which service, and when to evaluate it."""

    service: ServiceDefinition
    resources: list[dict]
    draft_orders: list[dict]
    selections: list[str] | None
    evaluation_time: datetime | None


def _json_text(value: Any, pointer: str, what: str) -> Any:
    """A JSON value given as itself or as JSON text (the page sends textareas as text)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise bad_request(f"The {what} is not valid JSON",
                          [Violation(pointer, f"line {exc.lineno}, column {exc.colno}: "
                                              f"{exc.msg}")]) from None


def _draft_orders(value: Any) -> list[dict]:
    orders = _json_text(value, "/draftOrders", "draft orders")
    if orders in (None, ""):
        return []
    if isinstance(orders, dict) and orders.get("resourceType") == "Bundle":
        orders = [e.get("resource") for e in orders.get("entry") or () if isinstance(e, dict)]
    elif isinstance(orders, dict):
        orders = [orders]
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
        raise bad_request("draftOrders must be a list of FHIR resources (or a Bundle of them)",
                          [Violation("/draftOrders", "send [{\"resourceType\": ...}, ...]")])
    return orders


def _service_for(hook: Any, services: Mapping[str, ServiceDefinition]) -> ServiceDefinition:
    matching = [s for s in services.values() if s.hook == hook]
    if not isinstance(hook, str) or not matching:
        known = sorted({s.hook for s in services.values()})
        raise bad_request(f"Unknown hook {hook!r}",
                          [Violation("/hook", f"use one of {', '.join(known)}")])
    preferred = services.get(f"spine-postop-{hook}")
    return preferred if preferred is not None else matching[0]


def _evaluation_time(value: Any, scenario: Scenario | None) -> datetime | None:
    text = value if value not in (None, "") else (scenario.evaluation_time if scenario else None)
    if text is None:
        return None
    if not isinstance(text, str):
        raise bad_request("evaluationTime must be an ISO 8601 date-time string",
                          [Violation("/evaluationTime", "e.g. 2026-06-15T12:00:00Z")])
    try:
        return parse_instant(text.strip(), "evaluationTime")
    except ValueError as exc:
        raise bad_request(str(exc), [Violation("/evaluationTime",
                                               "e.g. 2026-06-15T12:00:00Z")]) from None


def parse_fire(body: Any, scenarios: Mapping[str, Scenario],
               services: Mapping[str, ServiceDefinition]) -> FireInput:
    """Check a fire request; raises a 400 ``ClientError`` naming the field that is wrong."""
    if not isinstance(body, dict):
        raise bad_request("Send a JSON object: {scenario | bundle, hook, draftOrders, "
                          "selections, evaluationTime}", [Violation("", "not an object")])
    scenario_id, bundle = body.get("scenario"), body.get("bundle")
    if bool(scenario_id) == (bundle not in (None, "")):
        raise bad_request("Send either a bundled scenario id or a FHIR patient Bundle",
                          [Violation("/scenario", "give exactly one of scenario and bundle")])
    scenario = None
    if scenario_id:
        scenario = scenarios.get(scenario_id) if isinstance(scenario_id, str) else None
        if scenario is None:
            raise bad_request(f"Unknown scenario {scenario_id!r}",
                              [Violation("/scenario", "GET /sandbox/api/scenarios lists them")])
        resources = scenario.resources
    else:
        try:
            resources = record_resources(_json_text(bundle, "/bundle", "patient Bundle"),
                                         "bundle")
            the_patient(resources, "bundle")
        except ScenarioError as exc:
            raise bad_request(str(exc), [Violation("/bundle", str(exc))]) from None
    service = _service_for(body.get("hook") or (scenario.hook if scenario else "patient-view"),
                           services)
    drafts = (_draft_orders(body["draftOrders"]) if "draftOrders" in body
              else list(scenario.draft_orders) if scenario else [])
    selections = body.get("selections")
    if selections is None and scenario is not None:
        selections = scenario.selections
    if selections is not None and (not isinstance(selections, list)
                                   or not all(isinstance(s, str) for s in selections)):
        raise bad_request("selections must be a list of references such as "
                          "'ServiceRequest/ct-1'", [Violation("/selections", "not a list")])
    return FireInput(service, resources, drafts, selections or None,
                     _evaluation_time(body.get("evaluationTime"), scenario))
