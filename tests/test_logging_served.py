"""Log hygiene of a real ``cds-service serve`` process (gunicorn, JSON logs, JWTs on).

One process serves the whole module. It gets source case 1 (patient
``case1-patient``, "Casey Synthetic") fully prefetched, the same case with the
patient and conditions fetched from a FHIR server with a bearer token, a
feedback call, a call whose JWT is refused, and a body over the size limit.
Then everything it wrote to stderr is searched: the patient id, names and
birth date, the access token and every JWT must be absent, and every line must
be a JSON object, the request lines with their fields.
"""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.fhir_server import FakeFhirServer
from tests.served import ServedProcess
from tests.source_case import CASE_1, PATIENT_DATA, PV, PV_ID, case1_request

ACCESS_TOKEN = "fhir-access-token-4b1d0e7f-never-log-me"
ISS = "https://ehr.example.org"
KID = "ehr-key-1"
MAX_BYTES = 100_000
REQUEST_FIELDS = {"time", "level", "logger", "message", "method", "path", "status",
                  "duration_ms"}


class Signer:
    """CDS Hooks JWTs from a fresh key, remembered so the log can be searched for them."""

    def __init__(self, base_url: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.base_url = base_url
        self.issued: list[str] = []

    def jwks(self) -> dict:
        public = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": KID, "use": "sig", "alg": "ES256"}]}

    def headers(self, path: str, *, audience: str | None = None) -> dict[str, str]:
        now = int(time.time())
        token = jwt.encode({"iss": ISS, "aud": audience or self.base_url + path, "iat": now,
                            "exp": now + 300, "jti": str(uuid.uuid4())},
                           self.key, algorithm="ES256", headers={"kid": KID, "typ": "JWT"})
        self.issued.append(token)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fhir():
    with FakeFhirServer(CASE_1.resources, require_token=ACCESS_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory, fhir):
    folder = tmp_path_factory.mktemp("served")
    signer = Signer("")
    process = ServedProcess(folder, {
        "CDS_LOG_FORMAT": "json",
        "CDS_EVALUATION_TIME": CASE_1.evaluation_time,
        "CDS_MAX_REQUEST_BYTES": str(MAX_BYTES),
        "CDS_JWT_ISSUERS": json.dumps({ISS: {"jwks": signer.jwks()}}),
    })
    signer.base_url = process.url
    with process:
        yield process, signer


@pytest.fixture(scope="module")
def exchanges(served, fhir) -> dict[str, requests.Response]:
    """Every call the log is checked against, made once for the module."""
    process, signer = served

    def post(path: str, body: object, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", None) or signer.headers(path)
        return requests.post(process.url + path, json=body, headers=headers, timeout=10,
                             **kwargs)

    prefetched = case1_request()
    fetching = case1_request()
    for key in ("patient", "conditions"):
        del fetching["prefetch"][key]
    fetching["fhirServer"] = fhir.base_url
    fetching["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                     "expires_in": 300, "scope": "patient/*.read",
                                     "subject": "cds-service"}
    card = str(uuid.uuid4())
    oversized = {**case1_request(), "padding": "x" * MAX_BYTES}
    return {
        "prefetched": post(PV, prefetched),
        "fetching": post(PV, fetching),
        "feedback": post(f"{PV}/feedback", {"feedback": [
            {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-06-15T12:00:00Z",
             "overrideReason": {"userComment": "seen by Casey Synthetic's surgeon"}}]}),
        "refused": post(PV, prefetched,
                        headers=signer.headers(PV, audience="https://elsewhere.example/x")),
        "oversized": post(PV, oversized),
    }


def log_lines(served) -> list[str]:
    return [line for line in served[0].log().splitlines() if line.strip()]


def request_lines(served) -> list[dict]:
    return [entry for entry in map(json.loads, log_lines(served))
            if entry["logger"] == "cds_service.requests"]


def test_the_calls_were_answered_as_expected(exchanges, fhir):
    statuses = {name: response.status_code for name, response in exchanges.items()}
    assert statuses == {"prefetched": 200, "fetching": 200, "feedback": 200, "refused": 401,
                        "oversized": 413}
    assert any(r.path.startswith("/fhir/Condition?") for r in fhir.requests)
    assert sorted(c["source"]["topic"]["code"] for c in exchanges["fetching"].json()["cards"]) \
        == CASE_1.expected_rules


def test_the_log_never_shows_patient_data_tokens_or_jwts(served, exchanges):
    log = served[0].log()
    _, signer = served
    assert len(signer.issued) == len(exchanges)
    secrets = [*PATIENT_DATA, ACCESS_TOKEN, *signer.issued,
               *(token.rsplit(".", 1)[1] for token in signer.issued)]
    found = [secret for secret in secrets if secret in log]
    assert found == [], f"the log shows {found}"


def test_every_log_line_is_a_json_object(served, exchanges):
    lines = log_lines(served)
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry), line


def test_each_call_leaves_one_request_line(served, exchanges):
    paths = [(e["method"], e["path"], e["status"]) for e in request_lines(served)
             if e["path"] != "/healthz"]
    assert paths == [("POST", PV, 200), ("POST", PV, 200), ("POST", f"{PV}/feedback", 200),
                     ("POST", PV, 401), ("POST", PV, 413)]


def test_hook_call_lines_carry_the_service_hook_rules_and_resource_count(served, exchanges):
    prefetched, fetching = (e for e in request_lines(served)
                            if e["path"] == PV and e["status"] == 200)
    for entry, sent in ((prefetched, exchanges["prefetched"]), (fetching, exchanges["fetching"])):
        assert REQUEST_FIELDS <= set(entry)
        assert (entry["level"], entry["service"], entry["hook"]) == ("INFO", PV_ID,
                                                                     "patient-view")
        assert sorted(entry["rules"]) == sorted(
            c["source"]["topic"]["code"] for c in sent.json()["cards"])
        assert entry["resources"] == len(CASE_1.resources)
        assert len(entry["hookInstance"]) == 36


def test_a_body_over_the_limit_gets_413_json_from_gunicorn(exchanges):
    response = exchanges["oversized"]
    assert response.headers["Content-Type"] == "application/json"
    assert str(MAX_BYTES) in response.json()["error"]


def test_a_chunked_body_over_the_limit_gets_413_json(served):
    process, signer = served

    def chunks():
        for _ in range(MAX_BYTES // 1000 + 5):
            yield b" " * 1000

    response = requests.post(process.url + PV, data=chunks(), timeout=10,
                             headers={**signer.headers(PV), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "error" in response.json()


def test_served_responses_carry_the_security_headers(exchanges):
    for response in exchanges.values():
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
