"""Validate CDS Hooks 2.0 documents: requests, responses, discovery, feedback.

One validator for the service (incoming requests and feedback, and our own
responses in tests) and the ``cds-service validate`` command. Each document is
checked against the project's JSON Schemas (``schemas/*.json``, draft 2020-12)
and then against the rules the spec states in prose, which a schema cannot
express clearly. Every problem is a :class:`~cds_service.errors.Violation`
with an RFC 6901 pointer and a message that says what to send instead; the
lists are deduplicated and sorted by pointer.

Requests are validated shallowly where they carry FHIR data: prefetch values
and draft orders are never walked (payloads may hold thousands of resources,
and an invalid order the service has no rule for must not fail the call).
Resources a service *returns* in actions are validated as FHIR R4 with the
``fhir.resources`` R4B models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import pydantic
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from cds_service.errors import Violation, pointer_join

__all__ = [
    "KINDS",
    "FRAGMENTS",
    "PREFETCH_TOKEN_FIELDS",
    "USER_TOKENS",
    "detect_kind",
    "validate_discovery",
    "validate_document",
    "validate_feedback",
    "validate_fhir_resource",
    "validate_fragment",
    "validate_request",
    "validate_response",
]

KINDS = ("discovery", "request", "response", "feedback")

#: Context fields a hook marks "Prefetch Token: Yes" (HL7 cds-hooks-library v1.0.1).
PREFETCH_TOKEN_FIELDS: dict[str, frozenset[str]] = {
    "patient-view": frozenset({"userId", "patientId", "encounterId"}),
    "order-select": frozenset({"userId", "patientId", "encounterId"}),
    "order-sign": frozenset({"userId", "patientId", "encounterId"}),
}
#: Context fields of those hooks that exist but are not prefetch tokens.
_NON_TOKEN_FIELDS: dict[str, frozenset[str]] = {
    "order-select": frozenset({"selections", "draftOrders"}),
    "order-sign": frozenset({"draftOrders"}),
}
#: User-identifying tokens any template may use (spec §Prefetch tokens).
USER_TOKENS = (
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
)

Path = tuple[str | int, ...]

# --------------------------------------------------------------------------
# Schemas, loaded and compiled once.
# --------------------------------------------------------------------------

_SCHEMA_FILES = (
    "common",
    "request",
    "context-patient-view",
    "context-order-select",
    "context-order-sign",
    "response",
    "discovery",
    "feedback",
)


def _load_schemas() -> dict[str, dict]:
    folder = resources.files(__package__).joinpath("schemas")
    return {
        name: json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        for name in _SCHEMA_FILES
    }


SCHEMAS: dict[str, dict] = _load_schemas()
_REGISTRY: Registry = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
_BASE = SCHEMAS["common"]["$id"].rsplit("/", 1)[0] + "/"

_FORMATS = FormatChecker(formats=())

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_HTTP_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+")
_RELATIVE_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


@_FORMATS.checks("date-time")
def _is_rfc3339_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    text = value[:17] + "59" + value[19:] if match.group(6) == "60" else value  # leap second
    try:
        datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


@_FORMATS.checks("uri")
def _is_absolute_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if any(c.isspace() or ord(c) < 0x20 for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.scheme or not _SCHEME.match(parts.scheme):
        return False
    if parts.scheme.lower() in ("http", "https"):
        try:
            return bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:  # bad port
            return False
    return bool(parts.netloc or parts.path)


_ANNOTATIONS = frozenset({"description", "title", "$comment", "deprecated"})


def _inline_refs(node: Any, resolver: Any) -> Any:
    """Replace every ``$ref`` by the schema it points to.

    The schemas are not recursive, and resolving references at validation time
    costs more than the rest of a request's validation, so compiled validators
    work on fully inlined copies. A ``$ref`` with validation siblings becomes
    an ``allOf`` so that both apply.
    """
    if isinstance(node, list):
        return [_inline_refs(item, resolver) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        resolved = resolver.lookup(node["$ref"])
        target = _inline_refs(resolved.contents, resolved.resolver)
        siblings = {k: _inline_refs(v, resolver) for k, v in node.items() if k != "$ref"}
        if all(k in _ANNOTATIONS for k in siblings):
            return {**target, **siblings}
        return {**siblings, "allOf": [target]}
    return {
        key: (value if key in ("enum", "const") else _inline_refs(value, resolver))
        for key, value in node.items()
    }


def _compile(schema: Mapping[str, Any], base: str | None = None) -> Draft202012Validator:
    resolver = _REGISTRY.resolver(base_uri=base or schema.get("$id", _BASE))
    inlined = _inline_refs(dict(schema), resolver)
    inlined.pop("$defs", None)
    return Draft202012Validator(inlined, format_checker=_FORMATS)


_VALIDATORS: dict[str, Draft202012Validator] = {
    name: _compile(SCHEMAS[name]) for name in _SCHEMA_FILES if name != "common"
}

#: Sub-schemas that ``validate_fragment`` accepts: name -> (schema file, $defs entry).
FRAGMENTS: dict[str, tuple[str, str]] = {
    "card": ("response", "card"),
    "source": ("response", "source"),
    "coding": ("response", "coding"),
    "overrideReason": ("response", "overrideReason"),
    "suggestion": ("response", "suggestion"),
    "action": ("response", "action"),
    "link": ("response", "link"),
    "service": ("discovery", "service"),
    "feedbackItem": ("feedback", "feedback"),
    "fhirAuthorization": ("request", "fhirAuthorization"),
}


@cache
def _fragment_validator(name: str) -> Draft202012Validator:
    file, definition = FRAGMENTS[name]
    return _compile({"$ref": f"{_BASE}{file}.json#/$defs/{definition}"})


# --------------------------------------------------------------------------
# Turning jsonschema errors into violations a client can act on.
# --------------------------------------------------------------------------

_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "object": "a JSON object",
    "array": "an array",
    "null": "null",
}

NULL_MESSAGE = "must not be null: give it a value, or omit the field if it is optional"
EMPTY_MESSAGES = {
    str: "must not be an empty string: give it a value, or omit the field if it is optional",
    list: "must not be an empty array: give it items, or omit the field if it is optional",
    dict: "must not be an empty object: give it content, or omit the field if it is optional",
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted_list(values: Iterable[object]) -> str:
    return ", ".join(_show(v) for v in values)


def _schema_violations(error: ValidationError, prefix: Path) -> list[Violation]:
    path = (*prefix, *error.absolute_path)
    here = pointer_join(*path)
    keyword = error.validator
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.validator_value
    instance = error.instance

    if keyword == "required":
        present = instance if isinstance(instance, Mapping) else {}
        return [
            Violation(pointer_join(*path, name), f"missing required field '{name}'")
            for name in value
            if name not in present
        ]
    if keyword == "additionalProperties" and isinstance(instance, Mapping):
        allowed = list(schema.get("properties", {}))
        patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
        extras = [
            k for k in instance if k not in allowed and not any(p.search(k) for p in patterns)
        ]
        hint = f"allowed fields: {', '.join(allowed)}" if allowed else "no fields are allowed"
        if "extension" in allowed:
            hint += "; put custom data under 'extension'"
        return [Violation(pointer_join(*path, k), f"unknown field '{k}' ({hint})") for k in extras]
    if keyword == "type":
        if instance is None:
            return [Violation(here, NULL_MESSAGE)]
        expected = [value] if isinstance(value, str) else list(value)
        wanted = " or ".join(_JSON_TYPES.get(t, t) for t in expected)
        got = _json_type(instance)
        return [Violation(here, f"must be {wanted}, not {_JSON_TYPES.get(got, got)}")]
    if keyword == "enum":
        return [Violation(here, f"must be one of {_quoted_list(value)}; got {_show(instance)}")]
    if keyword == "const":
        return [Violation(here, f"must be {_show(value)}; got {_show(instance)}")]
    if keyword == "minLength" and value == 1:
        return [Violation(here, EMPTY_MESSAGES[str])]
    if keyword == "minItems" and value == 1:
        return [Violation(here, EMPTY_MESSAGES[list])]
    if keyword == "minProperties" and value == 1:
        return [Violation(here, EMPTY_MESSAGES[dict])]
    if keyword in ("pattern", "format", "maxLength") and "x-message" in schema:
        message = schema["x-message"]
        if keyword == "maxLength" and isinstance(instance, str):
            message += f"; it has {len(instance)}"
        return [Violation(here, message)]
    if keyword == "pattern":
        return [Violation(here, f"must match the pattern {value}; got {_show(instance)}")]
    if keyword == "format":
        return [Violation(here, f"must be a valid {value}; got {_show(instance)}")]
    if keyword == "maxLength":
        return [Violation(here, f"must be at most {value} characters (it has {len(instance)})")]
    if keyword == "minimum":
        return [Violation(here, f"must be {value} or more; got {_show(instance)}")]
    if keyword == "uniqueItems":
        return [Violation(here, "must not contain the same item twice")]
    return [Violation(here, error.message)]


def _run_schema(validator: Draft202012Validator, doc: object, prefix: Path = ()) -> list[Violation]:
    out: list[Violation] = []
    for error in validator.iter_errors(doc):
        out.extend(_schema_violations(error, prefix))
    return out


def _natural_key(violation: Violation) -> tuple:
    parts = violation.pointer.split("/")[1:] if violation.pointer else []
    return (
        tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts),
        violation.message,
    )


def _finish(violations: Iterable[Violation]) -> list[Violation]:
    return sorted(set(violations), key=_natural_key)


def _empty_values(node: object, path: Path, allowed_empty: frozenset[Path]) -> list[Violation]:
    """Report every null, "", [] and {} below ``node`` (spec §Use of JSON)."""
    out: list[Violation] = []
    stack: list[tuple[object, Path]] = [(node, path)]
    while stack:
        value, here = stack.pop()
        if value is None:
            out.append(Violation(pointer_join(*here), NULL_MESSAGE))
        elif isinstance(value, dict):
            if not value:
                out.append(Violation(pointer_join(*here), EMPTY_MESSAGES[dict]))
            stack.extend((v, (*here, k)) for k, v in value.items())
        elif isinstance(value, list):
            if not value and here not in allowed_empty:
                out.append(Violation(pointer_join(*here), EMPTY_MESSAGES[list]))
            stack.extend((v, (*here, i)) for i, v in enumerate(value))
        elif isinstance(value, str) and not value:
            out.append(Violation(pointer_join(*here), EMPTY_MESSAGES[str]))
    return out


# --------------------------------------------------------------------------
# FHIR resources carried in actions.
# --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _fhir_class(resource_type: str) -> type | None:
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource as FhirResource

    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, ImportError, AttributeError):
        return None
    if not issubclass(cls, FhirResource) or resource_type in ("Resource", "DomainResource"):
        return None
    return cls


def _fhir_error_message(resource_type: str, error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    loc = error.get("loc") or ()
    last = loc[-1] if loc else None
    if kind in ("missing", "model_field_validation.missing"):
        detail = f"missing required element '{last}'"
    elif kind == "extra_forbidden":
        detail = f"'{last}' is not an element here"
    elif kind == "list_type":
        detail = "must be an array (this element repeats in FHIR)"
    else:
        detail = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"invalid FHIR R4 {resource_type}: {detail}"


def _bad_codes(model: Any, path: Path) -> list[Violation]:
    """Codes outside a complete required value set (``fhir.resources`` does not check them)."""
    from fhir.resources.R4B import FHIRAbstractModel

    out: list[Violation] = []
    stack: list[tuple[Any, Path]] = [(model, path)]
    while stack:
        node, here = stack.pop()
        for name, field in type(node).model_fields.items():
            value = getattr(node, name, None)
            if value is None:
                continue
            key = field.alias or name
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            allowed = extra.get("enum_values")
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                where = (*here, key, index) if isinstance(value, list) else (*here, key)
                if isinstance(item, FHIRAbstractModel):
                    stack.append((item, where))
                elif (
                    allowed and "+" not in allowed and isinstance(item, str) and item not in allowed
                ):
                    out.append(
                        Violation(
                            pointer_join(*where),
                            f"invalid FHIR R4 {type(model).__name__}: {_show(item)} is not in "
                            f"the required value set; use one of {_quoted_list(allowed)}",
                        )
                    )
    return out


def validate_fhir_resource(resource: object, path: Path = ()) -> list[Violation]:
    """Validate one FHIR R4 resource (R4B models); pointers are under ``path``."""
    here = pointer_join(*path)
    if not isinstance(resource, dict):
        return [Violation(here, "must be a FHIR resource (a JSON object with a resourceType)")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return [
            Violation(
                pointer_join(*path, "resourceType"),
                "missing required field 'resourceType': a FHIR resource names its type, "
                'e.g. "resourceType": "ServiceRequest"',
            )
        ]
    cls = _fhir_class(resource_type)
    if cls is None:
        return [
            Violation(
                pointer_join(*path, "resourceType"),
                f"{_show(resource_type)} is not a FHIR R4 resource type",
            )
        ]
    try:
        model = cls.model_validate(resource)
    except pydantic.ValidationError as exc:
        out = [
            Violation(
                pointer_join(*path, *(str(p) if not isinstance(p, int) else p for p in e["loc"])),
                _fhir_error_message(resource_type, e),
            )
            for e in exc.errors()
        ]
        # Field errors stop pydantic before the model-level checks of required
        # elements; report those too so one round trip fixes the resource.
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            key = field.alias or name
            if extra.get("element_required") and resource.get(key) is None:
                out.append(
                    Violation(
                        pointer_join(*path, key),
                        _fhir_error_message(resource_type, {"type": "missing", "loc": (key,)}),
                    )
                )
        return _finish(out)
    except Exception as exc:  # noqa: BLE001 - a model bug must not become a 500
        return [Violation(here, f"invalid FHIR R4 {resource_type}: {exc}")]
    return _finish(_bad_codes(model, path))


# --------------------------------------------------------------------------
# Semantic checks (rules the spec states in prose).
# --------------------------------------------------------------------------


def _check_action(action: object, path: Path) -> list[Violation]:
    if not isinstance(action, dict):
        return []
    out: list[Violation] = []
    kind = action.get("type")
    resource = action.get("resource")
    if kind in ("create", "update"):
        if "resource" not in action:
            out.append(
                Violation(
                    pointer_join(*path, "resource"),
                    f"missing required field 'resource': a {kind} action carries the complete "
                    f"FHIR resource to {kind}",
                )
            )
        elif isinstance(resource, str):
            out.append(
                Violation(
                    pointer_join(*path, "resource"),
                    f"must be a FHIR resource object for a {kind} action, not a string",
                )
            )
    elif kind == "delete":
        if isinstance(resource, str):
            out.append(
                Violation(
                    pointer_join(*path, "resource"),
                    "a string 'resource' on a delete action is DEPRECATED: send the relative "
                    "reference in 'resourceId' instead (e.g. \"resourceId\": "
                    "\"ServiceRequest/123\") and drop 'resource'",
                )
            )
        if "resourceId" not in action:
            out.append(
                Violation(
                    pointer_join(*path, "resourceId"),
                    "missing required field 'resourceId': a delete action names the resource "
                    "to delete as a relative reference 'ResourceType/id'",
                )
            )
    if isinstance(resource, dict):
        out.extend(validate_fhir_resource(resource, (*path, "resource")))
    return out


def _check_suggestion(suggestion: object, path: Path) -> list[Violation]:
    if not isinstance(suggestion, dict):
        return []
    actions = suggestion.get("actions")
    out: list[Violation] = []
    if isinstance(actions, list):
        for i, action in enumerate(actions):
            out.extend(_check_action(action, (*path, "actions", i)))
    return out


def _check_link(link: object, path: Path) -> list[Violation]:
    if not isinstance(link, dict):
        return []
    out: list[Violation] = []
    kind = link.get("type")
    if "appContext" in link and kind != "smart":
        out.append(
            Violation(
                pointer_join(*path, "appContext"),
                "appContext is only allowed on links of type 'smart': remove it, or make the "
                'link a SMART app launch ("type": "smart")',
            )
        )
    url = link.get("url")
    if kind == "absolute" and isinstance(url, str) and url and not _HTTP_URL.match(url):
        out.append(
            Violation(
                pointer_join(*path, "url"),
                "an 'absolute' link must be an absolute http(s) URL, e.g. https://example.org/page",
            )
        )
    return out


def _check_card(card: object, path: Path) -> list[Violation]:
    if not isinstance(card, dict):
        return []
    out: list[Violation] = []
    suggestions = card.get("suggestions")
    if suggestions is not None and "selectionBehavior" not in card:
        out.append(
            Violation(
                pointer_join(*path, "selectionBehavior"),
                "missing required field 'selectionBehavior': a card with suggestions must say "
                "how they may be chosen, 'at-most-one' or 'any'",
            )
        )
    if isinstance(suggestions, list):
        recommended = [
            i
            for i, s in enumerate(suggestions)
            if isinstance(s, dict) and s.get("isRecommended") is True
        ]
        if card.get("selectionBehavior") == "at-most-one" and len(recommended) > 1:
            for i in recommended[1:]:
                out.append(
                    Violation(
                        pointer_join(*path, "suggestions", i, "isRecommended"),
                        "only one suggestion may be recommended when selectionBehavior is "
                        "'at-most-one'; use 'any' to recommend several",
                    )
                )
        for i, suggestion in enumerate(suggestions):
            out.extend(_check_suggestion(suggestion, (*path, "suggestions", i)))
    links = card.get("links")
    if isinstance(links, list):
        for i, link in enumerate(links):
            out.extend(_check_link(link, (*path, "links", i)))
    return out


_TOKEN = re.compile(r"\{\{(.*?)\}\}")
_CONTEXT_TOKEN = re.compile(r"^context\.([A-Za-z_][A-Za-z0-9_\-]*)$")


def _token_problem(token: str, hook: str | None) -> str | None:
    if token in USER_TOKENS:
        return None
    known = PREFETCH_TOKEN_FIELDS.get(hook or "")
    if known is not None:
        choices = ", ".join(
            [f"{{{{context.{f}}}}}" for f in sorted(known)] + [f"{{{{{u}}}}}" for u in USER_TOKENS]
        )
    else:
        choices = "{{context.<root-level field>}}, " + ", ".join(
            f"{{{{{u}}}}}" for u in USER_TOKENS
        )
    shown = f"'{{{{{token}}}}}'"
    match = _CONTEXT_TOKEN.match(token)
    if match is None:
        if token.startswith("context.") and "." in token[len("context.") :]:
            reason = "only root-level context fields can be prefetch tokens"
        elif token.strip() != token:
            reason = "a token holds only the field path, without spaces"
        else:
            reason = "a token is a context field path or a user identifier"
        return f"{shown} is not a valid prefetch token ({reason}); use one of {choices}"
    field = match.group(1)
    if known is None or field in known:
        return None
    if field in _NON_TOKEN_FIELDS.get(hook or "", ()):
        return (
            f"{shown}: context field '{field}' of hook '{hook}' is not a prefetch token; "
            f"use one of {choices}"
        )
    return f"{shown}: hook '{hook}' has no context field '{field}'; use one of {choices}"


def _check_prefetch_templates(prefetch: object, hook: str | None, path: Path) -> list[Violation]:
    if not isinstance(prefetch, dict):
        return []
    out: list[Violation] = []
    for key, template in prefetch.items():
        if not isinstance(template, str):
            continue
        where = pointer_join(*path, key)
        for token in _TOKEN.findall(template):
            problem = _token_problem(token, hook)
            if problem:
                out.append(Violation(where, problem))
        rest = _TOKEN.sub("", template)
        if "{{" in rest or "}}" in rest:
            out.append(
                Violation(
                    where, "unbalanced token delimiters: a token is written {{context.field}}"
                )
            )
    return out


def _check_service(service: object, path: Path) -> list[Violation]:
    if not isinstance(service, dict):
        return []
    hook = service.get("hook") if isinstance(service.get("hook"), str) else None
    return _check_prefetch_templates(service.get("prefetch"), hook, (*path, "prefetch"))


def _check_feedback_item(item: object, path: Path) -> list[Violation]:
    if not isinstance(item, dict):
        return []
    if item.get("outcome") == "accepted" and "acceptedSuggestions" not in item:
        return [
            Violation(
                pointer_join(*path, "acceptedSuggestions"),
                "missing required field 'acceptedSuggestions': an 'accepted' outcome lists the "
                'accepted suggestions, e.g. [{"id": "<suggestion uuid>"}]',
            )
        ]
    return []


def _check_selections(context: dict) -> list[Violation]:
    selections = context.get("selections")
    draft = context.get("draftOrders")
    if not isinstance(selections, list):
        return []
    entries = draft.get("entry") if isinstance(draft, dict) else None
    present: set[str] = set()
    if isinstance(entries, list):
        for entry in entries:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                rtype, rid = resource.get("resourceType"), resource.get("id")
                if isinstance(rtype, str) and isinstance(rid, str):
                    present.add(f"{rtype}/{rid}")
    return [
        Violation(
            pointer_join("context", "selections", i),
            f"'{selection}' is not in context.draftOrders: each selection must be the "
            "'ResourceType/id' of a resource in draftOrders.entry",
        )
        for i, selection in enumerate(selections)
        if isinstance(selection, str)
        and _RELATIVE_REFERENCE.match(selection)
        and selection not in present
    ]


# --------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------


def _is_covered(violation: Violation, pointers: set[str]) -> bool:
    return violation.message.startswith("invalid FHIR R4") and violation.pointer in pointers


def validate_request(doc: object, hook: str | None = None) -> list[Violation]:
    """Validate a hook call; ``hook`` is the service's hook (defaults to ``doc["hook"]``)."""
    out = _run_schema(_VALIDATORS["request"], doc)
    if not isinstance(doc, dict):
        return _finish(out)
    doc_hook = doc.get("hook") if isinstance(doc.get("hook"), str) else None
    if hook is not None and doc_hook and doc_hook != hook:
        out.append(
            Violation("/hook", f"this service is invoked on hook '{hook}', not '{doc_hook}'")
        )
    effective = hook or doc_hook
    context = doc.get("context")
    context_validator = _VALIDATORS.get(f"context-{effective}")
    if context_validator is not None and isinstance(context, dict):
        out.extend(_run_schema(context_validator, context, ("context",)))
        if effective == "order-select":
            out.extend(_check_selections(context))
    if "fhirAuthorization" in doc and "fhirServer" not in doc:
        out.append(
            Violation(
                "/fhirAuthorization",
                "fhirAuthorization requires fhirServer: send the base URL of the FHIR server "
                "the token is for in 'fhirServer', or leave out fhirAuthorization",
            )
        )
    return _finish(out)


def validate_response(doc: object) -> list[Violation]:
    """Validate a service response (cards and systemActions)."""
    out = _run_schema(_VALIDATORS["response"], doc)
    if not isinstance(doc, dict):
        return _finish(out)
    empties = _empty_values(doc, (), frozenset({("cards",)}))
    semantic: list[Violation] = []
    cards = doc.get("cards")
    if isinstance(cards, list):
        for i, card in enumerate(cards):
            semantic.extend(_check_card(card, ("cards", i)))
    actions = doc.get("systemActions")
    if isinstance(actions, list):
        for i, action in enumerate(actions):
            semantic.extend(_check_action(action, ("systemActions", i)))
    covered = {v.pointer for v in empties}
    return _finish([*out, *empties, *(v for v in semantic if not _is_covered(v, covered))])


def validate_discovery(doc: object) -> list[Violation]:
    """Validate a discovery response (``GET /cds-services``)."""
    out = _run_schema(_VALIDATORS["discovery"], doc)
    if not isinstance(doc, dict):
        return _finish(out)
    out.extend(_empty_values(doc, (), frozenset({("services",)})))
    services = doc.get("services")
    if isinstance(services, list):
        seen: dict[tuple[object, object], int] = {}
        for i, service in enumerate(services):
            out.extend(_check_service(service, ("services", i)))
            if isinstance(service, dict):
                key = (service.get("id"), service.get("hook"))
                if key in seen and all(isinstance(k, str) for k in key):
                    out.append(
                        Violation(
                            pointer_join("services", i, "id"),
                            f"service '{key[0]}' for hook '{key[1]}' is already listed at "
                            f"/services/{seen[key]}; an id may repeat only for different hooks",
                        )
                    )
                seen.setdefault(key, i)
    return _finish(out)


def validate_feedback(doc: object) -> list[Violation]:
    """Validate a feedback request (``POST /cds-services/{id}/feedback``)."""
    out = _run_schema(_VALIDATORS["feedback"], doc)
    if not isinstance(doc, dict):
        return _finish(out)
    out.extend(_empty_values(doc, (), frozenset()))
    items = doc.get("feedback")
    if isinstance(items, list):
        for i, item in enumerate(items):
            out.extend(_check_feedback_item(item, ("feedback", i)))
    return _finish(out)


_FRAGMENT_CHECKS: dict[str, Callable[[object, Path], list[Violation]]] = {
    "card": _check_card,
    "suggestion": _check_suggestion,
    "action": _check_action,
    "link": _check_link,
    "service": _check_service,
    "feedbackItem": _check_feedback_item,
}


def validate_fragment(doc: object, definition: str) -> list[Violation]:
    """Validate part of a document (a lone card, source, action, ...); see ``FRAGMENTS``.

    Pointers are relative to the fragment.
    """
    if definition not in FRAGMENTS:
        raise ValueError(
            f"unknown fragment {definition!r}; expected one of {', '.join(sorted(FRAGMENTS))}"
        )
    out = _run_schema(_fragment_validator(definition), doc)
    empties = [] if definition == "fhirAuthorization" else _empty_values(doc, (), frozenset())
    check = _FRAGMENT_CHECKS.get(definition)
    semantic = check(doc, ()) if check else []
    covered = {v.pointer for v in empties}
    return _finish([*out, *empties, *(v for v in semantic if not _is_covered(v, covered))])


def detect_kind(doc: object) -> str | None:
    """Guess which CDS Hooks document ``doc`` is, or None."""
    if not isinstance(doc, dict):
        return None
    if "services" in doc:
        return "discovery"
    if "hook" in doc and "hookInstance" in doc:
        return "request"
    if "cards" in doc or "systemActions" in doc:
        return "response"
    if "feedback" in doc:
        return "feedback"
    return None


_BY_KIND: dict[str, Callable[[object], list[Violation]]] = {
    "discovery": validate_discovery,
    "request": validate_request,
    "response": validate_response,
    "feedback": validate_feedback,
}


def validate_document(doc: object, kind: str | None = None) -> tuple[str, list[Violation]]:
    """Validate ``doc`` as ``kind`` (detected when None); return the kind and the violations."""
    if kind is None:
        kind = detect_kind(doc)
        if kind is None:
            raise ValueError(
                "cannot tell which CDS Hooks document this is: expected a JSON object with "
                "'services' (discovery), 'hook' and 'hookInstance' (request), 'cards' "
                "(response) or 'feedback' (feedback); give the kind explicitly"
            )
    elif kind not in _BY_KIND:
        raise ValueError(f"unknown document kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind, _BY_KIND[kind](doc)
