"""Card, suggestion and action types that can only hold CDS Hooks 2.0-conformant data.

Construction checks what the spec and CONTRACT §4 require: a summary under 140
characters, a known indicator, a ``selectionBehavior`` whenever there are
suggestions, a ``display`` on every override reason, ``appContext`` only on
SMART links, and a valid FHIR R4 resource in every create/update action. A
violation raises ``CardError``; it is a defect in the service, never the client.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

INDICATORS = ("info", "warning", "critical")
SELECTION_BEHAVIORS = ("at-most-one", "any")
RULE_TOPIC_SYSTEM = "urn:spine-cds:rule"
SUMMARY_LIMIT = 140


class CardError(ValueError):
    """A card the service built breaks the protocol contract."""


def _absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@lru_cache(maxsize=64)
def _model(resource_type: str):
    try:
        return get_fhir_model_class(resource_type)
    except KeyError:
        return None


_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
# Fields that change from one suggestion to the next while the structure stays the same.
_PER_PATIENT = ("id", "subject", "encounter", "requester", "reasonReference", "note")


def _structure(resource: dict) -> tuple[bytes, list[str], list[str]]:
    """The resource with its per-patient values replaced, and those values."""
    ids = [resource["id"]] if "id" in resource else []
    refs: list[str] = []
    shape = dict(resource)
    for name in _PER_PATIENT:
        value = shape.get(name)
        if isinstance(value, dict) and "reference" in value:
            refs.append(value["reference"])
            shape[name] = {"reference": "Patient/placeholder"}
        elif name == "reasonReference" and isinstance(value, list):
            refs += [r.get("reference") for r in value if isinstance(r, dict)]
            shape[name] = [{"reference": "Patient/placeholder"}]
        elif name == "note" and isinstance(value, list):
            shape[name] = [{"text": "placeholder"}] if all(
                isinstance(n, dict) and isinstance(n.get("text"), str) and n["text"]
                for n in value) else value
    if ids:
        shape["id"] = "placeholder"
    return orjson.dumps(shape, option=orjson.OPT_SORT_KEYS), ids, refs


@lru_cache(maxsize=512)
def _check_structure(shape: bytes) -> None:
    resource = orjson.loads(shape)
    model = _model(str(resource.get("resourceType")))
    if model is None:
        raise CardError(f"unknown FHIR resource type {resource.get('resourceType')!r}")
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        raise CardError(f"invalid {resource['resourceType']}: {exc.errors()[0]['msg']}") from None


def check_fhir_resource(resource: dict) -> None:
    """Raise CardError unless ``resource`` is a valid FHIR R4 resource.

    The fhir.resources model validates each distinct structure once; the values
    that differ per patient (ids, references, notes) are checked by pattern.
    """
    shape, ids, refs = _structure(resource)
    if not all(isinstance(i, str) and _FHIR_ID.match(i) for i in ids):
        raise CardError(f"invalid FHIR id in {resource.get('resourceType')}")
    if not all(isinstance(r, str) and _REFERENCE.match(r) for r in refs):
        raise CardError(f"invalid reference in {resource.get('resourceType')}")
    _check_structure(shape)


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str

    def __post_init__(self) -> None:
        if not (self.system and self.code and self.display):
            raise CardError("a Coding needs system, code and display")

    def to_json(self) -> dict:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class Action:
    type: str
    description: str
    resource: dict | None = None
    resource_id: str | None = None

    def __post_init__(self) -> None:
        if not self.description:
            raise CardError("an action needs a description")
        if self.type in ("create", "update"):
            if not isinstance(self.resource, dict) or self.resource_id is not None:
                raise CardError(f"a {self.type} action carries a resource and no resourceId")
            check_fhir_resource(self.resource)
        elif self.type == "delete":
            if self.resource is not None or not self.resource_id or \
                    self.resource_id.count("/") != 1:
                raise CardError("a delete action carries only a relative resourceId Type/id")
        else:
            raise CardError(f"unknown action type {self.type!r}")

    def to_json(self) -> dict:
        out: dict = {"type": self.type, "description": self.description}
        if self.resource is not None:
            out["resource"] = self.resource
        if self.resource_id is not None:
            out["resourceId"] = self.resource_id
        return out


@dataclass(frozen=True)
class Suggestion:
    label: str
    actions: tuple[Action, ...]
    is_recommended: bool = False
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if not self.label or not self.actions:
            raise CardError("a suggestion needs a label and at least one action")

    def to_json(self) -> dict:
        out: dict = {"label": self.label, "uuid": self.uuid,
                     "actions": [a.to_json() for a in self.actions]}
        if self.is_recommended:
            out["isRecommended"] = True
        return out


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    type: str = "absolute"
    app_context: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ("absolute", "smart") or not self.label or not _absolute(self.url):
            raise CardError("a link needs a label, an absolute URL and type absolute|smart")
        if self.app_context is not None and self.type != "smart":
            raise CardError("appContext is only valid on smart links")

    def to_json(self) -> dict:
        out = {"label": self.label, "url": self.url, "type": self.type}
        if self.app_context:
            out["appContext"] = self.app_context
        return out


@dataclass(frozen=True)
class Source:
    label: str
    url: str
    topic: Coding

    def __post_init__(self) -> None:
        if not self.label or not _absolute(self.url):
            raise CardError("a source needs a label and an absolute URL")
        if self.topic.system != RULE_TOPIC_SYSTEM:
            raise CardError(f"source.topic.system must be {RULE_TOPIC_SYSTEM}")

    def to_json(self) -> dict:
        return {"label": self.label, "url": self.url, "topic": self.topic.to_json()}


@dataclass(frozen=True)
class Card:
    summary: str
    indicator: str
    source: Source
    detail: str | None = None
    suggestions: tuple[Suggestion, ...] = ()
    selection_behavior: str | None = None
    override_reasons: tuple[Coding, ...] = ()
    links: tuple[Link, ...] = ()
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if not self.summary or len(self.summary) >= SUMMARY_LIMIT:
            raise CardError(f"summary must be 1-{SUMMARY_LIMIT - 1} characters: {self.summary!r}")
        if self.indicator not in INDICATORS:
            raise CardError(f"indicator must be one of {INDICATORS}")
        if self.suggestions and self.selection_behavior not in SELECTION_BEHAVIORS:
            raise CardError("selectionBehavior is required with suggestions")
        if self.indicator in ("warning", "critical") and not self.override_reasons:
            raise CardError(f"a {self.indicator} card must offer overrideReasons")
        if self.detail is not None and not self.detail.strip():
            raise CardError("detail must not be empty")

    @property
    def rule_id(self) -> str:
        return self.source.topic.code

    def to_json(self) -> dict:
        out: dict = {"uuid": self.uuid, "summary": self.summary, "indicator": self.indicator,
                     "source": self.source.to_json()}
        if self.detail:
            out["detail"] = self.detail
        if self.suggestions:
            out["suggestions"] = [s.to_json() for s in self.suggestions]
            out["selectionBehavior"] = self.selection_behavior
        if self.override_reasons:
            out["overrideReasons"] = [r.to_json() for r in self.override_reasons]
        if self.links:
            out["links"] = [link.to_json() for link in self.links]
        return out
