"""A small FHIR R4 server for tests: reads, patient searches, paging, failure injection.

    with FakeFhirServer([patient, condition], page_size=2) as fhir:
        fhir.require_token = "abc"          # 401 without "Authorization: Bearer abc"
        fhir.fail_next(1, status=503)       # the next request gets a 503
        ... fhir.base_url ...               # http://127.0.0.1:PORT/fhir
        assert fhir.requests[0].path == "/fhir/Condition?patient=p1"

It serves under ``/fhir`` so that allowlist-by-path can be tested, answers
``GET /fhir/Type/id`` and ``GET /fhir/Type?patient=X`` (or ``subject=X`` /
``_id=X``; ``X`` or ``Patient/X``), pages with ``_count`` (default
``page_size``) and ``_getpagesoffset``, and records every request.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # path and query as sent, e.g. "/fhir/Condition?patient=p1"
    headers: dict[str, str]


@dataclass(frozen=True)
class CannedResponse:
    status: int
    body: bytes
    content_type: str


def outcome(code: str, text: str, severity: str = "error") -> dict:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


class FakeFhirServer:
    """A threaded HTTP FHIR server on 127.0.0.1, started by ``start()`` or ``with``."""

    def __init__(
        self,
        resources: list[dict] | tuple[dict, ...] = (),
        *,
        page_size: int = 50,
        prefix: str = "/fhir",
        require_token: str | None = None,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.page_size = page_size
        self.require_token = require_token
        self.delay_seconds = 0.0
        self.next_link_override: str | None = None  # emitted instead of the real next link
        self.search_outcome: dict | None = None  # added as a search.mode=outcome entry
        self.resources: dict[str, dict[str, dict]] = {}
        self.requests: list[RecordedRequest] = []
        self._canned: deque[CannedResponse] = deque()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add(*resources)

    # -- setup -------------------------------------------------------------

    def add(self, *resources: dict) -> None:
        for resource in resources:
            self.resources.setdefault(resource["resourceType"], {})[resource["id"]] = resource

    def respond_next(self, n: int, status: int, body: bytes | dict | str = b"",
                     content_type: str = "application/fhir+json") -> None:
        """The next ``n`` requests get this answer instead of the real one."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._canned.extend(CannedResponse(status, body, content_type) for _ in range(n))

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next ``n`` requests fail with ``status`` and an OperationOutcome."""
        self.respond_next(n, status, outcome("transient", f"injected HTTP {status}"))

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.prefix

    def start(self) -> FakeFhirServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="fake-fhir", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeFhirServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering ---------------------------------------------------------

    def _take_canned(self) -> CannedResponse | None:
        with self._lock:
            return self._canned.popleft() if self._canned else None

    def answer(self, path: str, headers: dict[str, str]) -> tuple[int, dict | bytes, str]:
        """(status, body, content type) for ``GET path``."""
        if self.require_token is not None:
            if headers.get("authorization") != f"Bearer {self.require_token}":
                return 401, outcome("login", "a valid bearer token is required"), ""
        canned = self._take_canned()
        if canned is not None:
            return canned.status, canned.body, canned.content_type
        parts = urlsplit(path)
        if not (parts.path == self.prefix or parts.path.startswith(self.prefix + "/")):
            return 404, outcome("not-found", "no such endpoint"), ""
        segments = [s for s in parts.path[len(self.prefix):].split("/") if s]
        if len(segments) == 2:
            resource = self.resources.get(segments[0], {}).get(segments[1])
            if resource is None:
                return 404, outcome("not-found", "no such resource"), ""
            return 200, resource, ""
        if len(segments) == 1:
            return 200, self._search(segments[0], parse_qs(parts.query)), ""
        return 404, outcome("not-supported", "unsupported interaction"), ""

    def _search(self, rtype: str, query: dict[str, list[str]]) -> dict:
        def first(name: str) -> str | None:
            return query[name][0] if name in query else None

        matches = list(self.resources.get(rtype, {}).values())
        for param in ("patient", "subject"):
            wanted = first(param)
            if wanted is not None:
                ref = wanted if "/" in wanted else f"Patient/{wanted}"
                matches = [r for r in matches
                           if (r.get("subject") or r.get("patient") or {}).get("reference") == ref
                           or (rtype == "Patient" and f"Patient/{r.get('id')}" == ref)]
        if first("_id") is not None:
            matches = [r for r in matches if r.get("id") == first("_id")]
        count = int(first("_count") or self.page_size)
        offset = int(first("_getpagesoffset") or 0)
        page = matches[offset:offset + count]

        def link(at: int) -> str:
            params = {k: v[0] for k, v in query.items() if k != "_getpagesoffset"}
            params.update({"_count": str(count), "_getpagesoffset": str(at)})
            return f"{self.base_url}/{rtype}?{urlencode(params)}"

        links = [{"relation": "self", "url": link(offset)}]
        if offset + count < len(matches):
            next_url = self.next_link_override or link(offset + count)
            links.append({"relation": "next", "url": next_url})
        entries = [
            {"fullUrl": f"{self.base_url}/{rtype}/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in page
        ]
        if self.search_outcome is not None:
            entries.append({"resource": self.search_outcome, "search": {"mode": "outcome"}})
        return {"resourceType": "Bundle", "type": "searchset", "total": len(matches),
                "link": links, "entry": entries}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that gave up (timeouts) are expected in tests


class _Handler(BaseHTTPRequestHandler):
    fake: FakeFhirServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        fake = self.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        with fake._lock:
            fake.requests.append(RecordedRequest("GET", self.path, headers))
        if fake.delay_seconds:
            time.sleep(fake.delay_seconds)
        status, body, content_type = fake.answer(self.path, headers)
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass
