"""Malformed requests: each gets a 4xx with a JSON error body, never a 500 (CONTRACT §1).

Decisions recorded here:

- a UTF-8 byte order mark before the JSON is refused (400): RFC 8259 forbids
  senders to add one, and every CDS client sends plain UTF-8;
- duplicate object keys: the last one wins (as in most JSON parsers); the
  resulting document is then validated as usual;
- JSON nested deeper than the service accepts is a 400, never a RecursionError.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest

from cds_service import create_app

PV = "/cds-services/spine-postop-patient-view"
OS = "/cds-services/spine-postop-order-select"
OG = "/cds-services/spine-postop-order-sign"
FB = PV + "/feedback"
JSON = "application/json"
BODY_LIMIT = 10_000


def _prefetch() -> dict:
    keys = ("conditions", "observations", "imaging", "reports", "procedures", "medications")
    return {key: {"resourceType": "Bundle", "type": "searchset", "total": 0} for key in keys}


def _draft_orders() -> dict:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "ServiceRequest", "id": "sr1", "status": "draft", "intent": "order",
        "subject": {"reference": "Patient/p1"}, "code": {"text": "Physiotherapy"}}}]}


def valid(hook: str = "patient-view") -> dict:
    context: dict = {"patientId": "p1", "userId": "Practitioner/u1"}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = _draft_orders()
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/sr1"]
    return {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": _prefetch()}


def valid_feedback() -> dict:
    return {"feedback": [{"card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                          "outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31Z"}]}


def fhir_auth(**changes) -> dict:
    auth = {"access_token": "tok", "token_type": "Bearer", "expires_in": 300,
            "scope": "user/*.read", "subject": "spine-cds"}
    auth.update(changes)
    return {k: v for k, v in auth.items() if v is not ...}


def changed(hook: str = "patient-view", **top) -> bytes:
    """A valid request with top-level fields replaced (``...`` removes one)."""
    body = valid(hook)
    body.update(top)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def ctx(hook: str = "patient-view", **fields) -> bytes:
    """A valid request with context fields replaced (``...`` removes one)."""
    body = valid(hook)
    body["context"].update(fields)
    body["context"] = {k: v for k, v in body["context"].items() if v is not ...}
    return json.dumps(body).encode()


def feedback_item(**fields) -> bytes:
    body = valid_feedback()
    body["feedback"][0].update(fields)
    body["feedback"][0] = {k: v for k, v in body["feedback"][0].items() if v is not ...}
    return json.dumps(body).encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes | str | None
    status: int
    pointer: str | None = None  # a pointer the details must name
    path: str = PV
    content_type: str | None = JSON
    method: str = "POST"


CASES = [
    # -- not JSON at all -------------------------------------------------------------------
    Case("not-json", b"hello, service", 400),
    Case("truncated-json", b'{"hook": "patient-view", "hookInstance": ', 400),
    Case("trailing-garbage", json.dumps(valid()).encode() + b" }", 400),
    Case("single-quotes", b"{'hook': 'patient-view'}", 400),
    Case("json-with-comment", b'{"hook": "patient-view" /* c */}', 400),
    Case("nan-literal", b'{"hook": NaN}', 400),
    Case("empty-body", b"", 400),
    Case("whitespace-body", b"   \n  ", 400),
    Case("utf8-bom", b"\xef\xbb\xbf" + json.dumps(valid()).encode(), 400),
    Case("invalid-utf8-bytes", b'{"hook": "\xff\xfe\xfd"}', 400),
    Case("unicode-garbage-bytes", b"\xff\xfe\x00\x00\x80\x81garbage", 400),
    Case("lone-surrogate-escape", b'{"hook": "\\ud800", "hookInstance": "x", "context": {}}',
         400),
    Case("deep-nesting-10000", nested(10_000), 400),
    Case("deep-nesting-1000", nested(1000), 400),
    Case("deep-nesting-in-prefetch",
         '{"hook":"patient-view","hookInstance":"h1","context":{"patientId":"p1",'
         '"userId":"Practitioner/u1"},"prefetch":{"conditions":' + nested(1000) + "}}", 400),
    Case("deep-nesting-in-context",
         '{"hook":"patient-view","hookInstance":"x","context":{"patientId":"p1",'
         '"userId":"Practitioner/u1","deep":' + nested(500) + "}}", 400),
    # -- not an object ---------------------------------------------------------------------
    Case("top-level-array", b"[]", 400),
    Case("top-level-array-of-request", json.dumps([valid()]).encode(), 400),
    Case("top-level-string", b'"patient-view"', 400),
    Case("top-level-number", b"42", 400),
    Case("top-level-null", b"null", 400),
    Case("top-level-true", b"true", 400),
    Case("top-level-empty-object", b"{}", 400, "/hook"),
    # -- wrong content type ----------------------------------------------------------------
    Case("content-type-text-plain", json.dumps(valid()).encode(), 415, content_type="text/plain"),
    Case("content-type-form", b"hook=patient-view", 415,
         content_type="application/x-www-form-urlencoded"),
    Case("content-type-multipart", b"--x--", 415, content_type="multipart/form-data; boundary=x"),
    Case("content-type-missing", json.dumps(valid()).encode(), 415, content_type=None),
    # -- envelope --------------------------------------------------------------------------
    Case("missing-hook", changed(hook=...), 400, "/hook"),
    Case("missing-hookInstance", changed(hookInstance=...), 400, "/hookInstance"),
    Case("missing-context", changed(context=...), 400, "/context"),
    Case("hook-int", changed(hook=7), 400, "/hook"),
    Case("hook-null", changed(hook=None), 400, "/hook"),
    Case("hook-empty", changed(hook=""), 400, "/hook"),
    Case("hook-of-another-service", changed(hook="order-sign"), 400, "/hook"),
    Case("hookInstance-list", changed(hookInstance=["a"]), 400, "/hookInstance"),
    Case("hookInstance-int", changed(hookInstance=12), 400, "/hookInstance"),
    Case("fhirServer-int", changed(fhirServer=8080), 400, "/fhirServer"),
    Case("fhirServer-not-a-url", changed(fhirServer="not a url"), 400, "/fhirServer"),
    Case("fhirServer-relative", changed(fhirServer="/fhir"), 400, "/fhirServer"),
    Case("fhirServer-ftp", changed(fhirServer="ftp://fhir.example.org/r4"), 400, "/fhirServer"),
    Case("fhirServer-userinfo", changed(fhirServer="https://u:p@fhir.example.org/r4"), 400,
         "/fhirServer"),
    Case("fhirAuthorization-string", changed(fhirServer="https://fhir.example.org/r4",
                                             fhirAuthorization="Bearer tok"), 400,
         "/fhirAuthorization"),
    Case("fhirAuthorization-missing-access_token",
         changed(fhirServer="https://fhir.example.org/r4",
                 fhirAuthorization=fhir_auth(access_token=...)), 400,
         "/fhirAuthorization/access_token"),
    Case("fhirAuthorization-token_type-MAC",
         changed(fhirServer="https://fhir.example.org/r4",
                 fhirAuthorization=fhir_auth(token_type="MAC")), 400,
         "/fhirAuthorization/token_type"),
    Case("fhirAuthorization-expires_in-string",
         changed(fhirServer="https://fhir.example.org/r4",
                 fhirAuthorization=fhir_auth(expires_in="300")), 400,
         "/fhirAuthorization/expires_in"),
    Case("fhirAuthorization-missing-subject",
         changed(fhirServer="https://fhir.example.org/r4",
                 fhirAuthorization=fhir_auth(subject=...)), 400, "/fhirAuthorization/subject"),
    Case("fhirAuthorization-without-fhirServer", changed(fhirAuthorization=fhir_auth()), 400,
         "/fhirAuthorization"),
    Case("context-array", changed(context=[{"patientId": "p1"}]), 400, "/context"),
    Case("context-string", changed(context="p1"), 400, "/context"),
    Case("context-empty-object", changed(context={}), 400, "/context"),
    Case("prefetch-array", changed(prefetch=[{"resourceType": "Bundle"}]), 400, "/prefetch"),
    Case("prefetch-string", changed(prefetch="Condition?patient=p1"), 400, "/prefetch"),
    Case("prefetch-value-string", changed(prefetch={**_prefetch(), "conditions": "none"}), 400,
         "/prefetch/conditions"),
    Case("prefetch-value-number", changed(prefetch={**_prefetch(), "conditions": 0}), 400,
         "/prefetch/conditions"),
    Case("prefetch-value-array", changed(prefetch={**_prefetch(), "conditions": []}), 400,
         "/prefetch/conditions"),
    Case("extension-array", changed(extension=[1]), 400, "/extension"),
    Case("duplicate-key-last-wins",
         b'{"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p1", '
         b'"userId": "Practitioner/u1"}, "hook": 5}', 400, "/hook"),
    # -- context ---------------------------------------------------------------------------
    Case("context-missing-patientId", ctx(patientId=...), 400, "/context/patientId"),
    Case("context-missing-userId", ctx(userId=...), 400, "/context/userId"),
    Case("patientId-int", ctx(patientId=1288992), 400, "/context/patientId"),
    Case("patientId-null", ctx(patientId=None), 400, "/context/patientId"),
    Case("patientId-reference", ctx(patientId="Patient/p1"), 400, "/context/patientId"),
    Case("patientId-too-long", ctx(patientId="p" * 10_000), 400, "/context/patientId"),
    Case("userId-malformed", ctx(userId="dr-smith"), 400, "/context/userId"),
    Case("userId-int", ctx(userId=42), 400, "/context/userId"),
    Case("userId-too-long", ctx(userId="Practitioner/" + "u" * 10_000), 400, "/context/userId"),
    Case("encounterId-object", ctx(encounterId={"id": "e1"}), 400, "/context/encounterId"),
    Case("order-select-missing-selections", ctx("order-select", selections=...), 400,
         "/context/selections", OS),
    Case("order-select-missing-draftOrders", ctx("order-select", draftOrders=...), 400,
         "/context/draftOrders", OS),
    Case("order-select-selections-string", ctx("order-select", selections="ServiceRequest/sr1"),
         400, "/context/selections", OS),
    Case("order-select-selections-empty", ctx("order-select", selections=[]), 400,
         "/context/selections", OS),
    Case("order-select-selection-int", ctx("order-select", selections=[1]), 400,
         "/context/selections/0", OS),
    Case("order-select-selection-not-in-drafts",
         ctx("order-select", selections=["MedicationRequest/m9"]), 400,
         "/context/selections/0", OS),
    Case("order-select-draftOrders-patient",
         ctx("order-select", draftOrders={"resourceType": "Patient", "id": "p1"}), 400,
         "/context/draftOrders/resourceType", OS),
    Case("order-select-draftOrders-array", ctx("order-select", draftOrders=[]), 400,
         "/context/draftOrders", OS),
    Case("order-sign-missing-draftOrders", ctx("order-sign", draftOrders=...), 400,
         "/context/draftOrders", OG),
    Case("order-sign-draftOrders-string", ctx("order-sign", draftOrders="Bundle/1"), 400,
         "/context/draftOrders", OG),
    Case("order-sign-draft-entry-without-resource",
         ctx("order-sign", draftOrders={"resourceType": "Bundle", "entry": [{"fullUrl": "x"}]}),
         400, "/context/draftOrders/entry/0/resource", OG),
    # -- routing ---------------------------------------------------------------------------
    Case("unknown-service", json.dumps(valid()).encode(), 404, path="/cds-services/nope"),
    Case("very-long-service-id", json.dumps(valid()).encode(), 404,
         path="/cds-services/" + "x" * 5000),
    Case("get-on-service", None, 405, method="GET"),
    Case("put-on-service", json.dumps(valid()).encode(), 405, method="PUT"),
    Case("delete-on-service", None, 405, method="DELETE"),
    Case("post-on-discovery", b"{}", 405, path="/cds-services"),
    Case("body-over-limit", b'{"hook": "' + b"x" * (BODY_LIMIT * 2) + b'"}', 413),
]

FEEDBACK_CASES = [
    Case("feedback-not-json", b"thanks!", 400, path=FB),
    Case("feedback-empty-body", b"", 400, path=FB),
    Case("feedback-top-level-array", json.dumps(valid_feedback()["feedback"]).encode(), 400,
         path=FB),
    Case("feedback-missing-feedback", b"{}", 400, "/feedback", FB),
    Case("feedback-not-array", json.dumps({"feedback": valid_feedback()["feedback"][0]}).encode(),
         400, "/feedback", FB),
    Case("feedback-empty-array", b'{"feedback": []}', 400, "/feedback", FB),
    Case("feedback-item-string", b'{"feedback": ["accepted"]}', 400, "/feedback/0", FB),
    Case("feedback-missing-card", feedback_item(card=...), 400, "/feedback/0/card", FB),
    Case("feedback-card-int", feedback_item(card=5), 400, "/feedback/0/card", FB),
    Case("feedback-missing-outcome", feedback_item(outcome=...), 400, "/feedback/0/outcome", FB),
    Case("feedback-outcome-invalid", feedback_item(outcome="ignored"), 400,
         "/feedback/0/outcome", FB),
    Case("feedback-missing-timestamp", feedback_item(outcomeTimestamp=...), 400,
         "/feedback/0/outcomeTimestamp", FB),
    Case("feedback-timestamp-words", feedback_item(outcomeTimestamp="yesterday"), 400,
         "/feedback/0/outcomeTimestamp", FB),
    Case("feedback-timestamp-date-only", feedback_item(outcomeTimestamp="2021-12-11"), 400,
         "/feedback/0/outcomeTimestamp", FB),
    Case("feedback-timestamp-no-offset", feedback_item(outcomeTimestamp="2021-12-11T10:05:31"),
         400, "/feedback/0/outcomeTimestamp", FB),
    Case("feedback-timestamp-epoch", feedback_item(outcomeTimestamp=1639217131), 400,
         "/feedback/0/outcomeTimestamp", FB),
    Case("feedback-accepted-without-suggestions", feedback_item(outcome="accepted"), 400,
         "/feedback/0/acceptedSuggestions", FB),
    Case("feedback-accepted-suggestion-without-id",
         feedback_item(outcome="accepted", acceptedSuggestions=[{}]), 400,
         "/feedback/0/acceptedSuggestions/0", FB),
    Case("feedback-overrideReason-empty", feedback_item(overrideReason={}), 400,
         "/feedback/0/overrideReason", FB),
    Case("feedback-overrideReason-reason-without-code",
         feedback_item(overrideReason={"reason": {"system": "https://example.org/r"}}), 400,
         "/feedback/0/overrideReason/reason/code", FB),
    Case("feedback-userComment-null", feedback_item(overrideReason={"userComment": None}), 400,
         "/feedback/0/overrideReason/userComment", FB),
    Case("feedback-text-plain", json.dumps(valid_feedback()).encode(), 415, path=FB,
         content_type="text/plain"),
    Case("feedback-unknown-service", json.dumps(valid_feedback()).encode(), 404,
         path="/cds-services/nope/feedback"),
    Case("feedback-get", None, 405, path=FB, method="GET"),
    Case("feedback-deep-nesting-5000", nested(5000), 400, path=FB),
    Case("feedback-deep-nesting-1000", nested(1000), 400, path=FB),
    Case("feedback-body-over-limit", b'{"feedback": "' + b"x" * (BODY_LIMIT * 2) + b'"}', 413,
         path=FB),
]


@pytest.fixture(scope="module")
def clients(tmp_path_factory):
    """Two apps: the default body limit, and MAX_REQUEST_BYTES = BODY_LIMIT for the 413s."""
    folder = tmp_path_factory.mktemp("db")
    url = f"sqlite:///{folder / 'cds.sqlite'}"
    return {
        "default": create_app({"DATABASE_URL": url, "TESTING": True}).test_client(),
        "small": create_app({"DATABASE_URL": url, "TESTING": True,
                             "MAX_REQUEST_BYTES": BODY_LIMIT}).test_client(),
    }


@pytest.fixture(scope="module")
def client(clients):
    return clients["default"]


def send(clients, case: Case):
    client = clients["small" if case.status == 413 else "default"]
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    return client.open(case.path, method=case.method, data=case.data, headers=headers)


def assert_error_body(response) -> dict:
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str) and body["error"].strip()
    if "details" in body:
        assert isinstance(body["details"], list) and body["details"]
        for detail in body["details"]:
            assert set(detail) == {"pointer", "message"}
            assert isinstance(detail["pointer"], str)
            assert detail["pointer"] == "" or detail["pointer"].startswith("/")
            assert isinstance(detail["message"], str) and detail["message"].strip()
    return body


def test_there_are_at_least_40_request_cases_and_10_feedback_cases():
    assert len({c.id for c in CASES}) == len(CASES) >= 40
    assert len({c.id for c in FEEDBACK_CASES}) == len(FEEDBACK_CASES) >= 10


@pytest.mark.parametrize("case", CASES + FEEDBACK_CASES, ids=lambda c: c.id)
def test_malformed_request_gets_its_status(clients, case):
    response = send(clients, case)
    assert response.status_code == case.status, response.get_data(as_text=True)[:500]


@pytest.mark.parametrize("case", CASES + FEEDBACK_CASES, ids=lambda c: c.id)
def test_malformed_request_gets_a_json_error_body(clients, case):
    assert_error_body(send(clients, case))


@pytest.mark.parametrize("case", [c for c in CASES + FEEDBACK_CASES if c.pointer is not None],
                         ids=lambda c: c.id)
def test_malformed_request_error_points_at_the_problem(clients, case):
    body = assert_error_body(send(clients, case))
    assert case.pointer in [d["pointer"] for d in body.get("details", [])], body


def test_405_names_the_allowed_methods(client):
    response = client.get(PV)
    assert "POST" in response.headers["Allow"]


def test_413_body_names_the_limit(clients):
    """The limit is MAX_REQUEST_BYTES, configured small here."""
    response = send(clients, next(c for c in CASES if c.id == "body-over-limit"))
    assert str(BODY_LIMIT) in response.get_json()["error"]


def test_the_valid_baselines_are_accepted(client):
    """The malformed cases differ from these bodies only where they mean to."""
    for path, body in ((PV, valid()), (OS, valid("order-select")), (OG, valid("order-sign")),
                       (FB, valid_feedback())):
        assert client.post(path, json=body).status_code == 200, path
