"""CDS Hooks JWTs over HTTP (CONTRACT §1 JWT_ISSUERS / PUBLIC_BASE_URL, spec §Trusting CDS Clients).

Keys are generated here with ``cryptography`` and configured inline; the
spec's ES384 example key pair and the sandbox JWKS are used as given. The
Flask test client calls ``http://localhost/...``, so without PUBLIC_BASE_URL
the accepted ``aud`` is ``http://localhost/cds-services/...``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service import create_app
from tests.conftest import REFERENCE, SPEC_TOKEN

ISS = "https://ehr.example.org"
KID = "ehr-key-1"
LOCAL = "http://localhost"
PV = "/cds-services/spine-postop-patient-view"
FB = PV + "/feedback"

SPEC_ISS = "https://fhir-ehr.example.com/"
SPEC_PRIVATE_JWK = {
    "kty": "EC", "d": "SeFXUXda8UomZ8GFUl7HH_Oi15rIbfMcsWj9ecIsDR8kLbqsEz2CGNgwy_IcILxy",
    "use": "sig", "crv": "P-384", "kid": "example-kid",
    "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
    "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
    "alg": "ES384"}
SPEC_PUBLIC_JWKS = {"keys": [{k: v for k, v in SPEC_PRIVATE_JWK.items() if k != "d"}]}
# Words that would tell a caller why its token failed.
REASON_WORDS = ("expired", "signature", "aud", "audience", "iss", "kid", "alg", "jti", "replay",
                "tenant", "nbf", "iat", "jwks", "header")

PREFETCH = {key: {"resourceType": "Bundle", "type": "searchset", "total": 0}
            for key in ("conditions", "observations", "imaging", "reports", "procedures",
                        "medications")}


def hook_body() -> dict:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": "p1", "userId": "Practitioner/u1"}, "prefetch": PREFETCH}


def feedback_body() -> dict:
    return {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                          "outcomeTimestamp": "2024-05-01T12:00:00Z"}]}


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str

    def body(self) -> dict | None:
        return {PV: hook_body, FB: feedback_body}.get(self.path, lambda: None)()


ENDPOINTS = [Endpoint("discovery", "GET", "/cds-services"), Endpoint("service", "POST", PV),
             Endpoint("feedback", "POST", FB)]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    def __init__(self, iss: str = ISS, kid: str = KID, key=None, alg: str = "ES256"):
        self.iss, self.kid, self.alg = iss, kid, alg
        self.key = key or ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict:
        public = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [dict(public, kid=self.kid, use="sig", alg=self.alg)]}

    def claims(self, audience: str, **changes) -> dict:
        now = int(time.time())
        claims = {"iss": self.iss, "aud": audience, "iat": now, "exp": now + 300,
                  "jti": str(uuid.uuid4())}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not ...}

    def token(self, audience: str, *, key=None, headers: dict | None = None, **changes) -> str:
        header = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(self.claims(audience, **changes), key or self.key, algorithm=self.alg,
                          headers=header)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


def _app(tmp_path_factory, **config):
    folder = tmp_path_factory.mktemp("db")
    return create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}", "TESTING": True,
                       **config})


@pytest.fixture(scope="module")
def client(tmp_path_factory, signer):
    return _app(tmp_path_factory, JWT_ISSUERS={ISS: {"jwks": signer.jwks()}}).test_client()


def call(client, endpoint: Endpoint, token: str | None = None, authorization: str | None = None):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.open(endpoint.path, method=endpoint.method, json=endpoint.body(),
                       headers=headers)


# -- ways to fail -----------------------------------------------------------------------------


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(signature)


def _hs256_with_public_key(signer: Signer, aud: str) -> str:
    """Key confusion: HMAC with the issuer's public key as the shared secret."""
    pem = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": signer.kid}
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(signer.claims(aud)).encode())
    return head + "." + b64(hmac.new(pem, head.encode(), hashlib.sha256).digest())


def _failures(signer: Signer, aud: str) -> dict[str, dict]:
    """kind -> {"token": ...} or {"authorization": ...}; each must get a 401."""
    now = int(time.time())
    other = Signer()
    return {
        "no-token": {},
        "basic-scheme": {"authorization": "Basic dXNlcjpwYXNz"},
        "bearer-without-token": {"authorization": "Bearer"},
        "not-a-jwt": {"token": "abc.def"},
        "bad-signature": {"token": signer.token(aud, key=other.key)},
        "tampered-payload": {"token": _tamper(signer.token(aud))},
        "wrong-aud": {"token": signer.token("https://other.example.org/cds-services")},
        "aud-of-another-endpoint": {"token": signer.token(aud + "-other")},
        "aud-missing": {"token": signer.token(aud, aud=...)},
        "expired": {"token": signer.token(aud, iat=now - 900, exp=now - 600)},
        "issued-in-the-future": {"token": signer.token(aud, iat=now + 600, exp=now + 900)},
        "not-yet-valid": {"token": signer.token(aud, nbf=now + 600)},
        "exp-missing": {"token": signer.token(aud, exp=...)},
        "jti-missing": {"token": signer.token(aud, jti=...)},
        "lifetime-too-long": {"token": signer.token(aud, exp=now + 86_400)},
        "untrusted-iss": {"token": Signer(iss="https://evil.example").token(aud)},
        "iss-missing": {"token": signer.token(aud, iss=...)},
        "unknown-kid": {"token": signer.token(aud, headers={"kid": "nope"})},
        "alg-none": {"token": _unsigned({"alg": "none", "typ": "JWT", "kid": signer.kid},
                                        signer.claims(aud))},
        "hs256-shared-secret": {"token": jwt.encode(signer.claims(aud), "s" * 32,
                                                    algorithm="HS256",
                                                    headers={"kid": signer.kid})},
        "hs256-with-public-key": {"token": _hs256_with_public_key(signer, aud)},
    }


def _tamper(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "someone-else"
    return ".".join([head, b64(json.dumps(claims).encode()), signature])


FAILURE_KINDS = list(_failures(Signer(), LOCAL + PV))


@pytest.fixture(scope="module")
def failures(signer) -> dict[str, dict[str, dict]]:
    """endpoint name -> the failing credentials for that endpoint (none is ever accepted)."""
    return {e.name: _failures(signer, LOCAL + e.path) for e in ENDPOINTS}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_invalid_token_is_401(client, failures, endpoint, kind):
    response = call(client, endpoint, **failures[endpoint.name][kind])
    assert response.status_code == 401


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_401_asks_for_a_bearer_token(client, endpoint):
    response = call(client, endpoint)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_every_failure_gets_the_same_body(client, failures, endpoint):
    bodies = {call(client, endpoint, **how).get_data()
              for how in failures[endpoint.name].values()}
    assert len(bodies) == 1


def test_401_body_is_a_json_error_without_a_reason(client, signer):
    response = call(client, ENDPOINTS[1], token=signer.token(LOCAL + PV, exp=1, iat=0))
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]
    assert not any(word in body["error"].lower() for word in REASON_WORDS)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_replayed_token_is_401(client, signer, endpoint):
    token = signer.token(LOCAL + endpoint.path)
    assert call(client, endpoint, token=token).status_code == 200
    assert call(client, endpoint, token=token).status_code == 401


def test_tokens_are_never_logged(client, signer, failures, caplog):
    caplog.set_level(logging.DEBUG)
    good = signer.token(LOCAL + PV)
    assert call(client, ENDPOINTS[1], token=good).status_code == 200
    bad = failures["service"]["bad-signature"]["token"]
    assert call(client, ENDPOINTS[1], token=bad).status_code == 401
    assert caplog.records, "verification was logged"
    for token in (good, bad):
        assert token not in caplog.text
        assert token.split(".")[2] not in caplog.text


# -- ways to succeed --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_valid_token_for_the_exact_endpoint_url_is_accepted(client, signer, endpoint):
    response = call(client, endpoint, token=signer.token(LOCAL + endpoint.path))
    assert response.status_code == 200


def test_token_for_one_endpoint_is_refused_on_another(client, signer):
    response = call(client, ENDPOINTS[2], token=signer.token(LOCAL + PV))
    assert response.status_code == 401


def test_unknown_service_without_token_is_401_not_404(client):
    response = client.post("/cds-services/nope", json=hook_body())
    assert response.status_code == 401
    assert "spine-postop" not in response.get_data(as_text=True)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, signer):
    return _app(tmp_path_factory, JWT_ISSUERS={ISS: {"jwks": signer.jwks()}},
                PUBLIC_BASE_URL="https://cds.example.org").test_client()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_public_base_url_makes_its_aud_the_accepted_one(proxied, signer, endpoint):
    token = signer.token("https://cds.example.org" + endpoint.path)
    assert call(proxied, endpoint, token=token).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_public_base_url_makes_the_request_url_aud_rejected(proxied, signer, endpoint):
    assert call(proxied, endpoint, token=signer.token(LOCAL + endpoint.path)).status_code == 401


@pytest.fixture(scope="module")
def tenanted(tmp_path_factory, signer):
    return _app(tmp_path_factory, JWT_ISSUERS={ISS: {"jwks": signer.jwks()}},
                JWT_TENANTS=["tenant-a"]).test_client()


def test_allowed_tenant_is_accepted(tenanted, signer):
    token = signer.token(LOCAL + PV, tenant="tenant-a")
    assert call(tenanted, ENDPOINTS[1], token=token).status_code == 200


def test_other_tenant_is_401(tenanted, signer):
    token = signer.token(LOCAL + PV, tenant="tenant-b")
    assert call(tenanted, ENDPOINTS[1], token=token).status_code == 401


def test_missing_tenant_is_401_when_tenants_are_configured(tenanted, signer):
    assert call(tenanted, ENDPOINTS[1], token=signer.token(LOCAL + PV)).status_code == 401


# -- the spec's example key pair, the sandbox's key set, env configuration ----------------


@pytest.fixture(scope="module")
def spec_signer() -> Signer:
    key = ECAlgorithm.from_jwk(json.dumps(SPEC_PRIVATE_JWK))
    return Signer(iss=SPEC_ISS, kid="example-kid", key=key, alg="ES384")


@pytest.fixture(scope="module")
def spec_client(tmp_path_factory):
    return _app(tmp_path_factory, JWT_ISSUERS={SPEC_ISS: {"jwks": SPEC_PUBLIC_JWKS}}).test_client()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_spec_example_key_signs_an_accepted_token(spec_client, spec_signer, endpoint):
    token = spec_signer.token(LOCAL + endpoint.path,
                              headers={"jku": "https://fhir-ehr.example.com/jwk_uri"},
                              tenant="2ddd6c3a-8e9a-44c6-a305-52111ad302a2")
    assert call(spec_client, endpoint, token=token).status_code == 200


def test_spec_example_token_itself_is_refused(spec_client):
    """Its aud is another service and it expired in 2015."""
    assert call(spec_client, ENDPOINTS[0], token=SPEC_TOKEN).status_code == 401


@pytest.mark.skipif(not (REFERENCE / "cds-hooks-sandbox-jwks.json").is_file(),
                    reason="reference sandbox JWKS not found")
def test_sandbox_jwks_loads_as_an_inline_issuer(tmp_path_factory):
    jwks = json.loads((REFERENCE / "cds-hooks-sandbox-jwks.json").read_text(encoding="utf-8"))
    app = _app(tmp_path_factory, JWT_ISSUERS={"https://sandbox.cds-hooks.org": {"jwks": jwks}})
    assert app.extensions["cds"].verifier is not None
    assert app.test_client().get("/cds-services").status_code == 401


def test_jwt_issuers_from_env_json(monkeypatch, tmp_path_factory, signer):
    monkeypatch.setenv("CDS_JWT_ISSUERS", json.dumps({ISS: {"jwks": signer.jwks()}}))
    client = _app(tmp_path_factory).test_client()
    assert call(client, ENDPOINTS[0]).status_code == 401
    assert call(client, ENDPOINTS[0], token=signer.token(LOCAL + "/cds-services")).status_code \
        == 200


def test_jwt_is_off_without_jwt_issuers(tmp_path_factory, monkeypatch):
    monkeypatch.delenv("CDS_JWT_ISSUERS", raising=False)
    client = _app(tmp_path_factory).test_client()
    assert call(client, ENDPOINTS[0]).status_code == 200
