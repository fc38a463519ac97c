"""The application factory: configuration, knowledge, storage and routes in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from cds_service.config import load_settings
from cds_service.engine.knowledge import Knowledge, load_knowledge
from cds_service.errors import ClientError
from cds_service.history import InvocationHistory
from cds_service.invocation import HookService
from cds_service.security.jwt_auth import JwtVerifier
from cds_service.storage import Storage, default_database_url
from cds_service.time_budget import RETRY_AFTER_SECONDS
from cds_service.web.headers import secure_headers
from cds_service.web.health import operations
from cds_service.web.observability import instrument
from cds_service.web.routes import api, json_response
from cds_service.web.sandbox import sandbox

log = logging.getLogger("cds_service")


@dataclass
class CdsExtension:
    """What the routes need, kept on ``app.extensions["cds"]``."""

    settings: dict[str, Any]
    knowledge: Knowledge
    hooks: HookService
    storage: Storage
    verifier: JwtVerifier | None
    history: InvocationHistory


def _verifier(settings: dict[str, Any]) -> JwtVerifier | None:
    if settings["JWT_ISSUERS"] is None:
        log.warning("JWT verification is off: any caller may invoke the services. "
                    "Set JWT_ISSUERS to require CDS Hooks JWTs.")
        return None
    return JwtVerifier(settings["JWT_ISSUERS"], tenants=settings["JWT_TENANTS"],
                       leeway_seconds=settings["JWT_LEEWAY_SECONDS"],
                       max_lifetime_seconds=settings["JWT_MAX_LIFETIME_SECONDS"])


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ClientError)
    def client_error(exc: ClientError) -> Response:
        response = json_response(exc.body(), exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if exc.status == 503:
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        messages = {
            404: "Not found: the CDS Hooks endpoints are /cds-services, "
                 "/cds-services/{id} and /cds-services/{id}/feedback",
            405: "Method not allowed; allowed: "
                 + ", ".join(getattr(exc, "valid_methods", None) or []),
            413: f"Request body too large: the limit is "
                 f"{app.config['MAX_CONTENT_LENGTH']} bytes",
        }
        body = {"error": messages.get(exc.code or 500, exc.description or exc.name)}
        response = json_response(body, exc.code or 500)
        if exc.code == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return json_response({"error": "Internal error; the request was not processed"}, 500)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service. With no arguments: bundled rules, SQLite storage, no JWT check."""
    settings = load_settings(config)
    app = Flask("cds_service", instance_relative_config=True)
    app.config.update({k: v for k, v in settings.items()})
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_REQUEST_BYTES"]
    knowledge = load_knowledge(settings["KNOWLEDGE_DIR"], settings["THRESHOLDS"])
    storage = Storage(settings["DATABASE_URL"] or default_database_url(app.instance_path))
    app.extensions["cds"] = CdsExtension(settings, knowledge, HookService(knowledge, settings),
                                         storage, _verifier(settings),
                                         InvocationHistory(storage, settings, app.instance_path))
    CORS(app, resources={r"/cds-services*": {"origins": settings["CORS_ORIGINS"]}},
         allow_headers=["Authorization", "Content-Type"], methods=["GET", "POST", "OPTIONS"],
         supports_credentials=False, max_age=600)
    app.register_blueprint(api)
    app.register_blueprint(operations)
    instrument(app)
    secure_headers(app)
    if settings["SANDBOX"]:
        app.register_blueprint(sandbox)
    _register_errors(app)
    return app
