"""Gather the FHIR data a service needs: from prefetch where given, else from fhirServer.

CDS Hooks 2.0 §"Providing FHIR Resources to a CDS Service" and CONTRACT §3:

- a prefetch value may be a Bundle (possibly holding more than the template
  asked for, possibly paginated), a single resource, an OperationOutcome (the
  client's fetch failed), ``null`` or absent;
- for anything not usable the service fetches it itself from ``fhirServer``
  with the ``fhirAuthorization`` bearer token, following ``Bundle.link[next]``;
- required data that can be neither prefetched nor fetched is a 412 that names
  every missing key; optional data is left out with a note.

``fhirServer`` is checked against ``FHIR_SERVERS`` before anything else, and a
server that is not allowed is never contacted (400).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from .. import metrics
from ..config import KEYS_BY_NAME
from ..errors import Violation, bad_request, pointer_join, precondition_failed
from ..time_budget import Deadline
from .client import FhirClient, FhirFetchError, bundle_resources, next_link
from .servers import server_allowed

log = logging.getLogger(__name__)

#: prefetch tokens for the current user -> the resource type of ``context.userId``
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
_TOKEN_RE = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")
_REFERENCE_RE = re.compile(r"[A-Z][A-Za-z]{0,63}/[A-Za-z0-9\-.]{1,64}")
_READ_RE = re.compile(r"[A-Z][A-Za-z]{0,63}/[^/?#]+(/_history/[^/?#]+)?")


@dataclass(frozen=True)
class PrefetchSpec:
    key: str
    template: str  # e.g. "Condition?patient={{context.patientId}}"
    required: bool


@dataclass
class GatheredData:
    #: key -> resources (single-resource keys give a list of 0..1)
    resources: dict[str, list[dict]] = field(default_factory=dict)
    #: key -> "prefetch" | "fetched" | "absent"
    sources: dict[str, str] = field(default_factory=dict)
    #: non-fatal remarks, free of patient data
    notes: list[str] = field(default_factory=list)


# -- templates --------------------------------------------------------------


def user_ids_from_context(context: dict) -> dict[str, str]:
    """``{"userPractitionerId": "123"}`` from ``context.userId = "Practitioner/123"``."""
    user = context.get("userId") if isinstance(context, dict) else None
    if not isinstance(user, str) or "/" not in user:
        return {}
    head, _, rid = user.rstrip("/").rpartition("/")
    rtype = head.rsplit("/", 1)[-1]  # also accepts an absolute reference
    for token, token_type in USER_TOKENS.items():
        if token_type == rtype and rid:
            return {token: rid}
    return {}


def _quote(text: str) -> str:
    # A plain relative reference ("Practitioner/123", e.g. {{context.userId}}
    # used as a read) keeps its slash; everything else is one opaque value.
    if _REFERENCE_RE.fullmatch(text):
        return text
    return quote(text, safe="")


def render_template(template: str, context: dict, user_ids: dict | None = None) -> str:
    """Replace prefetch tokens with URL-quoted values.

    ``{{context.x}}`` takes the root-level primitive ``context.x``;
    ``{{userPractitionerId}}`` and its siblings come from ``user_ids``, or else
    are derived from ``context.userId``. A token with no value raises
    ``KeyError(token)``; a token that cannot have one (nested path,
    non-primitive value, unknown name, unbalanced braces) raises ``ValueError``.
    """
    context = context if isinstance(context, dict) else {}
    ids = user_ids_from_context(context)
    ids.update(user_ids or {})

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("context."):
            fieldname = name[len("context."):]
            if not fieldname or "." in fieldname:
                raise ValueError(f"{{{{{name}}}}} is not a root-level context field")
            value = context.get(fieldname)
            if value is None or value == "":
                raise KeyError(name)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, (str, int, float)):
                text = str(value)
            else:
                raise ValueError(f"{{{{{name}}}}} is not a primitive context value")
        elif name in USER_TOKENS:
            value = ids.get(name)
            if value is None or value == "":
                raise KeyError(name)
            text = str(value)
        else:
            raise ValueError(f"{{{{{name}}}}} is not a prefetch token")
        return _quote(text)

    rendered = _TOKEN_RE.sub(substitute, template)
    if "{{" in rendered or "}}" in rendered:
        raise ValueError("the template has an unbalanced prefetch token")
    return rendered


def is_read(relative: str) -> bool:
    """True for an instance read (``Type/id`` or ``Type/id/_history/v``)."""
    return _READ_RE.fullmatch(relative) is not None


# -- gathering --------------------------------------------------------------


class _Unavailable(Exception):
    """The data for one key cannot be had; the message says why (no patient data)."""


def _setting(settings: dict, name: str):
    value = settings.get(name)
    return KEYS_BY_NAME[name].default if value is None else value


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _has_error_outcome(bundle: dict) -> bool:
    for entry in _list(bundle.get("entry")):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "OperationOutcome":
            for issue in _list(resource.get("issue")):
                if isinstance(issue, dict) and issue.get("severity") in ("error", "fatal"):
                    return True
    return False


def _check_server(request: dict, settings: dict) -> str | None:
    server = request.get("fhirServer")
    if server is None:
        return None
    allowed = settings.get("FHIR_SERVERS")
    if isinstance(server, str) and server_allowed(server, allowed):
        return server
    if allowed is None:
        why = ("fhirServer must be an http or https base URL without userinfo, query, "
               "fragment or dot segments")
    else:
        why = ("This service only fetches from its configured FHIR servers; "
               "send the data as prefetch, or call from an allowed FHIR server")
    raise bad_request("fhirServer is not an allowed FHIR server", [Violation("/fhirServer", why)])


def _token(request: dict) -> str | None:
    auth = request.get("fhirAuthorization")
    token = auth.get("access_token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) and token else None


def gather(
    specs: list[PrefetchSpec],
    request: dict,
    settings: dict,
    session: requests.Session | None = None,
    deadline: Deadline | None = None,
) -> GatheredData:
    """The data for every spec key, prefetched or fetched; see the module docstring.

    All fetches share one time budget: ``FHIR_TOTAL_TIMEOUT``, or what is left
    before ``deadline`` (the hook call's budget) when that is less.

    Raises ``ClientError`` 400 for a disallowed ``fhirServer`` (checked first,
    never contacted) and 412 listing every required key that is unavailable.
    """
    server = _check_server(request, settings)
    prefetch = request.get("prefetch")
    prefetch = prefetch if isinstance(prefetch, dict) else {}
    context = request.get("context")
    context = context if isinstance(context, dict) else {}
    out = GatheredData()
    missing: list[Violation] = []
    client: FhirClient | None = None

    def get_client() -> FhirClient:
        nonlocal client
        if server is None:
            raise _Unavailable("there is no fhirServer to fetch it from")
        if client is None:
            budget = float(_setting(settings, "FHIR_TOTAL_TIMEOUT"))
            if deadline is not None:
                budget = max(0.0, min(budget, deadline.remaining()))
            client = FhirClient(
                server,
                _token(request),
                connect_timeout=float(_setting(settings, "FHIR_CONNECT_TIMEOUT")),
                total_timeout=budget,
                retries=int(_setting(settings, "FHIR_RETRIES")),
                page_limit=int(_setting(settings, "FHIR_PAGE_LIMIT")),
                session=session,
            )
        return client

    def fetch(spec: PrefetchSpec) -> list[dict]:
        fhir = get_client()
        try:
            relative = render_template(spec.template, context)
        except KeyError as exc:
            raise _Unavailable(f"the template needs {{{{{exc.args[0]}}}}}, which has no value "
                               "in this request") from None
        except ValueError as exc:
            raise _Unavailable(f"the template cannot be filled in: {exc}") from None
        interaction = "read" if is_read(relative) else "search"
        try:
            with metrics.fhir_fetch(interaction):
                if interaction == "read":
                    resource = fhir.read(relative)
                    return [resource] if resource is not None else []
                return fhir.search(relative)
        except FhirFetchError as exc:
            raise _Unavailable(f"fetching it failed: {exc}") from None

    try:
        for spec in specs:
            key = spec.key
            value = prefetch.get(key)
            why_fetch: str | None = None  # set when the prefetch value is unusable
            if value is None:
                why_fetch = "was null" if key in prefetch else "was not provided"
            elif not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
                why_fetch = "held something that is not a FHIR resource"
            elif value["resourceType"] == "OperationOutcome":
                why_fetch = "held an OperationOutcome"
            elif value["resourceType"] == "Bundle":
                found = bundle_resources(value)
                if not found and _has_error_outcome(value):
                    why_fetch = "held only an error OperationOutcome"
                elif next_link(value) is not None:
                    # a paginated prefetch: the rest is on the FHIR server
                    try:
                        rtype = spec.template.split("?", 1)[0].split("/", 1)[0]
                        fhir = get_client()
                        with metrics.fhir_fetch("search"):
                            found = found + fhir.continue_search(value, rtype)
                    except (_Unavailable, FhirFetchError) as exc:
                        reason = f"is paginated and its next pages could not be fetched: {exc}"
                        if spec.required:
                            missing.append(Violation(
                                pointer_join("prefetch", key),
                                f"The prefetched Bundle {reason}. Send prefetch '{key}' "
                                f"({spec.template}) in one Bundle, without a next link.",
                            ))
                            continue
                        out.notes.append(f"prefetch key '{key}' {reason}; "
                                         "evaluated with its first page only")
                if why_fetch is None:
                    out.resources[key] = found
                    out.sources[key] = "prefetch"
            else:
                out.resources[key] = [value]
                out.sources[key] = "prefetch"

            if why_fetch is None:
                log.debug("prefetch key %s: prefetched, %d resource(s)", key,
                         len(out.resources[key]))
                continue
            try:
                out.resources[key] = fetch(spec)
            except _Unavailable as exc:
                log.info("prefetch key %s: %s and unavailable: %s", key, why_fetch, exc)
                if spec.required:
                    missing.append(Violation(
                        pointer_join("prefetch", key),
                        f"Prefetch '{key}' {why_fetch} and {exc}. Send prefetch '{key}' "
                        f"({spec.template}), or fhirServer and fhirAuthorization "
                        "so the service can fetch it.",
                    ))
                else:
                    out.resources[key] = []
                    out.sources[key] = "absent"
                    out.notes.append(f"prefetch key '{key}' {why_fetch} and could not be "
                                     f"fetched ({exc}); evaluated without it")
                continue
            out.sources[key] = "fetched"
            log.info("prefetch key %s: %s; fetched %d resource(s)", key, why_fetch,
                     len(out.resources[key]))
            if why_fetch != "was not provided" and why_fetch != "was null":
                out.notes.append(f"prefetch key '{key}' {why_fetch}; "
                                 "fetched from the FHIR server")
    finally:
        if client is not None:
            client.close()

    if missing:
        raise precondition_failed("Required data is neither prefetched nor fetchable", missing)
    return out
