"""The CDS Hooks HTTP API: discovery, service invocation, feedback.

HTTP only: parsing, authentication, status codes. The protocol work happens
in ``invocation`` and ``protocol``; the clinical work in ``engine``.
"""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from cds_service import metrics
from cds_service.errors import ClientError, Violation, bad_request
from cds_service.protocol.validation import validate_feedback
from cds_service.security.jwt_auth import JwtRejected
from cds_service.time_budget import Deadline
from cds_service.web.observability import hook_fields

api = Blueprint("cds_hooks", __name__)

#: Deepest JSON nesting accepted. FHIR resources stay far below it; deeper
#: documents would exhaust the recursion limit in validation (a 500).
MAX_JSON_DEPTH = 100


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def _read_json() -> object:
    content_type = (request.mimetype or "").lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ClientError(415, "Send the body as JSON with Content-Type: application/json",
                          [Violation("", f"Content-Type was {request.mimetype or 'missing'!r}")])
    data = request.get_data(cache=False)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()  # werkzeug cuts a chunked body at the limit silently
    if not data:
        raise bad_request("The request body is empty; send a JSON object",
                          [Violation("", "empty body")])
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise bad_request("The request body is not valid JSON",
                          [Violation("", str(exc))]) from None
    if _too_deep(parsed):
        raise bad_request("The request body is nested too deeply",
                          [Violation("", f"JSON nesting deeper than {MAX_JSON_DEPTH} levels "
                                         "is not accepted")])
    return parsed


def _too_deep(document: object) -> bool:
    """True when arrays/objects nest deeper than MAX_JSON_DEPTH (checked without recursion).

    The prefetch payload (up to thousands of resources) is not walked: nothing reads it
    recursively, so its depth is bounded by the JSON parser's own limit, and the cost of
    this check stays independent of the size of the record.
    """
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = [v for k, v in node.items() if not (depth == 1 and k == "prefetch")]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


@api.before_request
def authenticate() -> None:
    """Every call needs a valid CDS Hooks JWT when JWT_ISSUERS is configured."""
    verifier = current_app.extensions["cds"].verifier
    if verifier is None or request.method == "OPTIONS":
        return
    base = current_app.config.get("PUBLIC_BASE_URL") or request.host_url
    audience = base.rstrip("/") + request.path
    try:
        g.jwt_claims = verifier.verify(request.headers.get("Authorization"), audience)
    except JwtRejected:
        metrics.record_jwt_rejection(request.endpoint or "none")
        raise ClientError(401, "Unauthorized") from None


@api.get("/cds-services")
def discovery() -> Response:
    services = current_app.extensions["cds"].hooks.knowledge.services.values()
    return json_response({"services": [s.discovery_entry() for s in services]})


@api.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    service = current_app.extensions["cds"].hooks
    service.service(service_id)  # 404 before reading the body
    body = _read_json()
    g.log_fields = hook_fields(body)
    deadline = Deadline(current_app.config["REQUEST_TIME_BUDGET_SECONDS"],
                        g.get("request_started"))
    history = current_app.extensions["cds"].history
    try:
        outcome = service.invoke(service_id, body, deadline=deadline)
    except ClientError as exc:
        history.record_failure(service_id, body, exc.status, deadline.started)
        raise
    history.settle(service_id, body, outcome)  # suppression and audit, committed before answering
    g.log_fields.update(rules=outcome.rule_ids, suppressed=outcome.suppressed,
                        resources=outcome.resources)
    metrics.record_cards(service_id, outcome.cards)
    return json_response(outcome.response())


@api.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    extension = current_app.extensions["cds"]
    extension.hooks.service(service_id)
    body = _read_json()
    violations = validate_feedback(body)
    if violations:
        raise bad_request("The feedback is not valid CDS Hooks 2.0 feedback", violations)
    stored = extension.storage.record_feedback(service_id, body["feedback"])
    metrics.record_feedback(service_id, (item["outcome"] for item in body["feedback"]))
    g.log_fields = {"feedback": stored}
    return json_response({"stored": stored})
