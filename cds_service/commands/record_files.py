"""The files a user hands to the client commands: JSON documents, patient Bundles, orders.

Patient records often come as Synthea exports or transaction Bundles whose
resources point at each other by ``fullUrl`` (``urn:uuid:...``). The service
links resources by ``Type/id``, so those references are rewritten before the
record is sent; a resource that has a ``urn:uuid`` fullUrl but no id gets the
uuid as its id.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cds_service.commands.boundary import CommandError
from cds_service.scenario import (
    ScenarioError,
    local_references,
    record_resources,
    rewrite_references,
    the_patient,
)

STDIN = "-"


def read_json(path: str, what: str) -> Any:
    """The JSON document in ``path`` (``-``: standard input), or a one-line CommandError."""
    name = "standard input" if path == STDIN else f"{what} {path}"
    try:
        raw = sys.stdin.buffer.read() if path == STDIN else Path(path).read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{name}: no such file; check the path") from None
    except IsADirectoryError:
        raise CommandError(f"{name} is a folder; give a JSON file") from None
    except OSError as exc:
        raise CommandError(f"{name} cannot be read ({exc.strerror})") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise CommandError(f"{name} is not UTF-8 text; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise CommandError(f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg})") from None
    except RecursionError:
        raise CommandError(f"{name} is nested too deeply to be read") from None


def load_patient_bundle(path: str) -> tuple[list[dict], dict[str, str]]:
    """The resources of a patient Bundle with its references resolved, and its fullUrl map."""
    bundle = read_json(path, "patient bundle")
    name = "standard input" if path == STDIN else path
    try:
        resources = record_resources(bundle, name)
        mapping = local_references(bundle)
        rewrite_references(resources, mapping)
        the_patient(resources, name)
    except ScenarioError as exc:
        raise CommandError(f"{exc}; give a FHIR Bundle (collection, searchset, transaction or "
                           "batch) that holds one Patient with an id") from None
    return resources, mapping


def load_orders(paths: tuple[str, ...], record_mapping: dict[str, str]) -> list[dict]:
    """The draft orders in ``paths``: each file a FHIR resource or a Bundle of them."""
    orders: list[dict] = []
    for path in paths:
        document = read_json(path, "draft order")
        if isinstance(document, dict) and document.get("resourceType") == "Bundle":
            try:
                found = record_resources(document, path)
            except ScenarioError as exc:
                raise CommandError(str(exc)) from None
            mapping = {**record_mapping, **local_references(document)}
        elif isinstance(document, dict) and isinstance(document.get("resourceType"), str):
            found, mapping = [document], record_mapping
        else:
            raise CommandError(f"draft order {path}: expected a FHIR resource or a Bundle of "
                               "them (a JSON object with 'resourceType')")
        for resource in found:
            if not isinstance(resource.get("id"), str) or not resource["id"]:
                raise CommandError(f"draft order {path}: the {resource['resourceType']} has no "
                                   "id; give every draft order an id (--select names orders "
                                   "as Type/id)")
        rewrite_references(found, mapping)
        orders.extend(found)
    return orders
