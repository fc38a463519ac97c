"""The official CDS Hooks sandbox (sandbox.cds-hooks.org) as a client, as the README tells
people to use it: CORS from its origin, its JWTs, its requests and their quirks.

What the sandbox sends is described in /work/shared/reference/README.md: a CORS
preflight before every call; ES384 JWTs with a ``jku`` pointing to its public
host, ``aud`` the exact URL and ``exp`` = ``iat`` + 300, no ``tenant``; no
``fhirAuthorization``; R4 draft MedicationRequests with ``category`` and
``reasonCode`` as single objects, and a first order-select with no medication.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service import create_app
from cds_service.config import load_settings
from cds_service.scenario import build_request, default_fixtures_dir, load_scenario
from cds_service.security.jwt_auth import JwtVerifier
from tests.conftest import REFERENCE, assert_conformant, rule_ids

SANDBOX = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = f"{SANDBOX}/.well-known/jwks.json"
LOCAL = "http://localhost"  # what the Flask test client calls
DISCOVERY = "/cds-services"
PV = "/cds-services/spine-postop-patient-view"
OS = "/cds-services/spine-postop-order-select"
FEEDBACK = f"{PV}/feedback"
DOCS_JWKS = Path(__file__).resolve().parent.parent / "docs" / "cds-hooks-sandbox-jwks.json"
SANDBOX_REQUEST = REFERENCE / "examples" / "sandbox-patient-view-request.json"
FHIR_SERVER = "http://127.0.0.1:8090"  # the sandbox's FHIR server, never reachable here


class SandboxKey:
    """A key pair of the sandbox's kind (P-384), generated here; signs tokens like the sandbox's."""

    kid = "sandbox-test-key"

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP384R1())

    def jwks(self) -> dict:
        public = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [dict(public, kid=self.kid, use="sig", alg="ES384")]}

    def token(self, path: str) -> str:
        issued = int(time.time())
        claims = {"iss": SANDBOX, "aud": LOCAL + path, "iat": issued, "exp": issued + 300,
                  "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.private, algorithm="ES384",
                          headers={"kid": self.kid, "jku": SANDBOX_JKU, "typ": "JWT"})


@pytest.fixture(scope="module")
def key() -> SandboxKey:
    return SandboxKey()


@pytest.fixture
def attempted_hosts(monkeypatch) -> list[str]:
    """Every host anything tries to connect to; all connections fail as on a closed network."""
    hosts: list[str] = []

    def refuse(host, *args, **kwargs):
        hosts.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return hosts


@pytest.fixture(scope="module")
def trusting(tmp_path_factory, key):
    """The service configured as the README says, with the test's key as the sandbox's."""
    folder = tmp_path_factory.mktemp("official")
    return create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}", "TESTING": True,
                       "JWT_ISSUERS": {SANDBOX: {"jwks": key.jwks()}}, "FHIR_RETRIES": 0,
                       "EVALUATION_TIME": "2026-06-15T12:00:00Z"}).test_client()


def sandbox_headers(key: SandboxKey, path: str) -> dict:
    return {"Origin": SANDBOX, "Authorization": f"Bearer {key.token(path)}"}


def sandbox_medication_request(with_medication: bool) -> dict:
    """A draft as the sandbox's Rx view builds it in R4 mode (single-object category and
    reasonCode); before a medication is picked it has none."""
    order = {
        "resourceType": "MedicationRequest", "id": "request-123", "status": "draft",
        "intent": "order", "subject": {"reference": "Patient/placeholder"},
        "authoredOn": "2026-06-15",
        "dosageInstruction": [{
            "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 1, "system": "http://unitsofmeasure.org",
                                              "code": "{pill}"}}]}],
        "dispenseRequest": {"expectedSupplyDuration": {
            "value": 7, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
        "category": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
            "code": "community"}]},
        "reasonCode": {"coding": [{"system": "http://snomed.info/sct", "code": "279039007",
                                   "display": "Low back pain"}], "text": "Low back pain"},
    }
    if with_medication:
        name = "tramadol hydrochloride 50 MG Oral Tablet"
        order["medicationCodeableConcept"] = {"text": name, "coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "835603",
            "display": name}]}
    return order


def sandbox_order_select(client, with_medication: bool) -> dict:
    """An order-select call for a patient on opioids for 40+ days, shaped like the sandbox's."""
    scenario = load_scenario(default_fixtures_dir()
                             / "prolonged-opioid-therapy--fires-order-sign-renewal.json")
    service = client.application.extensions["cds"].knowledge.services[OS.rsplit("/", 1)[1]]
    draft = sandbox_medication_request(with_medication)
    patient_id = next(r["id"] for r in scenario.resources if r["resourceType"] == "Patient")
    draft["subject"]["reference"] = f"Patient/{patient_id}"
    body = build_request(service, scenario.resources, draft_orders=[draft],
                         selections=["MedicationRequest/request-123"],
                         user_id="Practitioner/COREPRACTITIONER1")
    body["fhirServer"] = FHIR_SERVER
    return body


# -- CORS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, method", [(DISCOVERY, "GET"), (PV, "POST"), (FEEDBACK, "POST")])
def test_preflight_from_the_sandbox_origin_is_allowed(trusting, path, method):
    response = trusting.options(path, headers={
        "Origin": SANDBOX, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code in (200, 204)
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    allowed = response.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert method.lower() in response.headers.get("Access-Control-Allow-Methods", "").lower()


def test_discovery_is_readable_from_the_sandbox_origin(trusting, key):
    response = trusting.get(DISCOVERY, headers=sandbox_headers(key, DISCOVERY))
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    ids = {s["id"] for s in response.get_json()["services"]}
    assert {"spine-postop-patient-view", "spine-postop-order-select",
            "spine-postop-order-sign"} <= ids


# -- its JWTs -------------------------------------------------------------------------------


@pytest.mark.skipif(not SANDBOX_REQUEST.is_file(), reason=f"{SANDBOX_REQUEST} not found")
def test_sandbox_patient_view_with_its_kind_of_jwt_is_accepted_without_fetching_the_jku(
        trusting, key, attempted_hosts):
    body = json.loads(SANDBOX_REQUEST.read_text(encoding="utf-8"))["body"]
    assert "fhirAuthorization" not in body
    response = trusting.post(PV, json=body, headers=sandbox_headers(key, PV))
    assert response.status_code in (200, 412), response.get_data(as_text=True)
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    if response.status_code == 200:
        assert_conformant(response.get_json())
    assert "sandbox.cds-hooks.org" not in attempted_hosts


def test_a_token_signed_by_another_key_is_refused(trusting, attempted_hosts):
    response = trusting.get(DISCOVERY, headers=sandbox_headers(SandboxKey(), DISCOVERY))
    assert response.status_code == 401
    assert "sandbox.cds-hooks.org" not in attempted_hosts


def test_feedback_posted_by_the_sandbox_is_stored(trusting, key):
    feedback = {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                              "outcomeTimestamp": "2026-06-15T12:01:00Z"}]}
    response = trusting.post(FEEDBACK, json=feedback, headers=sandbox_headers(key, FEEDBACK))
    assert response.status_code == 200
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)


def test_the_documented_jwks_copy_configures_the_sandbox_issuer_from_the_environment():
    jwks_text = DOCS_JWKS.read_text(encoding="utf-8")
    env = {"CDS_JWT_ISSUERS": f'{{"{SANDBOX}": {{"jwks": {jwks_text}}}}}'}  # as in the README
    settings = load_settings(environ=env)
    assert settings["JWT_ISSUERS"][SANDBOX]["jwks"]["keys"][0]["alg"] == "ES384"
    JwtVerifier(settings["JWT_ISSUERS"])  # accepted as an inline key set


@pytest.mark.skipif(not (REFERENCE / "cds-hooks-sandbox-jwks.json").is_file(),
                    reason="reference sandbox JWKS not found")
def test_the_documented_jwks_copy_is_the_sandbox_key_set():
    reference = json.loads((REFERENCE / "cds-hooks-sandbox-jwks.json").read_text("utf-8"))
    assert json.loads(DOCS_JWKS.read_text(encoding="utf-8")) == reference


# -- its R4 order-select quirks -------------------------------------------------------------


def test_first_order_select_with_no_medication_at_all_is_200(trusting, key, attempted_hosts):
    body = sandbox_order_select(trusting, with_medication=False)
    response = trusting.post(OS, json=body, headers=sandbox_headers(key, OS))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_conformant(response.get_json())
    assert attempted_hosts == []  # everything was prefetched


def test_draft_with_single_object_category_and_reason_code_is_evaluated(trusting, key):
    body = sandbox_order_select(trusting, with_medication=True)
    response = trusting.post(OS, json=body, headers=sandbox_headers(key, OS))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_conformant(response.get_json())
    assert "prolonged-opioid-therapy" in rule_ids(response.get_json())
