"""GET /cds-services: the discovery document (CONTRACT §1-§3, CDS Hooks 2.0 §Discovery)."""

from __future__ import annotations

import re
import shutil

import pytest

from cds_service.protocol.validation import (
    PREFETCH_TOKEN_FIELDS,
    USER_TOKENS,
    validate_discovery,
)
from tests.conftest import REPO

CONTRACT_SERVICES = {
    "spine-postop-patient-view": "patient-view",
    "spine-postop-order-select": "order-select",
    "spine-postop-order-sign": "order-sign",
}
CONTRACT_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "imaging": "ImagingStudy?patient={{context.patientId}}",
    "reports": "DiagnosticReport?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}",
    "servicerequests": "ServiceRequest?patient={{context.patientId}}",
}
TOKEN = re.compile(r"\{\{(.*?)\}\}")


@pytest.fixture(scope="module")
def app(module_client):
    return module_client.application


@pytest.fixture(scope="module")
def client(module_client):
    return module_client


@pytest.fixture
def discovery(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    return response


@pytest.fixture
def entries(discovery):
    return {service["id"]: service for service in discovery.get_json()["services"]}


def test_discovery_answers_json(discovery):
    assert discovery.mimetype == "application/json"
    assert isinstance(discovery.get_json(), dict)


def test_discovery_document_is_valid_cds_hooks(discovery):
    assert validate_discovery(discovery.get_json()) == []


def test_discovery_lists_the_three_contract_services_with_their_hooks(entries):
    assert {sid: entries[sid]["hook"] for sid in CONTRACT_SERVICES if sid in entries} \
        == CONTRACT_SERVICES


@pytest.mark.parametrize("service_id", sorted(CONTRACT_SERVICES))
@pytest.mark.parametrize("field", ["title", "description", "usageRequirements"])
def test_contract_service_has_a_non_empty_text_field(entries, service_id, field):
    value = entries[service_id].get(field)
    assert isinstance(value, str) and value.strip()


@pytest.mark.parametrize("service_id", sorted(CONTRACT_SERVICES))
def test_contract_service_declares_prefetch(entries, service_id):
    prefetch = entries[service_id].get("prefetch")
    assert isinstance(prefetch, dict) and prefetch


@pytest.mark.parametrize("service_id", sorted(CONTRACT_SERVICES))
def test_prefetch_keys_are_contract_keys(entries, service_id):
    assert set(entries[service_id]["prefetch"]) <= set(CONTRACT_TEMPLATES)


@pytest.mark.parametrize("service_id", sorted(CONTRACT_SERVICES))
def test_prefetch_templates_are_the_typical_ones_or_narrow_them(entries, service_id):
    for key, template in entries[service_id]["prefetch"].items():
        typical = CONTRACT_TEMPLATES[key]
        assert template == typical or template.startswith(typical + "&"), (key, template)


@pytest.mark.parametrize("service_id", sorted(CONTRACT_SERVICES))
def test_prefetch_tokens_are_allowed_for_the_hook(entries, service_id):
    entry = entries[service_id]
    allowed = {f"context.{name}" for name in PREFETCH_TOKEN_FIELDS[entry["hook"]]}
    allowed |= set(USER_TOKENS)
    tokens = [t for template in entry["prefetch"].values() for t in TOKEN.findall(template)]
    assert tokens, "every template names the patient"
    assert set(tokens) <= allowed


def test_discovery_service_ids_are_unique(discovery):
    ids = [service["id"] for service in discovery.get_json()["services"]]
    assert len(ids) == len(set(ids))


def test_discovery_entries_come_from_the_knowledge_folder(make_app, tmp_path):
    knowledge = tmp_path / "knowledge"
    shutil.copytree(REPO / "hooks", knowledge)
    service_file = knowledge / "services" / "spine-postop-patient-view.yaml"
    text = service_file.read_text(encoding="utf-8")
    edited = re.sub(r"(?m)^title: .*$", "title: Edited title for the discovery test", text)
    assert edited != text
    service_file.write_text(edited, encoding="utf-8")

    client = make_app(KNOWLEDGE_DIR=str(knowledge)).test_client()
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}

    assert services["spine-postop-patient-view"]["title"] == "Edited title for the discovery test"


def test_discovery_rejects_post(client):
    response = client.post("/cds-services", json={})
    assert response.status_code == 405
    assert response.get_json()["error"]
