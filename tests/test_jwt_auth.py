"""Tests for cds_service.security.jwt_auth (CDS Hooks 2.0 client JWT verification)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.security.jwt_auth import JwtRejected, JwtVerifier
from tests.conftest import SPEC_TOKEN

NOW = 1_800_000_000.0
ISS = "https://ehr.example.org"
AUD = "https://cds.example.org/cds-services/spine-postop-patient-view"
JKU = "https://ehr.example.org/.well-known/jwks.json"
REFERENCE = Path("/work/shared/reference")

# The spec's example keys (cds-hooks-2.0.1.md, "Trusting CDS Clients" > Example).
SPEC_PUBLIC_JWKS = {"keys": [{
    "kty": "EC", "use": "sig", "crv": "P-384", "kid": "example-kid",
    "x": "46SDH7Znh821wblCBglA61sNE9ZrHYKKt3qRtRTmSXyOI_FIGBLWrWa0GPUkDCEk",
    "y": "XMcRuuoGW7CXjQdy-F5i3FeBE0x9hPLdeFdSoDd3ELmx404tLX0VRRcqzAsPhXcI",
    "alg": "ES384"}]}
SPEC_PRIVATE_JWK = dict(SPEC_PUBLIC_JWKS["keys"][0],
                        d="SeFXUXda8UomZ8GFUl7HH_Oi15rIbfMcsWj9ecIsDR8kLbqsEz2CGNgwy_IcILxy")


# ----------------------------------------------------------------------------- helpers


class Clock:
    def __init__(self, t: float = NOW):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeFetch:
    def __init__(self, jwks=None, error: Exception | None = None):
        self.jwks, self.error, self.calls = jwks, error, []

    def __call__(self, url: str) -> dict:
        self.calls.append(url)
        if self.error is not None:
            raise self.error
        return self.jwks


def public_jwk(private_key, kid: str, alg: str | None = None) -> dict:
    pub = private_key.public_key()
    algo = RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else ECAlgorithm
    jwk_dict = dict(algo.to_jwk(pub, as_dict=True), kid=kid, use="sig")
    if alg:
        jwk_dict["alg"] = alg
    return jwk_dict


@pytest.fixture(scope="module")
def keys():
    return {
        "ES384": ec.generate_private_key(ec.SECP384R1()),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "RS384": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "PS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


@pytest.fixture(scope="module")
def jwks(keys):
    return {"keys": [
        public_jwk(keys["ES384"], "ec384", "ES384"),
        public_jwk(keys["ES256"], "ec256"),  # no alg: family/curve decides
        public_jwk(keys["RS384"], "rsa", "RS384"),
        public_jwk(keys["PS256"], "pss", "PS256"),
    ]}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def verifier(jwks, clock):
    return JwtVerifier({ISS: {"jwks": jwks}}, clock=clock)


def claims(**overrides) -> dict:
    base = {"iss": ISS, "aud": AUD, "iat": int(NOW), "exp": int(NOW) + 300,
            "jti": str(uuid.uuid4())}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key, alg="ES384", kid="ec384", payload=None, **header) -> str:
    headers = {"kid": kid, "typ": "JWT", **header}
    return jwt.encode(claims() if payload is None else payload, key, algorithm=alg,
                      headers=headers)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict, payload: dict, signature: bytes = b"sig") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()),
                     b64(signature)])


def rejected(verifier, header, audience=AUD) -> str:
    with pytest.raises(JwtRejected) as info:
        verifier.verify(header, audience)
    return info.value.reason


# ----------------------------------------------------------------------------- valid tokens


def test_valid_es384_token_accepted(verifier, keys):
    payload = claims(tenant="t1")
    got = verifier.verify(bearer(sign(keys["ES384"], payload=payload)), AUD)
    assert got == payload


def test_valid_rs384_token_accepted(verifier, keys):
    assert verifier.verify(bearer(sign(keys["RS384"], "RS384", "rsa")), AUD)["iss"] == ISS


def test_valid_ps256_token_accepted(verifier, keys):
    assert verifier.verify(bearer(sign(keys["PS256"], "PS256", "pss")), AUD)["iss"] == ISS


def test_valid_es256_token_with_key_lacking_alg_accepted(verifier, keys):
    assert verifier.verify(bearer(sign(keys["ES256"], "ES256", "ec256")), AUD)["iss"] == ISS


def test_array_aud_containing_endpoint_accepted(verifier, keys):
    token = sign(keys["ES384"], payload=claims(aud=["https://other.example", AUD]))
    assert verifier.verify(bearer(token), AUD)["aud"][1] == AUD


def test_one_trailing_slash_on_either_aud_side_is_ignored(verifier, keys):
    token = sign(keys["ES384"], payload=claims(aud=AUD + "/"))
    verifier.verify(bearer(token), AUD)
    verifier.verify(bearer(sign(keys["ES384"])), AUD + "/")


def test_bearer_scheme_is_case_insensitive(verifier, keys):
    verifier.verify("bearer " + sign(keys["ES384"]), AUD)
    verifier.verify("BEARER   " + sign(keys["ES384"]), AUD)


def test_typ_header_is_optional_and_case_insensitive(verifier, keys):
    verifier.verify(bearer(sign(keys["ES384"], typ="jwt")), AUD)
    token = jwt.encode(claims(), keys["ES384"], algorithm="ES384", headers={"kid": "ec384"})
    assert "typ" in jwt.get_unverified_header(token)  # PyJWT always adds typ; strip it by hand
    header = {"alg": "ES384", "kid": "ec384"}
    signing_input = f"{b64(json.dumps(header).encode())}.{token.split('.')[1]}"
    sig = jwt.get_algorithm_by_name("ES384").sign(signing_input.encode(), keys["ES384"])
    verifier.verify(bearer(f"{signing_input}.{b64(sig)}"), AUD)


def test_spec_example_private_jwk_signs_fresh_token_verified_with_spec_public_jwks(clock):
    iss = "https://fhir-ehr.example.com/"
    aud = "https://cds.example.org/cds-services/some-service"
    verifier = JwtVerifier({iss: {"jwks": SPEC_PUBLIC_JWKS}}, clock=clock)
    private_key = jwt.PyJWK(SPEC_PRIVATE_JWK).key
    payload = claims(iss=iss, aud=aud, tenant="2ddd6c3a-8e9a-44c6-a305-52111ad302a2")
    token = jwt.encode(payload, private_key, algorithm="ES384",
                       headers={"kid": "example-kid", "typ": "JWT"})
    assert verifier.verify(bearer(token), aud) == payload


def test_spec_literal_example_token_verifies_at_its_own_time_and_header_jku_is_not_fetched():
    # The spec's token: iat 2011, exp 2015, header jku https://fhir-ehr.example.com/jwk_uri.
    # With inline keys configured the header jku is ignored and never fetched.
    fetch = FakeFetch()
    verifier = JwtVerifier({"https://fhir-ehr.example.com/": {"jwks": SPEC_PUBLIC_JWKS}},
                           clock=Clock(1_400_000_000), max_lifetime_seconds=10**9,
                           fetch_jwks=fetch)
    got = verifier.verify(bearer(SPEC_TOKEN), "https://cds.example.org/cds-services/some-service")
    assert got["jti"] == "ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"
    assert fetch.calls == []


def test_spec_literal_example_token_rejected_at_the_real_time():
    verifier = JwtVerifier({"https://fhir-ehr.example.com/": {"jwks": SPEC_PUBLIC_JWKS}})
    assert "expired" in rejected(verifier, bearer(SPEC_TOKEN),
                                 "https://cds.example.org/cds-services/some-service")


def test_sandbox_jwks_file_is_accepted_as_inline_config():
    sandbox = json.loads((REFERENCE / "cds-hooks-sandbox-jwks.json").read_text())
    JwtVerifier({"https://sandbox.cds-hooks.org": {"jwks": sandbox}})


# ----------------------------------------------------------------------------- header / format


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_authorization_header_rejected(verifier, header):
    assert "missing" in rejected(verifier, header)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token a.b.c", "Bearer", "Bearer a b"])
def test_wrong_scheme_or_shape_rejected(verifier, header):
    rejected(verifier, header)


@pytest.mark.parametrize("token", ["garbage", "a.b", "a.b.c", "!!.??.**", "e30.e30.e30",
                                   "eyJhbGciOiJFUzM4NCJ9.e30.e30"])
def test_garbage_token_rejected(verifier, token):
    rejected(verifier, bearer(token))


def test_oversized_authorization_header_rejected(verifier):
    assert "too large" in rejected(verifier, bearer("a" * 20000 + ".b.c"))


def test_alg_none_rejected(verifier):
    header = {"alg": "none", "kid": "ec384", "typ": "JWT"}
    assert "alg" in rejected(verifier, bearer(raw_token(header, claims())))
    unsigned = raw_token(header, claims(), b"")  # "x.y." - no signature at all
    rejected(verifier, bearer(unsigned))


def test_hs256_signed_with_public_key_bytes_rejected(verifier, keys):
    # Classic key-confusion attack: HMAC keyed with the verifier's public key.
    pem = keys["RS384"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "kid": "rsa", "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert "alg" in rejected(verifier, bearer(f"{signing_input}.{b64(sig)}"))


def test_missing_kid_rejected(verifier, keys):
    token = jwt.encode(claims(), keys["ES384"], algorithm="ES384")
    assert "kid" in rejected(verifier, bearer(token))


def test_typ_other_than_jwt_rejected(verifier, keys):
    assert "typ" in rejected(verifier, bearer(sign(keys["ES384"], typ="at+jwt")))


def test_crit_header_rejected(verifier, keys):
    rejected(verifier, bearer(sign(keys["ES384"], crit=["exp"], exp=1)))


def test_rs_alg_with_ec_key_kid_rejected(verifier, keys):
    assert "does not" in rejected(verifier, bearer(sign(keys["RS384"], "RS384", "ec384")))


def test_key_alg_different_from_header_alg_rejected(verifier, keys):
    # key "rsa" is declared RS384; a PS384 token for it must not be accepted
    reason = rejected(verifier, bearer(sign(keys["RS384"], "PS384", "rsa")))
    assert "does not match header alg" in reason


def test_ec_curve_must_match_alg(verifier, keys):
    # key "ec256" has no alg member; ES384 needs P-384
    reason = rejected(verifier, bearer(sign(keys["ES384"], "ES384", "ec256")))
    assert "does not fit" in reason


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits")
def test_rsa_key_below_2048_bits_rejected(clock):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    verifier = JwtVerifier({ISS: {"jwks": {"keys": [public_jwk(weak, "weak")]}}}, clock=clock)
    assert "2048" in rejected(verifier, bearer(sign(weak, "RS256", "weak")))


def test_encryption_key_not_usable_for_signatures(keys, clock):
    jwk_enc = dict(public_jwk(keys["ES384"], "enc"), use="enc")
    verifier = JwtVerifier({ISS: {"jwks": {"keys": [jwk_enc]}}}, clock=clock)
    assert "signature key" in rejected(verifier, bearer(sign(keys["ES384"], kid="enc")))


# ----------------------------------------------------------------------------- issuer / key


def test_unknown_iss_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(iss="https://evil.example"))
    assert "untrusted iss" in rejected(verifier, bearer(token))


def test_non_string_iss_rejected(verifier, keys):
    # PyJWT refuses to encode a non-string iss, so sign the JWS by hand.
    token = jwt.PyJWS().encode(json.dumps(claims(iss=[ISS])).encode(), keys["ES384"], "ES384",
                               headers={"kid": "ec384", "typ": "JWT"})
    assert "iss" in rejected(verifier, bearer(token))


def test_unknown_kid_rejected(verifier, keys):
    assert "unknown kid" in rejected(verifier, bearer(sign(keys["ES384"], kid="nope")))


def test_token_signed_by_other_key_rejected(verifier):
    other = ec.generate_private_key(ec.SECP384R1())
    assert "InvalidSignature" in rejected(verifier, bearer(sign(other)))


def test_tampered_payload_rejected(verifier, keys):
    head, _, sig = sign(keys["ES384"]).split(".")
    forged = b64(json.dumps(claims(tenant="other")).encode())
    assert "InvalidSignature" in rejected(verifier, bearer(f"{head}.{forged}.{sig}"))


# ----------------------------------------------------------------------------- claims


def test_wrong_aud_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(aud="https://cds.example.org/cds-services/other"))
    assert "aud" in rejected(verifier, bearer(token)).lower()


def test_aud_prefix_is_not_a_match(verifier, keys):
    token = sign(keys["ES384"], payload=claims(aud="https://cds.example.org/cds-services"))
    rejected(verifier, bearer(token))


def test_expired_token_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(iat=int(NOW) - 400, exp=int(NOW) - 31))
    assert "expired" in rejected(verifier, bearer(token))


def test_expiry_within_leeway_accepted(verifier, keys):
    token = sign(keys["ES384"], payload=claims(iat=int(NOW) - 400, exp=int(NOW) - 29))
    verifier.verify(bearer(token), AUD)


def test_iat_in_the_future_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(iat=int(NOW) + 60, exp=int(NOW) + 300))
    assert "iat" in rejected(verifier, bearer(token))


def test_nbf_in_the_future_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(nbf=int(NOW) + 60))
    assert "nbf" in rejected(verifier, bearer(token))


def test_nbf_in_the_past_accepted(verifier, keys):
    verifier.verify(bearer(sign(keys["ES384"], payload=claims(nbf=int(NOW) - 10))), AUD)


def test_time_checks_use_the_injected_clock_not_pyjwt_wall_clock(keys, jwks):
    # Tokens valid at NOW (year 2027) but long expired by the injected clock's standard.
    verifier = JwtVerifier({ISS: {"jwks": jwks}}, clock=Clock(NOW + 10_000))
    assert "expired" in rejected(verifier, bearer(sign(keys["ES384"])))


def test_lifetime_longer_than_maximum_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(exp=int(NOW) + 3601))
    assert "lifetime" in rejected(verifier, bearer(token))


def test_exp_not_after_iat_rejected(verifier, keys):
    token = sign(keys["ES384"], payload=claims(iat=int(NOW), exp=int(NOW)))
    rejected(verifier, bearer(token))


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_required_claim_rejected(verifier, keys, claim):
    token = sign(keys["ES384"], payload=claims(**{claim: None}))
    assert claim in rejected(verifier, bearer(token))


@pytest.mark.parametrize("bad", [{"jti": ""}, {"jti": 42}, {"jti": "x" * 600},
                                 {"exp": "soon"}, {"iat": True}, {"nbf": "x"},
                                 {"aud": []}, {"aud": [1]}])
def test_malformed_claim_values_rejected(verifier, keys, bad):
    rejected(verifier, bearer(sign(keys["ES384"], payload=claims(**bad))))


# ----------------------------------------------------------------------------- replay


def test_replayed_jti_rejected(verifier, keys):
    token = bearer(sign(keys["ES384"]))
    verifier.verify(token, AUD)
    assert "replayed" in rejected(verifier, token)


def test_replayed_jti_in_a_new_token_rejected(verifier, keys):
    verifier.verify(bearer(sign(keys["ES384"], payload=claims(jti="same"))), AUD)
    token = sign(keys["RS384"], "RS384", "rsa", payload=claims(jti="same", exp=int(NOW) + 200))
    assert "replayed" in rejected(verifier, bearer(token))


def test_same_jti_accepted_again_after_first_token_expired(verifier, keys, clock):
    verifier.verify(bearer(sign(keys["ES384"], payload=claims(jti="reuse"))), AUD)
    clock.t = NOW + 300 + 31  # past exp + leeway of the first token
    later = claims(jti="reuse", iat=int(clock.t), exp=int(clock.t) + 300)
    assert verifier.verify(bearer(sign(keys["ES384"], payload=later)), AUD)["jti"] == "reuse"


def test_rejected_token_does_not_consume_its_jti(verifier, keys):
    rejected(verifier, bearer(sign(keys["ES384"], payload=claims(jti="j1", aud="x"))))
    verifier.verify(bearer(sign(keys["ES384"], payload=claims(jti="j1"))), AUD)


def test_concurrent_replays_accept_exactly_one(verifier, keys):
    token = bearer(sign(keys["ES384"]))
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt():
        barrier.wait()
        try:
            verifier.verify(token, AUD)
            results.append(True)
        except JwtRejected:
            results.append(False)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


def test_full_replay_cache_refuses_new_tokens_until_entries_expire(verifier, keys, clock):
    verifier.MAX_JTI_ENTRIES = 2
    verifier.verify(bearer(sign(keys["ES384"])), AUD)
    verifier.verify(bearer(sign(keys["ES384"])), AUD)
    assert "full" in rejected(verifier, bearer(sign(keys["ES384"])))
    clock.t = NOW + 331
    fresh = claims(iat=int(clock.t), exp=int(clock.t) + 300)
    verifier.verify(bearer(sign(keys["ES384"], payload=fresh)), AUD)


# ----------------------------------------------------------------------------- tenant


def test_allowlisted_tenant_accepted(jwks, keys, clock):
    verifier = JwtVerifier({ISS: {"jwks": jwks}}, tenants=["t1"], clock=clock)
    verifier.verify(bearer(sign(keys["ES384"], payload=claims(tenant="t1"))), AUD)


def test_tenant_not_allowlisted_rejected(jwks, keys, clock):
    verifier = JwtVerifier({ISS: {"jwks": jwks}}, tenants=["t1"], clock=clock)
    token = sign(keys["ES384"], payload=claims(tenant="t2"))
    assert "not allowed" in rejected(verifier, bearer(token))


def test_tenant_missing_when_required_rejected(jwks, keys, clock):
    verifier = JwtVerifier({ISS: {"jwks": jwks}}, tenants=["t1"], clock=clock)
    assert "tenant required" in rejected(verifier, bearer(sign(keys["ES384"])))


# ----------------------------------------------------------------------------- jku / JWKS fetch


@pytest.fixture
def remote(jwks, clock):
    fetch = FakeFetch(jwks)
    return JwtVerifier({ISS: {"jku": JKU}}, clock=clock, fetch_jwks=fetch), fetch


def test_header_jku_different_from_configured_rejected_and_never_fetched(remote, keys):
    verifier, fetch = remote
    token = sign(keys["ES384"], jku="https://attacker.example/jwks.json")
    assert "jku" in rejected(verifier, bearer(token))
    assert fetch.calls == []


def test_header_jku_equal_to_configured_accepted(remote, keys):
    verifier, fetch = remote
    verifier.verify(bearer(sign(keys["ES384"], jku=JKU)), AUD)
    assert fetch.calls == [JKU]


def test_header_jku_on_inline_issuer_is_never_fetched(jwks, keys, clock):
    fetch = FakeFetch(jwks)
    verifier = JwtVerifier({ISS: {"jwks": jwks}}, clock=clock, fetch_jwks=fetch)
    verifier.verify(bearer(sign(keys["ES384"], jku="https://attacker.example/j")), AUD)
    assert fetch.calls == []


def test_configured_jku_fetched_once_and_cached(remote, keys, clock):
    verifier, fetch = remote
    for _ in range(3):
        verifier.verify(bearer(sign(keys["ES384"])), AUD)
    verifier.verify(bearer(sign(keys["RS384"], "RS384", "rsa")), AUD)
    assert fetch.calls == [JKU]


def test_jwks_refetched_after_cache_expiry(remote, keys, clock):
    verifier, fetch = remote
    verifier.verify(bearer(sign(keys["ES384"])), AUD)
    clock.t = NOW + 301
    token = sign(keys["ES384"], payload=claims(iat=int(clock.t), exp=int(clock.t) + 300))
    verifier.verify(bearer(token), AUD)
    assert len(fetch.calls) == 2


def test_unknown_kid_refetches_at_most_once_per_30_seconds(remote, keys, clock, jwks):
    verifier, fetch = remote
    verifier.verify(bearer(sign(keys["ES384"])), AUD)  # fetch 1
    rotated = ec.generate_private_key(ec.SECP384R1())
    fetch.jwks = {"keys": [*jwks["keys"], public_jwk(rotated, "rotated", "ES384")]}
    clock.t = NOW + 10
    for _ in range(50):  # a flood of unknown kids inside the window triggers no fetch
        rejected(verifier, bearer(sign(rotated, kid=f"k-{uuid.uuid4()}")))
    assert "rate-limited" in rejected(verifier, bearer(sign(rotated, kid="rotated")))
    assert len(fetch.calls) == 1
    clock.t = NOW + 31
    token = sign(rotated, kid="rotated", payload=claims(iat=int(clock.t), exp=int(clock.t) + 60))
    verifier.verify(bearer(token), AUD)  # fetch 2 picks up the rotated key
    assert len(fetch.calls) == 2
    for _ in range(20):
        rejected(verifier, bearer(sign(rotated, kid=f"k-{uuid.uuid4()}")))
    assert len(fetch.calls) == 2


def test_fetch_failure_rejected_not_raised_and_retry_rate_limited(jwks, keys, clock):
    fetch = FakeFetch(error=ConnectionError("boom"))
    verifier = JwtVerifier({ISS: {"jku": JKU}}, clock=clock, fetch_jwks=fetch)
    assert "fetch" in rejected(verifier, bearer(sign(keys["ES384"])))
    rejected(verifier, bearer(sign(keys["ES384"])))
    assert len(fetch.calls) == 1
    fetch.error, fetch.jwks = None, jwks
    clock.t = NOW + 30
    token = sign(keys["ES384"], payload=claims(iat=int(clock.t), exp=int(clock.t) + 60))
    verifier.verify(bearer(token), AUD)
    assert len(fetch.calls) == 2


@pytest.mark.parametrize("body", [None, [], {"keys": "x"}, {"nokeys": []}])
def test_fetched_document_that_is_not_a_jwks_rejected(keys, clock, body):
    verifier = JwtVerifier({ISS: {"jku": JKU}}, clock=clock, fetch_jwks=FakeFetch(body))
    assert "fetch" in rejected(verifier, bearer(sign(keys["ES384"])))


def test_duplicate_kid_in_fetched_jwks_rejected(keys, clock, jwks):
    other = public_jwk(ec.generate_private_key(ec.SECP384R1()), "ec384", "ES384")
    fetch = FakeFetch({"keys": [*jwks["keys"], other]})
    verifier = JwtVerifier({ISS: {"jku": JKU}}, clock=clock, fetch_jwks=fetch)
    assert "not unique" in rejected(verifier, bearer(sign(keys["ES384"])))


class _JwksServer:
    def __init__(self, body: bytes, status: int = 200):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_default_fetcher_gets_jwks_over_real_http_and_caches(jwks, keys):
    with _JwksServer(json.dumps(jwks).encode()) as srv:
        verifier = JwtVerifier({ISS: {"jku": srv.url}}, clock=Clock())
        verifier.verify(bearer(sign(keys["ES384"], jku=srv.url)), AUD)
        verifier.verify(bearer(sign(keys["RS384"], "RS384", "rsa")), AUD)
    assert srv.hits == ["/jwks.json"]


def test_default_fetcher_http_error_rejected(keys):
    with _JwksServer(b"not found", status=404) as srv:
        verifier = JwtVerifier({ISS: {"jku": srv.url}}, clock=Clock())
        assert "fetch" in rejected(verifier, bearer(sign(keys["ES384"])))


# ----------------------------------------------------------------------------- logging


def test_logs_never_contain_the_token_or_other_claims(verifier, keys, caplog):
    caplog.set_level(logging.DEBUG, logger="cds_service.security.jwt_auth")
    good = sign(keys["ES384"], payload=claims(sub="secret-subject", tenant="t1"))
    verifier.verify(bearer(good), AUD)
    rejected(verifier, bearer(good))  # replay
    bad = sign(keys["ES384"], payload=claims(aud="https://x.example/secret-aud"))
    rejected(verifier, bearer(bad))
    text = caplog.text
    assert caplog.records
    for token in (good, bad):
        for part in token.split("."):
            assert part not in text
    assert "secret-subject" not in text and "secret-aud" not in text


# ----------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("issuers, message", [
    ({}, "at least one"),
    ([], "mapping"),
    ({"": {"jku": JKU}}, "non-empty string"),
    ({ISS: "https://x"}, "object"),
    ({ISS: {}}, "exactly one"),
    ({ISS: {"jku": JKU, "jwks": {"keys": []}}}, "exactly one"),
    ({ISS: {"jku": JKU, "extra": 1}}, "unknown key"),
    ({ISS: {"jwks": {"kid": "x"}}}, "'keys'"),
    ({ISS: {"jwks": {"keys": []}}}, "non-empty array"),
    ({ISS: {"jwks": {"keys": ["x"]}}}, "JWK object"),
    ({ISS: {"jwks": {"keys": [SPEC_PRIVATE_JWK]}}}, "private"),
    ({ISS: {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}}, "symmetric"),
    ({ISS: {"jwks": {"keys": [SPEC_PUBLIC_JWKS["keys"][0]] * 2}}}, "duplicate kid"),
    ({ISS: {"jku": "/relative/jwks.json"}}, "absolute http"),
    ({ISS: {"jku": "ftp://host/jwks.json"}}, "absolute http"),
    ({ISS: {"jku": "https://"}}, "absolute http"),
    ({ISS: {"jku": 42}}, "absolute http"),
])
def test_malformed_issuers_config_raises_value_error(issuers, message):
    with pytest.raises(ValueError, match=message):
        JwtVerifier(issuers)


@pytest.mark.parametrize("kwargs", [{"tenants": "t1"}, {"leeway_seconds": -1},
                                    {"max_lifetime_seconds": 0}, {"jwks_cache_seconds": 5},
                                    {"fetch_jwks": "nope"}])
def test_malformed_options_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        JwtVerifier({ISS: {"jku": JKU}}, **kwargs)
