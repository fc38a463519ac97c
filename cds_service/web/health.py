"""Endpoints for the platform, not for EHRs: liveness, readiness and metrics.

They sit outside ``/cds-services``, so no JWT and no CORS apply; expose them to
the orchestrator and the metrics scraper only.

- ``GET /healthz``: the process answers (200).
- ``GET /readyz``: the knowledge is loaded and the database answers (200), else
  503 naming the check that failed.
- ``GET /metrics``: Prometheus text format (404 when ``METRICS`` is off).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app
from werkzeug.exceptions import NotFound

from cds_service import metrics
from cds_service.web.routes import json_response

log = logging.getLogger(__name__)
operations = Blueprint("operations", __name__)


@operations.get("/healthz")
def healthz() -> Response:
    return json_response({"status": "ok"})


def _database_answers() -> bool:
    try:
        return bool(current_app.extensions["cds"].storage.ping())
    except Exception as exc:  # any driver error means "not ready"; its text may hold the URL
        log.warning("readiness: the database did not answer (%s)", type(exc).__name__)
        return False


@operations.get("/readyz")
def readyz() -> Response:
    checks = {
        "knowledge": "ok" if current_app.extensions["cds"].knowledge.services else "failed",
        "database": "ok" if _database_answers() else "failed",
    }
    ready = all(result == "ok" for result in checks.values())
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                         200 if ready else 503)


@operations.get("/metrics", endpoint="metrics")
def prometheus_metrics() -> Response:
    if not current_app.config["METRICS"]:
        raise NotFound()
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
