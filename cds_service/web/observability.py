"""What every request leaves behind: one log line and its request metrics.

The line holds the method, the path (never the query string), the status, the
duration, the service, and what the view put in ``g.log_fields`` (hook,
hookInstance, card rule ids, resource count, feedback count). It never holds a
patient identifier, a name, a resource, a token or a JWT: views add only
counts, ids from the knowledge and the client's ``hook``/``hookInstance``,
truncated.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, g, request

from cds_service import metrics

log = logging.getLogger("cds_service.requests")

#: Probes and scrapes come every few seconds: their lines are DEBUG.
QUIET_ENDPOINTS = frozenset({"operations.healthz", "operations.readyz", "operations.metrics"})
MAX_FIELD_CHARS = 64
MAX_PATH_CHARS = 200


def instrument(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)


def _start() -> None:
    g.request_started = time.perf_counter()


def _short(value: object) -> str | None:
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else None


def hook_fields(body: object) -> dict:
    """``hook`` and ``hookInstance`` of a hook request, as strings of at most 64 characters."""
    body = body if isinstance(body, dict) else {}
    return {"hook": _short(body.get("hook")), "hookInstance": _short(body.get("hookInstance"))}


def service_label() -> str:
    """The called service's id when it is a known one, ``unknown`` when not, else ``none``."""
    service_id = (request.view_args or {}).get("service_id")
    if service_id is None:
        return "none"
    known = current_app.extensions["cds"].knowledge.services
    return service_id if service_id in known else "unknown"


def _finish(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    endpoint = request.endpoint or "none"
    service = service_label()
    status = response.status_code
    metrics.record_request(endpoint, service, status, seconds)
    path = request.path[:MAX_PATH_CHARS]
    fields = {"method": request.method, "path": path, "status": status,
              "duration_ms": round(seconds * 1000, 1),
              "service": None if service == "none" else service}
    fields.update(g.get("log_fields", {}))
    if endpoint in QUIET_ENDPOINTS:
        level = logging.DEBUG
    else:
        level = logging.WARNING if status >= 500 else logging.INFO
    log.log(level, "%s %s %d", request.method, path, status,
            extra={"fields": {k: v for k, v in fields.items() if v is not None}})
    return response
