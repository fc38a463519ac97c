"""A small, defensive FHIR R4 REST client for fetching what prefetch did not bring.

Safety properties (each has a test):

- the bearer token goes only to the configured server: every URL requested,
  including ``Bundle.link[next]`` and the first request, must lie under the
  base URL (``servers.server_allowed``); redirects are never followed;
- one time budget per client: ``deadline = creation + total_timeout``; each
  request's read timeout is what remains, and the budget is checked between
  body chunks;
- retries only on connection errors, timeouts and 5xx, with short backoff
  inside the budget; never on 4xx;
- paging is bounded by ``page_limit`` and exceeding it is an error, never a
  silent truncation; a body over ``MAX_RESPONSE_BYTES`` is an error;
- error messages and log lines never carry the token, and carry the resource
  type rather than the URL (which holds patient ids).
"""

from __future__ import annotations

import json
import logging
import re
import time

import requests
from requests.auth import AuthBase
from requests.exceptions import ChunkedEncodingError

from .servers import normalise_base, server_allowed

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 50 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
BACKOFF_BASE = 0.1
BACKOFF_FACTOR = 3.0
_TOKEN_RE = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: safe in a header


class FhirFetchError(Exception):
    """Fetching from the FHIR server failed. The message is safe to show a client."""


class _Bearer(AuthBase):
    """Sets (or clears) ``Authorization``; as an explicit auth it also keeps
    requests from consulting ``~/.netrc`` or session-wide credentials."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._token:
            r.headers["Authorization"] = f"Bearer {self._token}"
        else:
            r.headers.pop("Authorization", None)
        return r

    def __repr__(self) -> str:  # never show the token
        return "<Bearer ***>" if self._token else "<no auth>"


def _resource_type(relative: str) -> str:
    head = relative.lstrip("/").split("?", 1)[0].split("/", 1)[0]
    return head if re.fullmatch(r"[A-Za-z]{1,64}", head or "") else "resource"


class FhirClient:
    """Reads and searches one FHIR server within one time budget."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None,
        *,
        connect_timeout: float,
        total_timeout: float,
        retries: int,
        page_limit: int,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = normalise_base(base_url)
        self._auth = _Bearer(access_token)
        self._token_ok = access_token is None or bool(_TOKEN_RE.match(access_token))
        self.connect_timeout = float(connect_timeout)
        self.total_timeout = float(total_timeout)
        self.retries = max(0, int(retries))
        self.page_limit = max(1, int(page_limit))
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self.deadline = time.monotonic() + self.total_timeout

    def __repr__(self) -> str:
        return f"FhirClient({self.base_url!r})"

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------

    def read(self, relative: str) -> dict | None:
        """GET ``base/relative``; the resource, or None on 404/410."""
        what = f"{_resource_type(relative)} read"
        status, body = self._get(self._url(relative), what)
        if status in (404, 410):
            return None
        resource = self._json(body, what)
        if not isinstance(resource.get("resourceType"), str):
            raise FhirFetchError(f"FHIR server answered the {what} with something not a resource")
        if resource["resourceType"] == "OperationOutcome":
            raise FhirFetchError(f"FHIR server answered the {what} with an OperationOutcome")
        return resource

    def search(self, relative: str) -> list[dict]:
        """GET ``base/relative`` and every next page; the resources of all entries."""
        what = f"{_resource_type(relative)} search"
        status, body = self._get(self._url(relative), what)
        if status in (404, 410):
            raise FhirFetchError(f"FHIR server does not support the {what} (HTTP {status})")
        return self._collect(self._bundle(body, what), what)

    def continue_search(self, first_page: dict, resource_type: str = "resource") -> list[dict]:
        """The resources of the pages after ``first_page`` (a Bundle already in hand,
        e.g. a paginated prefetch), following its next links on this server."""
        what = f"{resource_type} search"
        return self._collect(first_page, what)[len(bundle_resources(first_page)):]

    # -- internals ---------------------------------------------------------

    def _url(self, relative: str) -> str:
        return f"{self.base_url}/{relative.lstrip('/')}"

    def _collect(self, bundle: dict, what: str) -> list[dict]:
        resources = bundle_resources(bundle)
        pages = 1
        seen: set[str] = set()
        while (next_url := next_link(bundle)) is not None:
            if "://" not in next_url:  # a relative link is relative to the base
                next_url = self._url(next_url)
            if pages >= self.page_limit:
                raise FhirFetchError(
                    f"The {what} has more than {self.page_limit} pages, the most the service "
                    "follows (FHIR_PAGE_LIMIT); send the data as prefetch instead"
                )
            if not server_allowed(next_url, [self.base_url], allow_query=True):
                raise FhirFetchError(
                    f"The {what} returned a next link that is not on the FHIR server; "
                    "it was not followed"
                )
            if next_url in seen:
                raise FhirFetchError(f"The {what} returned a next link that loops")
            seen.add(next_url)
            status, body = self._get(next_url, what)
            if status in (404, 410):
                raise FhirFetchError(
                    f"FHIR server lost the next page of the {what} (HTTP {status})"
                )
            bundle = self._bundle(body, what)
            resources.extend(bundle_resources(bundle))
            pages += 1
        return resources

    @staticmethod
    def _json(body: bytes, what: str) -> dict:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FhirFetchError(
                f"FHIR server answered the {what} with something not JSON"
            ) from None
        if not isinstance(doc, dict):
            raise FhirFetchError(f"FHIR server answered the {what} with something not a resource")
        return doc

    def _bundle(self, body: bytes, what: str) -> dict:
        doc = self._json(body, what)
        if doc.get("resourceType") != "Bundle":
            raise FhirFetchError(f"FHIR server answered the {what} with something not a Bundle")
        return doc

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _out_of_time(self, what: str) -> FhirFetchError:
        return FhirFetchError(
            f"FHIR server did not complete the {what} within the {self.total_timeout:g} s "
            "time budget (FHIR_TOTAL_TIMEOUT)"
        )

    def _get(self, url: str, what: str) -> tuple[int, bytes]:
        """One GET with retries; (status, body) for 2xx, 404 and 410, else FhirFetchError."""
        if not self._token_ok:
            raise FhirFetchError("fhirAuthorization.access_token is not a usable bearer token")
        if not server_allowed(url, [self.base_url], allow_query=True):
            raise FhirFetchError(f"The {what} URL is not under the FHIR server base URL")
        attempt = 0
        while True:
            problem = self._attempt(url, what)
            if isinstance(problem, tuple):
                return problem
            # problem: a retryable reason (str)
            delay = BACKOFF_BASE * (BACKOFF_FACTOR**attempt)
            if attempt >= self.retries:
                raise FhirFetchError(
                    f"FHIR server failed the {what} ({problem}) after {attempt + 1} attempt(s)"
                )
            if self._remaining() <= delay:
                raise self._out_of_time(what)
            attempt += 1
            log.warning("FHIR %s: %s; retry %d in %.1f s", what, problem, attempt, delay)
            time.sleep(delay)

    def _attempt(self, url: str, what: str) -> tuple[int, bytes] | str:
        """One try: (status, body) when settled, or a retryable reason."""
        remaining = self._remaining()
        if remaining <= 0:
            raise self._out_of_time(what)
        started = time.monotonic()
        try:
            resp = self.session.get(
                url,
                headers={"Accept": "application/fhir+json"},
                auth=self._auth,
                timeout=(min(self.connect_timeout, remaining), remaining),
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            if self._remaining() <= 0:
                raise self._out_of_time(what) from None
            return "timeout"
        except requests.ConnectionError:
            if self._remaining() <= 0:
                raise self._out_of_time(what) from None
            return "connection failed"
        except requests.RequestException as exc:
            # never include str(exc): it may quote the URL or a header value
            raise FhirFetchError(
                f"The {what} could not be sent ({type(exc).__name__})"
            ) from None
        with resp:
            status = resp.status_code
            elapsed_ms = (time.monotonic() - started) * 1000
            log.info("FHIR %s: HTTP %d in %.0f ms", what, status, elapsed_ms)
            if status >= 500:
                return f"HTTP {status}"
            if status in (401, 403):
                raise FhirFetchError(f"FHIR server refused access to the {what} (HTTP {status})")
            if 300 <= status < 400:
                raise FhirFetchError(
                    f"FHIR server redirected the {what} (HTTP {status}); redirects are not followed"
                )
            if status >= 400 and status not in (404, 410):
                raise FhirFetchError(f"FHIR server rejected the {what} (HTTP {status})")
            if status < 200:  # pragma: no cover - requests handles 1xx
                raise FhirFetchError(f"FHIR server answered the {what} with HTTP {status}")
            try:
                body = self._read_body(resp, what)
            except (requests.Timeout, requests.ConnectionError, ChunkedEncodingError):
                if self._remaining() <= 0:
                    raise self._out_of_time(what) from None
                return "connection broke while reading"
            except requests.RequestException as exc:
                raise FhirFetchError(
                    f"FHIR server sent an unreadable answer to the {what} ({type(exc).__name__})"
                ) from None
        return status, body

    def _read_body(self, resp: requests.Response, what: str) -> bytes:
        too_big = FhirFetchError(
            f"FHIR server's answer to the {what} is larger than "
            f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MB"
        )
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        for chunk in resp.iter_content(CHUNK_BYTES):
            total += len(chunk)
            if total > MAX_RESPONSE_BYTES:
                raise too_big
            if self._remaining() <= 0:
                raise self._out_of_time(what)
            chunks.append(chunk)
        return b"".join(chunks)


def bundle_resources(bundle: dict) -> list[dict]:
    """The resources of a Bundle's entries, without search outcomes and OperationOutcomes."""
    out: list[dict] = []
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        if resource.get("resourceType") == "OperationOutcome":
            continue
        out.append(resource)
    return out


def next_link(bundle: dict) -> str | None:
    """The URL of ``Bundle.link[relation=next]``, if any."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None
