"""Scenarios: a patient record, a hook, draft orders and the cards expected.

A scenario file is JSON::

    {
      "id": "case-1-foot-drop-after-discectomy",
      "title": "...", "description": "...",
      "hook": "patient-view" | "order-select" | "order-sign",
      "evaluationTime": "2026-06-15T12:00:00Z",
      "expectedRules": ["urgent-decompression", ...],    (exactly these fire)
      "silentRules": ["asymptomatic-reherniation"],     (what the scenario proves silent)
      "record": { a FHIR Bundle (collection, searchset, transaction...) with one Patient;
                  urn:uuid references between its entries are resolved },
      "draftOrders": [ FHIR request resources ],          (order hooks)
      "selections": ["ServiceRequest/ct-1"]               (order-select; default: all drafts)
    }

The same request building serves the tests, ``cds-service check`` and
``cds-service fire``: a client-side view of the service, built only from what
discovery declares.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds_service.config import parse_instant
from cds_service.engine.knowledge import ServiceDefinition

HOOKS = ("patient-view", "order-select", "order-sign")
URN_UUID = "urn:uuid:"
_TEMPLATE_TYPE = re.compile(r"^([A-Z][A-Za-z]+)")


class ScenarioError(ValueError):
    """A scenario or patient bundle that cannot be used, with what to fix."""


def default_fixtures_dir() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "fixtures", package / "bundled_fixtures"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise ScenarioError(f"no bundled fixtures found beside {package}")


def record_resources(bundle: Any, where: str = "record") -> list[dict]:
    """The resources of a patient Bundle (any Bundle type), or a clear error."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ScenarioError(f"{where}: expected a FHIR Bundle (resourceType 'Bundle')")
    resources = []
    for i, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise ScenarioError(f"{where}: entry {i} has no resource with a resourceType")
        resources.append(resource)
    return resources


def local_references(bundle: dict) -> dict[str, str]:
    """``fullUrl`` -> ``Type/id`` for every entry of ``bundle`` (ids assigned from urn:uuid)."""
    mapping: dict[str, str] = {}
    for entry in bundle.get("entry") or ():
        if not isinstance(entry, dict):
            continue
        full_url, resource = entry.get("fullUrl"), entry.get("resource")
        if not isinstance(full_url, str) or not isinstance(resource, dict) \
                or not isinstance(resource.get("resourceType"), str):
            continue
        if not resource.get("id") and full_url.startswith(URN_UUID):
            resource["id"] = full_url[len(URN_UUID):]
        if isinstance(resource.get("id"), str) and resource["id"]:
            mapping[full_url] = f"{resource['resourceType']}/{resource['id']}"
    return mapping


def rewrite_references(document: Any, mapping: dict[str, str]) -> None:
    """Replace, in place, every ``reference`` that names a key of ``mapping``."""
    if not mapping:
        return
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            reference = node.get("reference")
            if isinstance(reference, str) and reference in mapping:
                node["reference"] = mapping[reference]
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))


def the_patient(resources: list[dict], where: str = "record") -> dict:
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise ScenarioError(f"{where}: the bundle must hold exactly one Patient "
                            f"(found {len(patients)})")
    if not isinstance(patients[0].get("id"), str) or not patients[0]["id"]:
        raise ScenarioError(f"{where}: the Patient has no id")
    return patients[0]


def _searchset(resources: list[dict]) -> dict:
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:
        bundle["entry"] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    return bundle


def build_request(service: ServiceDefinition, resources: list[dict], *,
                  draft_orders: list[dict] | None = None, selections: list[str] | None = None,
                  user_id: str = "Practitioner/example",
                  hook_instance: str | None = None) -> dict:
    """A CDS Hooks request for ``service`` with every prefetch key filled from ``resources``."""
    patient = the_patient(resources)
    prefetch: dict[str, Any] = {}
    for spec in service.prefetch:
        match = _TEMPLATE_TYPE.match(spec.template)
        rtype = match.group(1) if match else None
        if rtype == "Patient" and "?" not in spec.template:
            prefetch[spec.key] = patient
        elif rtype:
            prefetch[spec.key] = _searchset([r for r in resources if r["resourceType"] == rtype])
    context: dict[str, Any] = {"userId": user_id, "patientId": patient["id"]}
    if service.hook in ("order-select", "order-sign"):
        drafts = list(draft_orders or ())
        if not drafts:
            raise ScenarioError(f"the {service.hook} hook needs at least one draft order")
        for order in drafts:
            if not isinstance(order, dict) or not order.get("resourceType") or not order.get("id"):
                raise ScenarioError("every draft order needs a resourceType and an id")
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": o} for o in drafts]}
        if service.hook == "order-select":
            refs = [f"{o['resourceType']}/{o['id']}" for o in drafts]
            chosen = list(selections) if selections else refs
            unknown = [s for s in chosen if s not in refs]
            if unknown:
                raise ScenarioError(f"selections not among the draft orders: {', '.join(unknown)}")
            context["selections"] = chosen
    return {"hook": service.hook, "hookInstance": hook_instance or str(uuid.uuid4()),
            "context": context, "prefetch": prefetch}


@dataclass
class Scenario:
    path: Path
    id: str
    title: str
    hook: str
    expected_rules: list[str]
    resources: list[dict]
    evaluation_time: str | None = None
    description: str = ""
    draft_orders: list[dict] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)
    silent_rules: list[str] = field(default_factory=list)

    def request(self, service: ServiceDefinition) -> dict:
        return build_request(service, self.resources, draft_orders=self.draft_orders,
                             selections=self.selections or None)


def _require(data: dict, name: str, kind: type, path: Path) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ScenarioError(f"{path}: field {name!r} must be a {kind.__name__}")
    return value


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a JSON object")
    hook = _require(data, "hook", str, path)
    if hook not in HOOKS:
        raise ScenarioError(f"{path}: unknown hook {hook!r}; use one of {', '.join(HOOKS)}")
    expected = _require(data, "expectedRules", list, path)
    if not all(isinstance(r, str) for r in expected):
        raise ScenarioError(f"{path}: expectedRules must be a list of rule ids")
    silent = data.get("silentRules") or []
    if not isinstance(silent, list) or not all(isinstance(r, str) for r in silent):
        raise ScenarioError(f"{path}: silentRules must be a list of rule ids")
    if set(silent) & set(expected):
        raise ScenarioError(f"{path}: a rule cannot be both expected and silent: "
                            f"{', '.join(sorted(set(silent) & set(expected)))}")
    when = data.get("evaluationTime")
    if when is not None:
        try:
            parse_instant(when, "evaluationTime")
        except ValueError as exc:
            raise ScenarioError(f"{path}: {exc}") from None
    resources = record_resources(data.get("record"), f"{path}: record")
    rewrite_references(resources, local_references(data["record"]))
    the_patient(resources, f"{path}: record")
    drafts = data.get("draftOrders") or []
    if not isinstance(drafts, list):
        raise ScenarioError(f"{path}: draftOrders must be a list of FHIR resources")
    return Scenario(path, _require(data, "id", str, path), _require(data, "title", str, path),
                    hook, sorted(expected), resources, when, data.get("description", ""),
                    drafts, list(data.get("selections") or []), sorted(silent))


def scenario_files(directory: Path | str) -> list[Path]:
    folder = Path(directory)
    if not folder.is_dir():
        raise ScenarioError(f"{folder}: not a folder")
    return sorted(p for p in folder.rglob("*.json") if p.is_file())
