"""The project's CDS Hooks 2.0 schemas and validator.

Three groups of tests:

1. every official request example of our three hooks validates cleanly
   (including the hook-library order examples whose draft orders are not
   valid FHIR: a request must not fail over an order);
2. every official example (spec STU2, 3.0 ballot, FHIR tools IG, Da Vinci CRD,
   hook library) either validates or is listed in ``KNOWN_NONCONFORMANT`` and
   really fails with the violation named there;
3. hand-broken copies of valid documents are rejected at the right pointer.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from jsonschema import Draft202012Validator

from cds_service.errors import Violation
from cds_service.protocol import validation as V
from cds_service.protocol.validation import (
    detect_kind,
    validate_discovery,
    validate_document,
    validate_feedback,
    validate_fhir_resource,
    validate_fragment,
    validate_request,
    validate_response,
)

REFERENCE = Path(os.environ.get("CDS_REFERENCE_DIR", "/work/shared/reference"))
EXAMPLES = REFERENCE / "examples"
CONFORMANCE = REFERENCE / "conformance-data"
needs_reference = pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"reference examples not found in {REFERENCE}"
)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def request_for(hook: str, context: dict, **extra: Any) -> dict:
    """A minimal request envelope around a hook-library context example."""
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, **extra}


def pointers(violations: list[Violation]) -> set[str]:
    return {v.pointer for v in violations}


def find(violations: list[Violation], pointer: str) -> list[str]:
    return [v.message for v in violations if v.pointer == pointer]


# ---------------------------------------------------------------------------
# How each official example file is validated.
# ---------------------------------------------------------------------------


def _as_document(doc: Any) -> list[Violation]:
    return validate_document(doc)[1]


def _context_of(hook: str) -> Callable[[Any], list[Violation]]:
    return lambda doc: validate_request(request_for(hook, doc["context"]))


def _fragment(definition: str, key: str | None = None) -> Callable[[Any], list[Violation]]:
    return lambda doc: validate_fragment(doc[key] if key else doc, definition)


def _card_with(doc: Any) -> list[Violation]:
    card = {"summary": "Example", "indicator": "info", "source": {"label": "Example"}, **doc}
    return validate_fragment(card, "card")


def _service_with(hook: str) -> Callable[[Any], list[Violation]]:
    def check(doc: Any) -> list[Violation]:
        service = {"hook": hook, "id": "example", "description": "Example", **doc}
        return validate_discovery({"services": [service]})

    return check


def _request_with(**extra: Any) -> Callable[[Any], list[Violation]]:
    def check(doc: Any) -> list[Violation]:
        context = {"userId": "Practitioner/example", "patientId": "1288992"}
        return validate_request(request_for("patient-view", context, **extra, **doc))

    return check


def _sandbox_body(doc: Any) -> list[Violation]:
    return validate_request(doc["body"])


def _not_cds_hooks(doc: Any) -> list[Violation]:
    assert detect_kind(doc) is None
    return []


#: Every file of examples/ and conformance-data/, by file name (duplicates are identical).
HOW_TO_VALIDATE: dict[str, Callable[[Any], list[Violation]]] = {
    # hook library v1.0.1: context-only examples
    "patient-view-01-examples.json": _context_of("patient-view"),
    "patient-view-02-examples.json": _context_of("patient-view"),
    "order-select-01-example-r4.json": _context_of("order-select"),
    "order-sign-01-example-r4.json": _context_of("order-sign"),
    "sandbox-patient-view-request.json": _sandbox_body,
    # spec STU2 (2.0.1)
    "stu2-01-discovery-example.json": _as_document,
    "stu2-02-example.json": _as_document,
    "stu2-03-prefetch-template.json": _service_with("patient-view"),
    # stu2-04/05/06 illustrate which fields of some hook's context may be tokens,
    # stu2-30 the hook-definition format: contexts of a hook we do not know.
    "stu2-04-example-prefetch-token.json": _context_of("example-hook"),
    "stu2-05-example-prefetch-token.json": _context_of("example-hook"),
    "stu2-06-example-prefetch-token.json": _context_of("example-hook"),
    "stu2-07-example-prefetch-templates.json": _service_with("patient-view"),
    "stu2-08-example-prefetch-data.json": _request_with(),
    "stu2-09-passing-the-access-token-to-the-cds-service.json": _request_with(
        fhirServer="https://fhir.example.org"
    ),
    "stu2-10-http-response.json": _as_document,
    "stu2-11-source.json": _fragment("source", "source"),
    "stu2-12-action.json": _fragment("action"),
    "stu2-13-action.json": _fragment("action"),
    "stu2-14-action.json": _fragment("action"),
    "stu2-15-reasons-for-rejecting-a-card.json": _card_with,
    "stu2-16-system-action.json": _as_document,
    "stu2-17-example.json": _as_document,
    "stu2-18-example.json": _as_document,
    "stu2-19-example-suggestion-accepted.json": _as_document,
    "stu2-20-example-overridden-guidance-without-overridereason.json": _as_document,
    "stu2-21-example-overridden-guidance-with-overridereason.json": _as_document,
    "stu2-22-example.json": _not_cds_hooks,  # JWT header
    "stu2-23-example.json": _not_cds_hooks,  # JWT payload
    "stu2-24-example.json": _not_cds_hooks,  # JWK Set
    "stu2-25-example.json": _not_cds_hooks,  # private JWK
    "stu2-26-extensions.json": _as_document,
    "stu2-27-extensions.json": _as_document,
    "stu2-28-what-s-the-difference.json": _context_of("patient-view"),
    "stu2-29-what-s-the-difference.json": _service_with("patient-view"),
    "stu2-30-examples.json": _context_of("example-hook"),
    # spec 3.0 ballot (judged against STU2)
    "r3-01-discovery-example.json": _as_document,
    "r3-02-example.json": _as_document,
    "r3-13-http-response.json": _as_document,
    "r3-14-source.json": _fragment("source", "source"),
    "r3-15-action.json": _fragment("action"),
    "r3-16-action.json": _fragment("action"),
    "r3-17-action.json": _fragment("action"),
    "r3-18-reasons-for-rejecting-a-card.json": _card_with,
    "r3-19-system-action.json": _as_document,
    "r3-20-example.json": _as_document,
    "r3-21-example.json": _as_document,
    "r3-22-example-suggestion-accepted.json": _as_document,
    "r3-23-example-overridden-guidance-without-overridereason.json": _as_document,
    "r3-24-example-overridden-guidance-with-overridereason.json": _as_document,
    "r3-29-extensions.json": _as_document,
    "r3-30-extensions.json": _as_document,
    # FHIR tools IG
    "Binary-CDSHookServices.json": _as_document,
    "Binary-CDSHooksRequestPV.json": _as_document,
    "Binary-CDSHooksResponse.json": _as_document,
    # Da Vinci CRD
    "CRDServiceRequest.json": _as_document,
    "CRDServiceRequest3.json": _as_document,
    "CRDServiceResponse.json": _as_document,
    "CRDServiceResponse2.json": _as_document,
    "CRDServiceResponse3.json": _as_document,
    "CRDServices.json": _as_document,
}


class Nonconformance(NamedTuple):
    reason: str
    pointer: str
    message: str  # a fragment of the expected violation's message


_SNIPPED = "the resource is snipped ('...': '<snipped for brevity>'), so not valid FHIR"
_NO_DESCRIPTION = "the system action has no 'description' (REQUIRED for every Action)"
_NO_INDICATOR = "the autolaunchable example card has no 'indicator' (REQUIRED)"
_NO_PATIENT = "patient-view request without context.patientId (it only illustrates extension)"

KNOWN_NONCONFORMANT: dict[str, Nonconformance] = {
    "stu2-12-action.json": Nonconformance(_SNIPPED, "/resource/...", "is not an element"),
    "stu2-13-action.json": Nonconformance(_SNIPPED, "/resource/...", "is not an element"),
    "r3-15-action.json": Nonconformance(_SNIPPED, "/resource/...", "is not an element"),
    "r3-16-action.json": Nonconformance(_SNIPPED, "/resource/...", "is not an element"),
    "stu2-16-system-action.json": Nonconformance(
        _NO_DESCRIPTION, "/systemActions/0/description", "missing required field 'description'"
    ),
    "r3-19-system-action.json": Nonconformance(
        _NO_DESCRIPTION, "/systemActions/0/description", "missing required field 'description'"
    ),
    "CRDServiceResponse.json": Nonconformance(
        _NO_DESCRIPTION, "/systemActions/0/description", "missing required field 'description'"
    ),
    "CRDServiceResponse3.json": Nonconformance(
        _NO_DESCRIPTION, "/systemActions/0/description", "missing required field 'description'"
    ),
    "stu2-18-example.json": Nonconformance(
        _NO_INDICATOR, "/cards/0/indicator", "missing required field 'indicator'"
    ),
    "r3-21-example.json": Nonconformance(
        _NO_INDICATOR, "/cards/0/indicator", "missing required field 'indicator'"
    ),
    "stu2-26-extensions.json": Nonconformance(
        _NO_PATIENT, "/context/patientId", "missing required field 'patientId'"
    ),
    "r3-29-extensions.json": Nonconformance(
        _NO_PATIENT, "/context/patientId", "missing required field 'patientId'"
    ),
    "stu2-08-example-prefetch-data.json": Nonconformance(
        "prefetch value 'user' is the string \"123\", not a FHIR resource (or null)",
        "/prefetch/user",
        "must be a JSON object or null",
    ),
    "CRDServices.json": Nonconformance(
        "prefetch templates use CRD / 3.0-ballot FHIRPath tokens, not STU2 context tokens",
        "/services/0/prefetch/devices",
        "is not a valid prefetch token",
    ),
}


def _example_files() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    files = sorted(EXAMPLES.glob("*.json")) + sorted(CONFORMANCE.glob("*/*.json"))
    return files


EXAMPLE_FILES = _example_files()


def _example_id(path: Path) -> str:
    return str(path.relative_to(REFERENCE))


# --- (1) request examples of our three hooks validate cleanly --------------

REQUEST_EXAMPLES = [
    "patient-view-01-examples.json",
    "patient-view-02-examples.json",
    "order-select-01-example-r4.json",
    "order-sign-01-example-r4.json",
    "stu2-02-example.json",
    "sandbox-patient-view-request.json",
]


@needs_reference
@pytest.mark.parametrize("name", REQUEST_EXAMPLES)
def test_official_request_example_validates(name: str) -> None:
    assert HOW_TO_VALIDATE[name](load(EXAMPLES / name)) == []


@needs_reference
@pytest.mark.parametrize(
    "name", ["order-select-01-example-r4.json", "order-sign-01-example-r4.json"]
)
def test_hook_library_draft_orders_are_invalid_fhir_yet_tolerated(name: str) -> None:
    context = load(EXAMPLES / name)["context"]
    invalid = [
        entry["resource"]["resourceType"]
        for entry in context["draftOrders"]["entry"]
        if validate_fhir_resource(entry["resource"])
    ]
    assert "NutritionOrder" in invalid and "MedicationRequest" in invalid
    assert validate_request(request_for(name.split("-01")[0], context)) == []


# --- (2) every official example validates or is a known non-conformance ----


@needs_reference
def test_every_example_file_has_a_validation_plan() -> None:
    missing = sorted({p.name for p in EXAMPLE_FILES} - set(HOW_TO_VALIDATE))
    assert not missing, f"decide how to validate: {missing}"
    assert set(KNOWN_NONCONFORMANT) <= set(HOW_TO_VALIDATE)


@needs_reference
@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_example_id)
def test_official_example_validates_or_is_known_nonconformant(path: Path) -> None:
    violations = HOW_TO_VALIDATE[path.name](load(path))
    known = KNOWN_NONCONFORMANT.get(path.name)
    if known is None:
        assert violations == []
    else:
        messages = find(violations, known.pointer)
        assert any(known.message in m for m in messages), (known.reason, violations)


# --- (3) hand-broken copies of valid documents ------------------------------

SERVICE_REQUEST = {
    "resourceType": "ServiceRequest",
    "status": "draft",
    "intent": "proposal",
    "code": {
        "coding": [
            {
                "system": "http://loinc.org",
                "code": "36228-7",
                "display": "MR Lumbar spine WO and W contrast IV",
            }
        ]
    },
    "subject": {"reference": "Patient/1288992"},
}

VALID_RESPONSE: dict = {
    "cards": [
        {
            "uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "summary": "Order a contrast MRI rather than CT to rule out an epidural abscess",
            "detail": "CT cannot exclude an epidural abscess; **MRI with contrast** can.",
            "indicator": "warning",
            "source": {
                "label": "NASS coverage guideline",
                "url": "https://www.spine.org/guidelines",
                "icon": "https://example.org/icon-100px.png",
                "topic": {
                    "system": "urn:spine-cds:rule",
                    "code": "ct-insufficient-for-abscess",
                    "display": "CT insufficient for abscess",
                },
            },
            "suggestions": [
                {
                    "label": "Order MRI with contrast instead",
                    "uuid": "e56e1945-20b3-4393-8503-a1a20fd73152",
                    "isRecommended": True,
                    "actions": [
                        {
                            "type": "create",
                            "description": "Order MRI lumbar spine with and without contrast",
                            "resource": SERVICE_REQUEST,
                        },
                        {
                            "type": "delete",
                            "description": "Cancel the CT order",
                            "resourceId": "ServiceRequest/ct-1",
                        },
                    ],
                },
                {"label": "Keep the CT order"},
            ],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [
                {
                    "system": "http://example.org/override-reasons",
                    "code": "contraindicated",
                    "display": "MRI contraindicated",
                }
            ],
            "links": [
                {"label": "Guideline", "url": "https://example.org/guideline", "type": "absolute"},
                {
                    "label": "Imaging app",
                    "url": "https://smart.example.org/launch",
                    "type": "smart",
                    "appContext": '{"order":"ct-1"}',
                },
            ],
        }
    ],
    "systemActions": [
        {
            "type": "update",
            "description": "Record the appropriateness score on the order",
            "resource": {**SERVICE_REQUEST, "id": "ct-1"},
        }
    ],
}

VALID_PATIENT_VIEW_REQUEST: dict = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "https://fhir.example.org/r4",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": "some-opaque-fhir-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read",
        "subject": "cds-service4",
    },
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {
        "patientToGreet": {"resourceType": "Patient", "id": "1288992", "gender": "male"},
        "conditions": None,
    },
}

VALID_ORDER_SELECT_REQUEST: dict = {
    "hookInstance": "2f3a1c9e-6d4b-4d8e-9f1a-0b6c5d4e3f2a",
    "hook": "order-select",
    "context": {
        "userId": "PractitionerRole/123",
        "patientId": "1288992",
        "selections": ["ServiceRequest/ct-1"],
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {**SERVICE_REQUEST, "id": "ct-1"}},
                {"resource": {"resourceType": "MedicationRequest", "id": "m-1", "status": "draft"}},
            ],
        },
    },
}

VALID_ORDER_SIGN_REQUEST: dict = {
    "hookInstance": "7c0f4f3e-0d7e-4b43-8d8c-5b8e8f1b9a10",
    "hook": "order-sign",
    "context": copy.deepcopy(
        {k: v for k, v in VALID_ORDER_SELECT_REQUEST["context"].items() if k != "selections"}
    ),
}

VALID_DISCOVERY: dict = {
    "services": [
        {
            "hook": "patient-view",
            "title": "Spine post-op chart review",
            "description": "Post-operative spine care on chart open",
            "id": "spine-postop-patient-view",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "conditions": "Condition?patient={{context.patientId}}",
                "user": "PractitionerRole?_id={{userPractitionerRoleId}}",
            },
        },
        {
            "hook": "order-select",
            "description": "Post-operative spine care on order selection",
            "id": "spine-postop-order-select",
            "prefetch": {"encounter": "Encounter/{{context.encounterId}}"},
        },
    ]
}

VALID_FEEDBACK: dict = {
    "feedback": [
        {
            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2021-12-11T10:05:31Z",
        },
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "overrideReason": {
                "reason": {"code": "d7ecf885", "system": "https://example.com/reasons"},
                "userComment": "A comment entered by the clinician.",
            },
            "outcomeTimestamp": "2020-12-11T00:00:00.52+01:00",
        },
    ]
}

VALIDATORS: dict[str, Callable[[Any], list[Violation]]] = {
    "response": validate_response,
    "request": validate_request,
    "order-select": validate_request,
    "order-sign": validate_request,
    "discovery": validate_discovery,
    "feedback": validate_feedback,
}
BASES: dict[str, dict] = {
    "response": VALID_RESPONSE,
    "request": VALID_PATIENT_VIEW_REQUEST,
    "order-select": VALID_ORDER_SELECT_REQUEST,
    "order-sign": VALID_ORDER_SIGN_REQUEST,
    "discovery": VALID_DISCOVERY,
    "feedback": VALID_FEEDBACK,
}


@pytest.mark.parametrize("base", sorted(BASES))
def test_hand_written_base_document_is_valid(base: str) -> None:
    assert VALIDATORS[base](copy.deepcopy(BASES[base])) == []


CARD = "/cards/0"
CREATE = "/cards/0/suggestions/0/actions/0"
DELETE = "/cards/0/suggestions/0/actions/1"


def _card(d: dict) -> dict:
    return d["cards"][0]


def _create(d: dict) -> dict:
    return d["cards"][0]["suggestions"][0]["actions"][0]


def _delete(d: dict) -> dict:
    return d["cards"][0]["suggestions"][0]["actions"][1]


def _two_recommended(d: dict) -> None:
    _card(d)["suggestions"][1]["isRecommended"] = True


def _delete_with_string_resource(d: dict) -> None:
    _delete(d)["resource"] = _delete(d).pop("resourceId")


def _invalid_service_request(d: dict) -> None:
    for key in ("status", "intent", "subject"):
        del _create(d)["resource"][key]


def _accepted_without_suggestions(d: dict) -> None:
    del d["feedback"][0]["acceptedSuggestions"]


def _duplicate_service(d: dict) -> None:
    d["services"][1] = copy.deepcopy(d["services"][0])


def _fhir_authorization_without_server(d: dict) -> None:
    del d["fhirServer"]


class Fault(NamedTuple):
    base: str
    mutate: Callable[[dict], Any]
    pointer: str
    message: str


def _set(getter: Callable[[dict], dict], key: str, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        getter(d)[key] = value

    return mutate


def _drop(getter: Callable[[dict], dict], key: str) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        del getter(d)[key]

    return mutate


def _root(d: dict) -> dict:
    return d


def _ctx(d: dict) -> dict:
    return d["context"]


def _auth(d: dict) -> dict:
    return d["fhirAuthorization"]


def _source(d: dict) -> dict:
    return _card(d)["source"]


def _link0(d: dict) -> dict:
    return _card(d)["links"][0]


def _feedback0(d: dict) -> dict:
    return d["feedback"][0]


def _service0(d: dict) -> dict:
    return d["services"][0]


FAULTS: dict[str, Fault] = {
    # --- response: cards
    "summary-140-characters": Fault(
        "response", _set(_card, "summary", "x" * 140), f"{CARD}/summary", "shorter than 140"
    ),
    "suggestions-without-selectionBehavior": Fault(
        "response",
        _drop(_card, "selectionBehavior"),
        f"{CARD}/selectionBehavior",
        "missing required field 'selectionBehavior'",
    ),
    "unknown-selectionBehavior": Fault(
        "response",
        _set(_card, "selectionBehavior", "all"),
        f"{CARD}/selectionBehavior",
        'must be one of "at-most-one", "any"',
    ),
    "two-recommended-with-at-most-one": Fault(
        "response",
        _two_recommended,
        f"{CARD}/suggestions/1/isRecommended",
        "only one suggestion may be recommended",
    ),
    "wrong-indicator": Fault(
        "response",
        _set(_card, "indicator", "urgent"),
        f"{CARD}/indicator",
        'must be one of "info", "warning", "critical"; got "urgent"',
    ),
    "card-without-source": Fault(
        "response", _drop(_card, "source"), f"{CARD}/source", "missing required field 'source'"
    ),
    "unknown-card-field": Fault(
        "response", _set(_card, "summery", "typo"), f"{CARD}/summery", "unknown field 'summery'"
    ),
    "extension-not-an-object": Fault(
        "response", _set(_card, "extension", ["x"]), f"{CARD}/extension", "must be a JSON object"
    ),
    "override-reason-without-display": Fault(
        "response",
        lambda d: _card(d)["overrideReasons"][0].pop("display"),
        f"{CARD}/overrideReasons/0/display",
        "missing required field 'display'",
    ),
    # --- response: source and links
    "relative-source-url": Fault(
        "response",
        _set(_source, "url", "/guidelines/nass"),
        f"{CARD}/source/url",
        "absolute http(s)",
    ),
    "non-http-source-icon": Fault(
        "response",
        _set(_source, "icon", "ftp://example.org/i.png"),
        f"{CARD}/source/icon",
        "http(s)",
    ),
    "topic-without-code": Fault(
        "response",
        lambda d: _source(d)["topic"].pop("code"),
        f"{CARD}/source/topic/code",
        "missing required field 'code'",
    ),
    "appContext-on-absolute-link": Fault(
        "response",
        _set(_link0, "appContext", "{}"),
        f"{CARD}/links/0/appContext",
        "only allowed on links of type 'smart'",
    ),
    "absolute-link-with-relative-url": Fault(
        "response", _set(_link0, "url", "guideline.html"), f"{CARD}/links/0/url", "http(s) URL"
    ),
    "unknown-link-type": Fault(
        "response",
        _set(_link0, "type", "external"),
        f"{CARD}/links/0/type",
        'must be one of "absolute", "smart"',
    ),
    # --- response: actions
    "create-without-resource": Fault(
        "response",
        _drop(_create, "resource"),
        f"{CREATE}/resource",
        "missing required field 'resource'",
    ),
    "update-with-string-resource": Fault(
        "response",
        lambda d: d["systemActions"][0].update(resource="ServiceRequest/ct-1"),
        "/systemActions/0/resource",
        "must be a FHIR resource object",
    ),
    "delete-with-string-resource": Fault(
        "response", _delete_with_string_resource, f"{DELETE}/resource", "DEPRECATED"
    ),
    "delete-without-resourceId": Fault(
        "response", _drop(_delete, "resourceId"), f"{DELETE}/resourceId", "missing required field"
    ),
    "resourceId-not-a-relative-reference": Fault(
        "response", _set(_delete, "resourceId", "ct-1"), f"{DELETE}/resourceId", "'ResourceType/id'"
    ),
    "unknown-action-type": Fault(
        "response", _set(_create, "type", "insert"), f"{CREATE}/type", '"create", "update"'
    ),
    "system-action-without-description": Fault(
        "response",
        lambda d: d["systemActions"][0].pop("description"),
        "/systemActions/0/description",
        "missing required field 'description'",
    ),
    "service-request-without-status": Fault(
        "response",
        _invalid_service_request,
        f"{CREATE}/resource/status",
        "missing required element",
    ),
    "service-request-without-intent": Fault(
        "response",
        _invalid_service_request,
        f"{CREATE}/resource/intent",
        "missing required element",
    ),
    "service-request-without-subject": Fault(
        "response",
        _invalid_service_request,
        f"{CREATE}/resource/subject",
        "missing required element",
    ),
    "fhir-code-outside-required-value-set": Fault(
        "response",
        lambda d: _create(d)["resource"].update(status="ordered"),
        f"{CREATE}/resource/status",
        "not in the required value set",
    ),
    "fhir-single-value-for-repeating-element": Fault(
        "response",
        lambda d: _create(d)["resource"].update(category={"text": "Imaging"}),
        f"{CREATE}/resource/category",
        "must be an array",
    ),
    "unknown-fhir-resource-type": Fault(
        "response",
        lambda d: _create(d)["resource"].update(resourceType="MriOrder"),
        f"{CREATE}/resource/resourceType",
        "not a FHIR R4 resource type",
    ),
    # --- response: null and empty
    "null-value": Fault(
        "response", _set(_card, "detail", None), f"{CARD}/detail", "must not be null"
    ),
    "empty-string": Fault("response", _set(_card, "uuid", ""), f"{CARD}/uuid", "empty string"),
    "empty-suggestions-array": Fault(
        "response", _set(_card, "suggestions", []), f"{CARD}/suggestions", "empty array"
    ),
    "empty-system-actions-array": Fault(
        "response", _set(_root, "systemActions", []), "/systemActions", "empty array"
    ),
    "empty-object-inside-fhir-resource": Fault(
        "response",
        lambda d: _create(d)["resource"].update(code={}),
        f"{CREATE}/resource/code",
        "empty object",
    ),
    "null-inside-fhir-resource": Fault(
        "response",
        lambda d: _create(d)["resource"].update(priority=None),
        f"{CREATE}/resource/priority",
        "must not be null",
    ),
    # --- feedback
    "accepted-without-acceptedSuggestions": Fault(
        "feedback",
        _accepted_without_suggestions,
        "/feedback/0/acceptedSuggestions",
        "missing required field 'acceptedSuggestions'",
    ),
    "bad-outcome": Fault(
        "feedback",
        _set(_feedback0, "outcome", "rejected"),
        "/feedback/0/outcome",
        'must be one of "accepted", "overridden"',
    ),
    "outcomeTimestamp-not-rfc3339": Fault(
        "feedback",
        _set(_feedback0, "outcomeTimestamp", "2021-12-11 10:05"),
        "/feedback/0/outcomeTimestamp",
        "RFC 3339",
    ),
    "outcomeTimestamp-without-time-zone": Fault(
        "feedback",
        _set(_feedback0, "outcomeTimestamp", "2021-12-11T10:05:31"),
        "/feedback/0/outcomeTimestamp",
        "RFC 3339",
    ),
    "outcomeTimestamp-impossible-date": Fault(
        "feedback",
        _set(_feedback0, "outcomeTimestamp", "2021-02-30T10:05:31Z"),
        "/feedback/0/outcomeTimestamp",
        "RFC 3339",
    ),
    "accepted-suggestion-without-id": Fault(
        "feedback",
        lambda d: _feedback0(d)["acceptedSuggestions"][0].pop("id"),
        "/feedback/0/acceptedSuggestions/0/id",
        "missing required field 'id'",
    ),
    "override-reason-coding-without-system": Fault(
        "feedback",
        lambda d: d["feedback"][1]["overrideReason"]["reason"].pop("system"),
        "/feedback/1/overrideReason/reason/system",
        "missing required field 'system'",
    ),
    "empty-feedback-array": Fault(
        "feedback", _set(_root, "feedback", []), "/feedback", "empty array"
    ),
    # --- discovery
    "nested-prefetch-token": Fault(
        "discovery",
        lambda d: _service0(d)["prefetch"].update(
            med="MedicationRequest/{{context.medication.id}}"
        ),
        "/services/0/prefetch/med",
        "only root-level context fields",
    ),
    "prefetch-token-for-non-token-field": Fault(
        "discovery",
        lambda d: d["services"][1]["prefetch"].update(
            x="ServiceRequest?_id={{context.draftOrders}}"
        ),
        "/services/1/prefetch/x",
        "is not a prefetch token",
    ),
    "prefetch-token-for-unknown-field": Fault(
        "discovery",
        lambda d: _service0(d)["prefetch"].update(x="Observation?subject={{context.subjectId}}"),
        "/services/0/prefetch/x",
        "has no context field 'subjectId'",
    ),
    "prefetch-token-with-spaces": Fault(
        "discovery",
        lambda d: _service0(d)["prefetch"].update(x="Patient/{{ context.patientId }}"),
        "/services/0/prefetch/x",
        "without spaces",
    ),
    "unbalanced-prefetch-token": Fault(
        "discovery",
        lambda d: _service0(d)["prefetch"].update(x="Patient/{{context.patientId"),
        "/services/0/prefetch/x",
        "unbalanced",
    ),
    "null-prefetch-template": Fault(
        "discovery",
        lambda d: _service0(d)["prefetch"].update(patient=None),
        "/services/0/prefetch/patient",
        "must not be null",
    ),
    "service-without-description": Fault(
        "discovery",
        lambda d: d["services"][1].pop("description"),
        "/services/1/description",
        "missing required field 'description'",
    ),
    "service-id-with-slash": Fault(
        "discovery", _set(_service0, "id", "spine/postop"), "/services/0/id", "URL path segment"
    ),
    "duplicate-service-for-same-hook": Fault(
        "discovery", _duplicate_service, "/services/1/id", "already listed at /services/0"
    ),
    # --- requests
    "selection-not-in-draftOrders": Fault(
        "order-select",
        lambda d: _ctx(d)["selections"].append("ServiceRequest/missing"),
        "/context/selections/1",
        "is not in context.draftOrders",
    ),
    "empty-selections": Fault(
        "order-select", _set(_ctx, "selections", []), "/context/selections", "empty array"
    ),
    "selection-not-type-slash-id": Fault(
        "order-select",
        _set(_ctx, "selections", ["ct-1"]),
        "/context/selections/0",
        "ResourceType/id",
    ),
    "draftOrders-not-a-bundle": Fault(
        "order-select",
        lambda d: _ctx(d)["draftOrders"].update(resourceType="List"),
        "/context/draftOrders/resourceType",
        'must be "Bundle"',
    ),
    "draft-order-without-resourceType": Fault(
        "order-select",
        lambda d: _ctx(d)["draftOrders"]["entry"][1]["resource"].pop("resourceType"),
        "/context/draftOrders/entry/1/resource/resourceType",
        "missing required field 'resourceType'",
    ),
    "order-sign-without-draftOrders": Fault(
        "order-sign", _drop(_ctx, "draftOrders"), "/context/draftOrders", "missing required field"
    ),
    "fhirAuthorization-without-fhirServer": Fault(
        "request",
        _fhir_authorization_without_server,
        "/fhirAuthorization",
        "fhirAuthorization requires fhirServer",
    ),
    "token_type-not-Bearer": Fault(
        "request", _set(_auth, "token_type", "bearer"), "/fhirAuthorization/token_type", '"Bearer"'
    ),
    "expires_in-not-an-integer": Fault(
        "request", _set(_auth, "expires_in", "300"), "/fhirAuthorization/expires_in", "an integer"
    ),
    "fhirAuthorization-without-scope": Fault(
        "request",
        _drop(_auth, "scope"),
        "/fhirAuthorization/scope",
        "missing required field 'scope'",
    ),
    "relative-fhirServer": Fault(
        "request", _set(_root, "fhirServer", "/fhir"), "/fhirServer", "absolute http(s) URL"
    ),
    "missing-hookInstance": Fault(
        "request", _drop(_root, "hookInstance"), "/hookInstance", "missing required field"
    ),
    "null-context": Fault("request", _set(_root, "context", None), "/context", "must not be null"),
    "prefetch-value-not-an-object": Fault(
        "request",
        lambda d: d["prefetch"].update(patientToGreet="Patient/1288992"),
        "/prefetch/patientToGreet",
        "must be a JSON object or null",
    ),
    "userId-not-type-slash-id": Fault(
        "request", _set(_ctx, "userId", "example"), "/context/userId", "'ResourceType/id'"
    ),
    "patient-view-without-patientId": Fault(
        "request", _drop(_ctx, "patientId"), "/context/patientId", "missing required field"
    ),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_broken_document_is_rejected_at_the_right_pointer(name: str) -> None:
    fault = FAULTS[name]
    doc = copy.deepcopy(BASES[fault.base])
    fault.mutate(doc)
    violations = VALIDATORS[fault.base](doc)
    messages = find(violations, fault.pointer)
    assert any(fault.message in m for m in messages), violations


def test_at_least_25_distinct_faults_are_covered() -> None:
    assert len(FAULTS) >= 25
    assert {f.base for f in FAULTS.values()} == set(BASES)


# --- behaviours -------------------------------------------------------------


def test_empty_cards_and_services_are_allowed() -> None:
    assert validate_response({"cards": []}) == []
    assert validate_discovery({"services": []}) == []


def test_invalid_draft_order_does_not_fail_the_request() -> None:
    doc = copy.deepcopy(VALID_ORDER_SIGN_REQUEST)
    order = doc["context"]["draftOrders"]["entry"][1]["resource"]
    order.update(category={"text": "single object"}, dosageInstruction=None, note=[])
    assert validate_request(doc) == []


def test_prefetch_content_is_not_walked() -> None:
    doc = copy.deepcopy(VALID_PATIENT_VIEW_REQUEST)
    doc["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "entry": [{"resource": None}, {"resource": {"resourceType": ""}}, {}],
    }
    assert validate_request(doc) == []


def test_unknown_hook_gets_the_envelope_only() -> None:
    doc = request_for("appointment-book", {"anything": [1, 2], "nested": {"x": None}})
    assert validate_request(doc) == []
    del doc["hookInstance"]
    assert pointers(validate_request(doc)) == {"/hookInstance"}


def test_given_hook_is_used_for_the_context_and_must_match() -> None:
    doc = copy.deepcopy(VALID_PATIENT_VIEW_REQUEST)
    violations = validate_request(doc, hook="order-select")
    assert "/hook" in pointers(violations)
    assert "/context/draftOrders" in pointers(violations)


def test_fhirAuthorization_patient_is_optional_and_checked() -> None:
    doc = copy.deepcopy(VALID_PATIENT_VIEW_REQUEST)
    doc["fhirAuthorization"]["patient"] = "1288992"
    assert validate_request(doc) == []
    doc["fhirAuthorization"]["patient"] = ""
    assert pointers(validate_request(doc)) == {"/fhirAuthorization/patient"}


def test_extensions_are_allowed_where_the_spec_reserves_them() -> None:
    response = copy.deepcopy(VALID_RESPONSE)
    ext = {"org.example.x": "y"}
    for holder in (
        response,
        _card(response),
        _source(response),
        _create(response),
        _link0(response),
        _card(response)["suggestions"][0],
        _card(response)["overrideReasons"][0],
    ):
        holder["extension"] = dict(ext)
    assert validate_response(response) == []
    discovery = copy.deepcopy(VALID_DISCOVERY)
    discovery["extension"] = dict(ext)
    _service0(discovery)["extension"] = dict(ext)
    assert validate_discovery(discovery) == []


def test_empty_extension_object_is_rejected() -> None:
    doc = copy.deepcopy(VALID_PATIENT_VIEW_REQUEST)
    doc["extension"] = {}
    assert find(validate_request(doc), "/extension") == [V.EMPTY_MESSAGES[dict]]


def test_required_message_names_the_field_at_its_own_pointer() -> None:
    doc = copy.deepcopy(VALID_RESPONSE)
    del _card(doc)["summary"]
    assert find(validate_response(doc), f"{CARD}/summary") == ["missing required field 'summary'"]


def test_violations_are_sorted_by_pointer_and_deduplicated() -> None:
    doc = copy.deepcopy(VALID_RESPONSE)
    doc["cards"] = [copy.deepcopy(_card(doc)) for _ in range(12)]
    for card in doc["cards"]:
        card["indicator"] = "urgent"
        card["uuid"] = ""
    violations = validate_response(doc)
    assert len(violations) == len(set(violations)) == 24
    indexes = [int(v.pointer.split("/")[2]) for v in violations]
    assert indexes == sorted(indexes)


def test_only_one_violation_for_a_null_field() -> None:
    doc = copy.deepcopy(VALID_RESPONSE)
    _card(doc)["summary"] = None
    assert find(validate_response(doc), f"{CARD}/summary") == [V.NULL_MESSAGE]


def test_non_object_documents_are_reported_not_raised() -> None:
    for check in (validate_request, validate_response, validate_discovery, validate_feedback):
        assert pointers(check([1, 2])) == {""}


@pytest.mark.parametrize(
    ("doc", "kind"),
    [
        (VALID_DISCOVERY, "discovery"),
        (VALID_PATIENT_VIEW_REQUEST, "request"),
        (VALID_RESPONSE, "response"),
        ({"systemActions": []}, "response"),
        (VALID_FEEDBACK, "feedback"),
        ({"context": {}}, None),
        ([], None),
    ],
)
def test_detect_kind(doc: Any, kind: str | None) -> None:
    assert detect_kind(doc) == kind


def test_validate_document_detects_the_kind() -> None:
    assert validate_document(copy.deepcopy(VALID_FEEDBACK)) == ("feedback", [])
    kind, violations = validate_document({"cards": [{}]})
    assert kind == "response" and "/cards/0/summary" in pointers(violations)


def test_validate_document_with_explicit_kind() -> None:
    kind, violations = validate_document({"cards": []}, "feedback")
    assert kind == "feedback" and "/feedback" in pointers(violations)


def test_validate_document_rejects_undetectable_and_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="cannot tell which CDS Hooks document"):
        validate_document({"alg": "ES384"})
    with pytest.raises(ValueError, match="unknown document kind 'jwt'"):
        validate_document({"cards": []}, "jwt")


def test_validate_fragment_rejects_unknown_definitions() -> None:
    with pytest.raises(ValueError, match="unknown fragment 'cards'"):
        validate_fragment({}, "cards")


def test_schemas_are_valid_draft_2020_12() -> None:
    for schema in V.SCHEMAS.values():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    "value",
    [
        "2021-12-11T10:05:31Z",
        "2021-12-11T10:05:31.52Z",
        "2021-12-11t10:05:31+05:30",
        "2016-12-31T23:59:60Z",
    ],
)
def test_rfc3339_timestamps_are_accepted(value: str) -> None:
    doc = copy.deepcopy(VALID_FEEDBACK)
    _feedback0(doc)["outcomeTimestamp"] = value
    assert validate_feedback(doc) == []


def test_large_prefetch_validates_fast() -> None:
    def observation(i: int) -> dict:
        return {
            "fullUrl": f"https://fhir.example.org/r4/Observation/o{i}",
            "resource": {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "subject": {"reference": "Patient/1288992"},
                "effectiveDateTime": "2026-10-01T10:00:00Z",
                "valueQuantity": {"value": 8.1, "unit": "%"},
                "note": [{"text": "x" * 700}],
            },
            "search": {"mode": "match"},
        }

    doc = copy.deepcopy(VALID_PATIENT_VIEW_REQUEST)
    doc["prefetch"] = {
        f"bundle{b}": {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [observation(b * 1000 + i) for i in range(1000)],
        }
        for b in range(5)
    }
    assert len(json.dumps(doc)) > 5_000_000
    assert validate_request(doc) == []
    timings = []
    for _ in range(50):
        start = time.perf_counter()
        validate_request(doc)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.002, f"median {statistics.median(timings) * 1000:.2f} ms"
