"""Loading the knowledge in ``hooks/``: services, value sets, orders, thresholds, rules.

Everything is loaded once at start-up and validated against the JSON Schemas in
``hooks/schemas/``. A broken file stops start-up with a ``KnowledgeError`` that
names the file, the line and the field, so that a clinician editing a rule
sees what to fix.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator

from cds_service.engine.facts import FACTS
from cds_service.engine.valuesets import CodeInfo, ValueSet, all_codes
from cds_service.fhir.prefetch import PrefetchSpec

# Value sets the fact functions read by id: each must exist.
REQUIRED_VALUESETS = (
    "back-pain", "blood-culture", "body-temperature", "cauda-equina-syndrome", "cervical-mri",
    "cervical-stenosis", "chronic-axial-back-pain", "crp", "degenerative-disc-disease",
    "epidural-steroid-injection", "esr", "fever", "foot-drop", "image-guided-aspiration",
    "laterality-bilateral", "laterality-left", "laterality-right", "lower-limb-paresis",
    "lumbar-disc-herniation", "lumbar-discectomy", "lumbar-fusion", "lumbar-mri",
    "myelopathy-sign", "neurological-deficit", "opioids", "physical-therapy",
    "postoperative-fluid-collection", "postoperative-spine-infection", "radiculopathy",
    "spinal-epidural-abscess", "spinal-instability", "spine-ct", "spine-surgery-other",
    "spine-surgery-referral", "systemic-corticosteroids", "wbc",
)
OVERRIDE_SYSTEM = "urn:spine-cds:override-reason"


class KnowledgeError(ValueError):
    """A knowledge file is missing, malformed, or refers to something that does not exist."""


def default_knowledge_dir() -> Path:
    """``hooks/`` beside the package in a checkout, or the installed copy."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "hooks", package / "knowledge"):
        if (candidate / "services").is_dir():
            return candidate
    raise KnowledgeError(f"no knowledge folder found beside {package}")


# -- YAML with line numbers --------------------------------------------------------

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Lines:
    """The YAML node tree of a file, composed only when an error needs a line number."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._node: yaml.Node | None = None

    @property
    def node(self) -> yaml.Node | None:
        if self._node is None:
            self._node = yaml.compose(self._text, Loader=_LOADER)
        return self._node


def _load_yaml(path: Path) -> tuple[Any, _Lines]:
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=_LOADER), _Lines(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(f"{path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise KnowledgeError(f"{path}{where}: not valid YAML: {problem}") from None


def _line_of(node: yaml.Node | None, path: list) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def _where(path: Path, lines: _Lines | None, fields: list) -> str:
    line = _line_of(lines.node if lines else None, fields)
    pointer = "/" + "/".join(str(f) for f in fields) if fields else "(top level)"
    return f"{path}{f' line {line}' if line else ''}: {pointer}"


_SCHEMAS: dict[str, Draft202012Validator] = {}


def _validate(path: Path, data: Any, node: _Lines, schema_dir: Path,
              schema: str) -> None:
    if schema not in _SCHEMAS:
        document = json.loads((schema_dir / f"{schema}.schema.json").read_text())
        _SCHEMAS[schema] = Draft202012Validator(document)
    errors = sorted(_SCHEMAS[schema].iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        message = error.message
        if error.validator == "oneOf" and error.context:
            message = min(error.context, key=lambda e: len(e.absolute_path)).message
        raise KnowledgeError(f"{_where(path, node, list(error.absolute_path))}: {message}")


# -- the knowledge ---------------------------------------------------------------

@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str | None
    prefetch: tuple[PrefetchSpec, ...]

    def discovery_entry(self) -> dict:
        entry = {"hook": self.hook, "id": self.id, "title": self.title,
                 "description": self.description,
                 "prefetch": {p.key: p.template for p in self.prefetch}}
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry


@dataclass(frozen=True)
class SuggestionTemplate:
    label: Template
    order: Template
    copies: int
    replaces_order: bool
    recommended: bool
    unless: tuple
    when: tuple


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    indicator: str
    hooks: tuple[str, ...]
    inclusion: Any
    exclusion: tuple
    superseded_by: tuple[str, ...]
    for_each_order: str | None
    summary: Template
    detail: Template
    selection_behavior: str
    suggestions: tuple[SuggestionTemplate, ...]
    override_reasons: tuple[dict, ...]
    evidence: dict
    source_file: str
    raw: dict = field(repr=False, compare=False, default_factory=dict)


@dataclass
class Knowledge:
    services: dict[str, ServiceDefinition]
    valuesets: dict[str, ValueSet]
    orders: dict[str, dict]
    thresholds: dict[str, float]
    threshold_notes: dict[str, str]
    rules: dict[str, Rule]
    directory: Path
    known_codes: frozenset[tuple[str, str]] = frozenset()

    def rules_for(self, hook: str) -> list[Rule]:
        return [r for r in self.rules.values() if hook in r.hooks]


def _yaml_files(folder: Path) -> Iterator[Path]:
    if not folder.is_dir():
        raise KnowledgeError(f"{folder}: folder is missing")
    yield from sorted(folder.glob("*.yaml"))


def _load_services(root: Path, schema_dir: Path) -> dict[str, ServiceDefinition]:
    services = {}
    for path in _yaml_files(root / "services"):
        data, node = _load_yaml(path)
        _validate(path, data, node, schema_dir, "service")
        if data["id"] in services:
            raise KnowledgeError(f"{_where(path, node, ['id'])}: duplicate service id")
        specs = tuple(PrefetchSpec(k, v["template"], v["required"])
                      for k, v in data["prefetch"].items())
        services[data["id"]] = ServiceDefinition(
            data["id"], data["hook"], data["title"], " ".join(data["description"].split()),
            " ".join(data["usageRequirements"].split()) if data.get("usageRequirements") else None,
            specs)
    if not services:
        raise KnowledgeError(f"{root / 'services'}: no service definitions")
    return services


def _load_valuesets(root: Path, schema_dir: Path) -> dict[str, ValueSet]:
    valuesets = {}
    for path in _yaml_files(root / "valuesets"):
        data, node = _load_yaml(path)
        _validate(path, data, node, schema_dir, "valueset")
        if data["id"] != path.stem:
            raise KnowledgeError(f"{_where(path, node, ['id'])}: id must equal the file name "
                                 f"{path.stem!r}")
        vs = ValueSet(data["id"], data["title"], data["description"],
                      prefixes=tuple((p["system"], p["prefix"]) for p in data.get("prefixes", ())))
        for code in data.get("codes", ()):
            vs.add(CodeInfo(code["system"], code["code"], code["display"],
                            code.get("laterality"), code.get("region"),
                            frozenset(code.get("flags", ()))))
        for include in data.get("include_files", ()):
            tsv = path.parent / include["file"]
            try:
                with tsv.open(encoding="utf-8", newline="") as handle:
                    for row in csv.DictReader(handle, delimiter="\t"):
                        vs.add(CodeInfo(include["system"], row["code"], row["display"]))
            except (OSError, KeyError) as exc:
                raise KnowledgeError(f"{tsv}: cannot read code/display columns: {exc}") from None
        valuesets[vs.id] = vs
    missing = [v for v in REQUIRED_VALUESETS if v not in valuesets]
    if missing:
        raise KnowledgeError(f"{root / 'valuesets'}: missing value sets: {', '.join(missing)}")
    return valuesets


def _load_mapping(path: Path, schema_dir: Path, schema: str) -> dict:
    data, node = _load_yaml(path)
    _validate(path, data, node, schema_dir, schema)
    return data


def _criterion_facts(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            for child in value if isinstance(value, list) else [value]:
                yield from _criterion_facts(child)


_TEMPLATES = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)


def _template(path: Path, node: _Lines, fields: list, source: str) -> Template:
    try:
        return _TEMPLATES.from_string(source)
    except TemplateSyntaxError as exc:
        raise KnowledgeError(f"{_where(path, node, fields)}: template error: {exc.message}") \
            from None


def _load_rule(path: Path, node: _Lines, data: dict, orders: dict) -> Rule:
    where = lambda *fields: _where(path, node, list(fields))  # noqa: E731
    if data["id"] != path.stem:
        raise KnowledgeError(f"{where('id')}: id must equal the file name {path.stem!r}")
    criteria = [("inclusion",), *[("exclusion", i) for i in range(len(data.get("exclusion", ())))]]
    for i, suggestion in enumerate(data["card"].get("suggestions", ())):
        criteria += [("card", "suggestions", i, key, j) for key in ("unless", "when")
                     for j in range(len(suggestion.get(key, ())))]
    for fields in criteria:
        value: Any = data
        for part in fields:
            value = value[part]
        for name in _criterion_facts(value):
            if name not in FACTS:
                raise KnowledgeError(f"{where(*fields)}: unknown fact {name!r}")
    if data.get("for_each_order") and data["for_each_order"] not in FACTS:
        raise KnowledgeError(f"{where('for_each_order')}: unknown fact "
                             f"{data['for_each_order']!r}")
    card = data["card"]
    suggestions = []
    for i, item in enumerate(card.get("suggestions", ())):
        if "{" not in item["order"] and item["order"] not in orders:
            raise KnowledgeError(f"{where('card', 'suggestions', i, 'order')}: unknown order "
                                 f"{item['order']!r} (see orders.yaml)")
        suggestions.append(SuggestionTemplate(
            _template(path, node, ["card", "suggestions", i, "label"], item["label"]),
            _template(path, node, ["card", "suggestions", i, "order"], item["order"]),
            item.get("copies", 1), item.get("replaces_order", False),
            item.get("recommended", False), tuple(item.get("unless", ())),
            tuple(item.get("when", ()))))
    if suggestions and "selection_behavior" not in card:
        raise KnowledgeError(f"{where('card')}: selection_behavior is required with suggestions")
    if data["indicator"] in ("warning", "critical") and not card.get("override_reasons"):
        raise KnowledgeError(f"{where('card')}: a {data['indicator']} card needs override_reasons")
    return Rule(
        data["id"], data["title"], data["indicator"], tuple(data["hooks"]), data["inclusion"],
        tuple(data.get("exclusion", ())), tuple(data.get("superseded_by", ())),
        data.get("for_each_order"),
        _template(path, node, ["card", "summary"], " ".join(card["summary"].split())),
        _template(path, node, ["card", "detail"], card["detail"].strip()),
        card.get("selection_behavior", "any"), tuple(suggestions),
        tuple({"system": OVERRIDE_SYSTEM, "code": r["code"], "display": r["display"]}
              for r in card.get("override_reasons", ())),
        data["evidence"], str(path), data)


def load_knowledge(directory: Path | str | None = None,
                   threshold_overrides: Mapping[str, Any] | None = None) -> Knowledge:
    root = Path(directory) if directory else default_knowledge_dir()
    schema_dir = root / "schemas"
    services = _load_services(root, schema_dir)
    valuesets = _load_valuesets(root, schema_dir)
    orders = _load_mapping(root / "orders.yaml", schema_dir, "orders")
    threshold_data = _load_mapping(root / "thresholds.yaml", schema_dir, "thresholds")
    thresholds = {k: float(v["value"]) for k, v in threshold_data.items()}
    for name, value in (threshold_overrides or {}).items():
        if name not in thresholds:
            raise KnowledgeError(f"THRESHOLDS: unknown threshold {name!r}; known: "
                                 f"{', '.join(sorted(thresholds))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KnowledgeError(f"THRESHOLDS: {name} must be a non-negative number")
        thresholds[name] = float(value)
    rules = {}
    for path in _yaml_files(root / "rules"):
        data, node = _load_yaml(path)
        _validate(path, data, node, schema_dir, "rule")
        rules[data["id"]] = _load_rule(path, node, data, orders)
    for rule in rules.values():
        for other in rule.superseded_by:
            if other not in rules:
                raise KnowledgeError(f"{rule.source_file}: superseded_by names unknown rule "
                                     f"{other!r}")
    return Knowledge(services, valuesets, orders, thresholds,
                     {k: v["description"] for k, v in threshold_data.items()}, rules, root,
                     all_codes(valuesets))
