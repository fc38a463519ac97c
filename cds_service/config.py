"""Configuration: one place that knows every key, its default and its type.

Keys come from three layers, later layers winning: the defaults below,
environment variables named ``CDS_<KEY>``, and the mapping passed to
``create_app``. Environment values that are lists or mappings are JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ENV_PREFIX = "CDS_"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or of the wrong type."""


@dataclass(frozen=True)
class Key:
    name: str
    kind: str  # "str" | "int" | "float" | "bool" | "list" | "mapping" | "instant"
    default: Any
    help: str


KEYS: tuple[Key, ...] = (
    Key("EVALUATION_TIME", "instant", None, "ISO 8601 instant used as clinical 'now'"),
    Key("JWT_ISSUERS", "mapping", None, "{iss: {jwks: <JWK Set>} | {jku: <URL>}}"),
    Key("JWT_TENANTS", "list", None, "allowed `tenant` claims (unset: any)"),
    Key("JWT_LEEWAY_SECONDS", "int", 30, "clock skew allowed on exp/iat/nbf"),
    Key("JWT_MAX_LIFETIME_SECONDS", "int", 3600, "longest exp - iat accepted"),
    Key("PUBLIC_BASE_URL", "str", None, "base URL clients call, for the JWT aud check"),
    Key("FHIR_SERVERS", "list", None, "allowed fhirServer base URLs (unset: any)"),
    Key("FHIR_CONNECT_TIMEOUT", "float", 3.0, "seconds to connect to a FHIR server"),
    Key("FHIR_TOTAL_TIMEOUT", "float", 10.0, "seconds for all FHIR fetches of one call"),
    Key("FHIR_RETRIES", "int", 2, "retries on connection errors and 5xx"),
    Key("FHIR_PAGE_LIMIT", "int", 20, "most Bundle pages followed per search"),
    Key("DATABASE_URL", "str", None, "SQLAlchemy URL (default: SQLite in the instance folder)"),
    Key("CORS_ORIGINS", "list", ["*"], "origins allowed to call from a browser"),
    Key("MAX_REQUEST_BYTES", "int", 32 * 1024 * 1024, "largest request body accepted (413)"),
    Key("KNOWLEDGE_DIR", "str", None, "folder of services, rules and value sets"),
    Key("THRESHOLDS", "mapping", None, "overrides of the clinical thresholds"),
    Key("SANDBOX", "bool", True, "serve the /sandbox page (turn off in production)"),
    Key("AUDIT", "bool", True, "store an audit record of every invocation (no patient data)"),
    Key("SUPPRESSION_WINDOW_HOURS", "float", 24.0,
        "hide a non-critical card overridden for the same patient, rule and reason"),
    Key("PATIENT_HASH_SECRET", "str", None,
        "HMAC key that pseudonymises patients in storage (default: a file in the instance folder)"),
    Key("REQUEST_TIME_BUDGET_SECONDS", "float", 10.0, "a hook call taking longer gets 503"),
    Key("LOG_FORMAT", "str", "json", "json (one object per line) or text"),
    Key("METRICS", "bool", True, "serve Prometheus metrics at /metrics"),
)
KEYS_BY_NAME = {k.name: k for k in KEYS}


def _parse_env(key: Key, raw: str) -> Any:
    if key.kind in ("list", "mapping"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{ENV_PREFIX}{key.name} must be JSON: {exc.msg}") from None
    if key.kind == "bool":
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{ENV_PREFIX}{key.name} must be true or false, not {raw!r}")
    return raw


def parse_instant(value: str, name: str = "EVALUATION_TIME") -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise ConfigError(f"{name} must be an ISO 8601 instant, not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _coerce(key: Key, value: Any) -> Any:
    if value is None:
        return None
    kind = key.kind
    try:
        if kind == "str":
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind == "int":
            if isinstance(value, bool):
                raise TypeError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "bool":
            if isinstance(value, str):
                return _parse_env(key, value)
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind == "list":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return list(value)
        if kind == "mapping":
            if not isinstance(value, Mapping):
                raise TypeError
            return dict(value)
        if kind == "instant":
            if isinstance(value, datetime):
                return value if value.tzinfo else value.replace(tzinfo=UTC)
            return parse_instant(str(value), key.name)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{key.name} must be of type {kind}, not {value!r}") from None
    raise ConfigError(f"unknown kind {kind}")  # pragma: no cover - programming error


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge defaults, ``CDS_*`` environment variables and ``overrides``.

    Unknown keys in ``overrides`` are kept as they are (Flask settings such as
    ``TESTING`` pass through); known keys are type-checked.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for key in KEYS:
        value = key.default
        env_name = ENV_PREFIX + key.name
        if env_name in environ:
            value = _parse_env(key, environ[env_name])
        settings[key.name] = _coerce(key, value)
    for name, value in (overrides or {}).items():
        key = KEYS_BY_NAME.get(name)
        settings[name] = _coerce(key, value) if key else value
    return settings
