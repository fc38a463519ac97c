"""A CDS Hooks client for the command line: discovery and hook calls, in-process or over HTTP.

``fire`` and ``check`` see the service only as a CDS client would: they read
its discovery document, build each request from the prefetch templates it
declares, and POST it. In-process calls go through the same HTTP stack (the
Flask test client) as remote ones, so status codes and error bodies match.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import click
import jwt
import requests

from cds_service import create_app
from cds_service.commands.boundary import EXIT_INVALID, EXIT_SERVICE, EXIT_USAGE, CommandError
from cds_service.commands.record_files import read_json
from cds_service.engine.knowledge import ServiceDefinition
from cds_service.fhir.prefetch import PrefetchSpec
from cds_service.protocol.cards import RULE_TOPIC_SYSTEM
from cds_service.protocol.validation import validate_discovery

DISCOVERY_PATH = "/cds-services"
TOKEN_LIFETIME_SECONDS = 300
_ALG_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, the body parsed as JSON (None when it is not JSON), the text."""

    status: int
    body: Any
    text: str

    def error_line(self) -> str:
        """The error body on one line, for a one-line message."""
        if self.body is not None:
            shown = json.dumps(self.body, ensure_ascii=False, separators=(", ", ": "))
        else:
            shown = " ".join(self.text.split()) or "(empty body)"
        return shown if len(shown) <= 2000 else shown[:2000] + "..."


class CdsClient(Protocol):
    where: str

    def discover(self) -> Reply: ...

    def call(self, service_id: str, request: dict) -> Reply: ...


class InProcessClient:
    """The service built here with ``create_app``, called through its HTTP layer."""

    def __init__(self, evaluation_time: str | None) -> None:
        """``evaluation_time`` is clinical "now"; None leaves it to CDS_EVALUATION_TIME or the
        clock. Other CDS_* settings (knowledge folder, thresholds) apply as for the server."""
        # A dry run: nothing persists, no JWT check, and the service's start-up
        # warnings (e.g. "JWT verification is off") do not clutter the output.
        logging.disable(logging.WARNING)
        config = {"DATABASE_URL": "sqlite://", "JWT_ISSUERS": None, "AUDIT": False,
                  "METRICS": False, "PATIENT_HASH_SECRET": secrets.token_hex(16)}
        if evaluation_time is not None:
            config["EVALUATION_TIME"] = evaluation_time
        app = create_app(config)
        now = app.config.get("EVALUATION_TIME")
        self._client = app.test_client()
        self.where = f"in-process, now {now.strftime('%Y-%m-%dT%H:%M:%SZ') if now else 'the clock'}"

    def _reply(self, response) -> Reply:
        return Reply(response.status_code, response.get_json(silent=True),
                     response.get_data(as_text=True))

    def discover(self) -> Reply:
        return self._reply(self._client.get(DISCOVERY_PATH))

    def call(self, service_id: str, request: dict) -> Reply:
        return self._reply(self._client.post(f"{DISCOVERY_PATH}/{service_id}", json=request))


class JwtSigner:
    """Signs CDS Hooks client JWTs with a private JWK (spec: Trusting CDS Clients)."""

    def __init__(self, jwk: Any, issuer: str, where: str) -> None:
        if isinstance(jwk, dict) and isinstance(jwk.get("keys"), list) and len(jwk["keys"]) == 1:
            jwk = jwk["keys"][0]
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise CommandError(f"JWT key {where}: expected a private JWK (a JSON object with "
                               "'kty', 'kid' and the private part 'd')")
        if "d" not in jwk:
            raise CommandError(f"JWT key {where} is a public key; give the private JWK (with 'd')")
        self.kid = jwk.get("kid")
        if not isinstance(self.kid, str) or not self.kid:
            raise CommandError(f"JWT key {where} has no 'kid'; add the kid the service knows "
                               "the key by")
        self.alg = jwk.get("alg") or self._default_alg(jwk, where)
        try:
            self._key = jwt.PyJWK(jwk, algorithm=self.alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise CommandError(f"JWT key {where} cannot sign with {self.alg} ({exc})") from None
        self.issuer = issuer

    @staticmethod
    def _default_alg(jwk: dict, where: str) -> str:
        if jwk["kty"] == "EC" and jwk.get("crv") in _ALG_BY_CURVE:
            return _ALG_BY_CURVE[jwk["crv"]]
        if jwk["kty"] == "RSA":
            return "RS384"
        raise CommandError(f"JWT key {where}: key type {jwk['kty']!r} cannot sign CDS Hooks "
                           "JWTs; use an EC (P-384) or RSA key")

    def authorization(self, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": audience, "iat": now,
                  "exp": now + TOKEN_LIFETIME_SECONDS, "jti": str(uuid.uuid4())}
        token = jwt.encode(claims, self._key, algorithm=self.alg,
                             headers={"kid": self.kid, "typ": "JWT"})
        return f"Bearer {token}"


def _reason(exc: Exception) -> str:
    """The operating system's words for a failed connection, without urllib3's wrapping."""
    found = _OS_ERROR.search(str(exc))
    return found.group(1).strip() if found else type(exc).__name__


class RemoteClient:
    """A CDS service at a base URL, called with ``requests``."""

    def __init__(self, base_url: str, signer: JwtSigner | None, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CommandError(f"--url {base_url!r} is not an http(s) URL; give the service's "
                               "base URL, e.g. http://127.0.0.1:8080")
        base = base_url.rstrip("/")
        self.base = base.removesuffix(DISCOVERY_PATH)
        self.where = self.base
        self._signer = signer
        self._timeout = timeout

    def _send(self, method: str, path: str, body: dict | None = None) -> Reply:
        url = self.base + path
        headers = {"Accept": "application/json"}
        if self._signer is not None:
            headers["Authorization"] = self._signer.authorization(url)
        try:
            response = requests.request(method, url, json=body, headers=headers,
                                        timeout=(min(self._timeout, 10.0), self._timeout),
                                        allow_redirects=False)
        except requests.Timeout:
            raise CommandError(f"{url} did not answer within {self._timeout:g} s; is the service "
                               "up? (--timeout sets the limit)", EXIT_SERVICE) from None
        except requests.RequestException as exc:
            raise CommandError(f"cannot reach {url} ({_reason(exc)}); is the service running "
                               "at that URL?", EXIT_SERVICE) from None
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        return Reply(response.status_code, parsed, response.text)

    def discover(self) -> Reply:
        return self._send("GET", DISCOVERY_PATH)

    def call(self, service_id: str, request: dict) -> Reply:
        return self._send("POST", f"{DISCOVERY_PATH}/{service_id}", request)


def remote_options(command: Callable) -> Callable:
    """The options that point a client command at a running service."""
    options = [
        click.option("--url", metavar="URL", default=None,
                     help="Call the service at this base URL (e.g. http://127.0.0.1:8080) "
                          "instead of in-process."),
        click.option("--jwt-key", metavar="PRIVATE_JWK.json", default=None,
                     help="Sign every call with this private JWK (CDS Hooks JWT; with --url)."),
        click.option("--jwt-iss", metavar="ISS", default=None,
                     help="The JWT issuer (iss) the service trusts for --jwt-key."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0,
                     metavar="SECONDS", show_default=True,
                     help="How long to wait for a remote service."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def remote_client(url: str | None, jwt_key: str | None, jwt_iss: str | None,
                  timeout: float) -> RemoteClient | None:
    """The remote client the options ask for, or None for in-process calls."""
    if (jwt_key is None) != (jwt_iss is None):
        raise CommandError("--jwt-key and --jwt-iss go together: give the private JWK and the "
                           "issuer the service trusts it for")
    if url is None:
        if jwt_key is not None:
            raise CommandError("--jwt-key signs calls to a remote service; give --url too "
                               "(in-process calls need no JWT)")
        return None
    signer = JwtSigner(read_json(jwt_key, "JWT key"), jwt_iss, jwt_key) if jwt_key else None
    return RemoteClient(url, signer, timeout)


def discover_services(client: CdsClient) -> list[ServiceDefinition]:
    """The services ``client`` offers, from its discovery document."""
    reply = client.discover()
    if reply.status != 200:
        raise CommandError(f"discovery ({client.where}) answered HTTP {reply.status}: "
                           f"{reply.error_line()}", EXIT_SERVICE)
    violations = validate_discovery(reply.body) if reply.body is not None else None
    if violations is None or violations:
        first = (f"{violations[0].pointer or '(document)'}: {violations[0].message}"
                 if violations else "the body is not JSON")
        raise CommandError(f"the discovery document ({client.where}) is not valid CDS Hooks "
                           f"2.0 ({first})", EXIT_INVALID)
    return [ServiceDefinition(
        id=entry["id"], hook=entry["hook"], title=entry.get("title", ""),
        description=entry["description"], usage_requirements=entry.get("usageRequirements"),
        prefetch=tuple(PrefetchSpec(key, template, False)
                       for key, template in (entry.get("prefetch") or {}).items()),
    ) for entry in reply.body["services"]]


def service_for(services: list[ServiceDefinition], hook: str, where: str) -> ServiceDefinition:
    """The first service registered for ``hook``."""
    for service in services:
        if service.hook == hook:
            return service
    offered = ", ".join(f"{s.id} ({s.hook})" for s in services) or "nothing"
    raise CommandError(f"no service for the {hook} hook ({where}); offered: {offered}",
                       EXIT_USAGE)


def fired_rules(response: Any) -> list[str]:
    """The rule ids of the cards in a response (``source.topic`` in urn:spine-cds:rule)."""
    rules = []
    for card in (response.get("cards") if isinstance(response, dict) else None) or ():
        source = card.get("source") if isinstance(card, dict) else None
        topic = source.get("topic") if isinstance(source, dict) else None
        if isinstance(topic, dict) and topic.get("system") == RULE_TOPIC_SYSTEM \
                and isinstance(topic.get("code"), str):
            rules.append(topic["code"])
    return sorted(rules)
