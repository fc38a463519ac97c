"""The sandbox: a page that fires the services the way an EHR would, and shows the cards.

``/sandbox`` is plain server-rendered HTML with a little JavaScript; its data
comes from a small JSON API under ``/sandbox/api``. A fire builds the hook
request exactly as ``cds-service fire`` does (``scenario.build_request``:
every prefetch key filled from the patient Bundle), invokes the service
in-process at the chosen evaluation time and answers with the request, the
service's status and response, the validator's verdict, and the cards
rendered as HTML. Feedback from the page goes to the real
``/cds-services/{id}/feedback`` endpoint, so it is stored like any EHR's.

Registered only when the ``SANDBOX`` setting is true (the default).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Response, current_app, render_template, request

from cds_service.errors import ClientError, Violation, bad_request
from cds_service.protocol.validation import validate_response
from cds_service.scenario import (
    HOOKS,
    Scenario,
    ScenarioError,
    build_request,
    default_fixtures_dir,
    load_scenario,
    scenario_files,
    the_patient,
)
from cds_service.web.markdown import render_markdown
from cds_service.web.routes import json_response
from cds_service.web.sandbox_request import parse_fire

sandbox = Blueprint("sandbox", __name__, url_prefix="/sandbox", template_folder="templates",
                    static_folder="static", static_url_path="/static")

#: Defence in depth for a page that shows text from patient records: no inline script,
#: nothing loaded from elsewhere.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
_GROUP_OF_SOURCE_CASES = "Source cases"


class ScenarioCatalog:
    """The bundled scenarios, keyed by file name without ``.json``; loaded on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def scenarios(self) -> dict[str, Scenario]:
        found: dict[str, Scenario] = {}
        for path in scenario_files(self.folder):
            try:
                scenario = load_scenario(path)
            except ScenarioError as exc:
                current_app.logger.warning("sandbox: scenario skipped: %s", exc)
                continue
            found[path.relative_to(self.folder).with_suffix("").as_posix()] = scenario
        return found

    def groups(self) -> list[tuple[str, list[tuple[str, Scenario]]]]:
        """Scenarios grouped for the picker: source cases first, then one group per rule."""
        grouped: dict[str, list[tuple[str, Scenario]]] = {}
        for key, scenario in self.scenarios.items():
            group = key.split("--", 1)[0] if "--" in key else _GROUP_OF_SOURCE_CASES
            grouped.setdefault(group, []).append((key, scenario))
        order = sorted(grouped, key=lambda g: (g != _GROUP_OF_SOURCE_CASES, g))
        return [(group, grouped[group]) for group in order]


@sandbox.record_once
def _attach_catalog(state: Any) -> None:
    state.app.extensions["sandbox"] = ScenarioCatalog(default_fixtures_dir())


def _catalog() -> ScenarioCatalog:
    return current_app.extensions["sandbox"]


@sandbox.after_request
def _content_security_policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


# -- the page -------------------------------------------------------------------------------


@sandbox.get("")
def page() -> str:
    services = current_app.extensions["cds"].knowledge.services
    hooks = [h for h in HOOKS if any(s.hook == h for s in services.values())]
    return render_template("sandbox.html", groups=_catalog().groups(), hooks=hooks,
                           default_scenario="source-case-1")


# -- the API --------------------------------------------------------------------------------


def _summary(key: str, scenario: Scenario) -> dict:
    return {"id": key, "title": scenario.title, "description": scenario.description,
            "hook": scenario.hook, "evaluationTime": scenario.evaluation_time,
            "expectedRules": scenario.expected_rules}


@sandbox.get("/api/scenarios")
def list_scenarios() -> Response:
    return json_response({"scenarios": [_summary(k, s)
                                        for k, s in _catalog().scenarios.items()]})


@sandbox.get("/api/scenarios/<path:scenario_id>")
def get_scenario(scenario_id: str) -> Response:
    scenario = _catalog().scenarios.get(scenario_id)
    if scenario is None:
        raise ClientError(404, f"Unknown scenario {scenario_id!r}",
                          [Violation("", "GET /sandbox/api/scenarios lists the scenarios")])
    return json_response({**_summary(scenario_id, scenario),
                          "record": {"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"resource": r} for r in scenario.resources]},
                          "draftOrders": scenario.draft_orders,
                          "selections": scenario.selections})


def _read_body() -> Any:
    try:
        return orjson.loads(request.get_data(cache=False) or b"null")
    except orjson.JSONDecodeError as exc:
        raise bad_request("The request body is not valid JSON",
                          [Violation("", str(exc))]) from None


def _patient_banner(resources: list[dict], when: datetime) -> dict:
    patient = the_patient(resources)
    names = patient.get("name") if isinstance(patient.get("name"), list) else []
    first = names[0] if names and isinstance(names[0], dict) else {}
    given = first.get("given") if isinstance(first.get("given"), list) else []
    parts = [*given, first.get("family")]
    text = first.get("text")
    name = text if isinstance(text, str) and text else " ".join(
        p for p in parts if isinstance(p, str) and p)
    age = None
    try:
        born = date.fromisoformat(str(patient.get("birthDate")))
        today = when.date()
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    except ValueError:
        pass
    return {"id": patient["id"], "name": name or "(no name)", "gender": patient.get("gender"),
            "birthDate": patient.get("birthDate"), "age": age}


def safe_url(url: Any) -> str | None:
    """The URL when it is absolute http(s), else None: card links never run script."""
    if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return None


def split_detail(detail: str) -> tuple[str, str]:
    """The first paragraph of a card's detail, always shown, and the rest, shown on demand."""
    lead, _, rest = detail.strip().partition("\n\n")
    return lead, rest.strip()


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


@sandbox.post("/api/fire")
def fire() -> Response:
    checked = parse_fire(_read_body(), _catalog().scenarios,
                         current_app.extensions["cds"].knowledge.services)
    hooks = current_app.extensions["cds"].hooks
    try:
        hook_request = build_request(checked.service, checked.resources,
                                     draft_orders=checked.draft_orders,
                                     selections=checked.selections)
    except ScenarioError as exc:
        pointer = "/selections" if str(exc).startswith("selections") else "/draftOrders"
        raise bad_request(str(exc), [Violation(pointer, str(exc))]) from None
    when = checked.evaluation_time or hooks.now()
    try:
        status, response = 200, hooks.invoke(checked.service.id, hook_request,
                                             now=when).response()
    except ClientError as exc:
        status, response = exc.status, exc.body()
    violations = validate_response(response) if status == 200 else []
    cards_html = render_template(
        "sandbox_cards.html", status=status, response=response, violations=violations,
        cards=response.get("cards") or [], service_id=checked.service.id,
        patient=_patient_banner(checked.resources, when), when=when,
        markdown=render_markdown, split_detail=split_detail, safe_url=safe_url,
        pretty_json=pretty_json)
    return json_response({
        "serviceId": checked.service.id,
        "hook": checked.service.hook,
        "evaluationTime": when.isoformat().replace("+00:00", "Z"),
        "request": hook_request,
        "status": status,
        "response": response,
        "violations": [v.as_dict() for v in violations],
        "html": cards_html,
    })

