"""Verification of the JWTs CDS Clients present (CDS Hooks 2.0 "Trusting CDS Clients").

Every call carries ``Authorization: Bearer <jwt>``. A token is accepted only when:

* its header names an asymmetric ``alg`` from a fixed allowlist, a ``kid``, and (if present) the
  ``typ`` ``JWT``;
* its ``iss`` is a configured issuer and the ``kid`` selects a key of the right type from that
  issuer's JWK Set (configured inline, or fetched from the issuer's *configured* ``jku``; a ``jku``
  in the token header is never fetched, and for a ``jku``-configured issuer it must equal the
  configured URL);
* the signature is valid, ``aud`` names the endpoint being called, ``exp``/``iat``/``nbf`` hold
  against the real clock, the lifetime ``exp - iat`` is bounded, ``jti`` was not used before while
  the earlier token was still valid, and ``tenant`` is allowlisted when an allowlist is configured.

Failures raise :class:`JwtRejected`, whose ``reason`` is for server logs only. Tokens are never
logged; of the claims only ``iss``, ``jti``, ``tenant`` (and the header ``kid``) may appear in logs.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

logger = logging.getLogger(__name__)

__all__ = ["JwtRejected", "JwtVerifier", "ALLOWED_ALGORITHMS"]

#: Asymmetric algorithms accepted in the token header. Never ``none``, never HS*.
ALLOWED_ALGORITHMS: frozenset[str] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_EC_CURVES = {"ES256": ("P-256", "secp256r1"), "ES384": ("P-384", "secp384r1"),
              "ES512": ("P-521", "secp521r1")}
_MIN_RSA_BITS = 2048
#: JWK members that carry private (or symmetric) key material.
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_BEARER_RE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_MAX_TOKEN_CHARS = 16 * 1024
_MAX_JTI_CHARS = 512
_MAX_JWKS_BYTES = 1024 * 1024
_FETCH_TIMEOUT = (3, 5)  # (connect, read) seconds


class JwtRejected(Exception):
    """Token refused. `reason` is for server logs only; never sent to clients."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _short(value: Any, limit: int = 80) -> str:
    """repr() of an untrusted value, truncated, safe to put in a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def default_fetch_jwks(url: str) -> dict:
    """GET a JWK Set: (3 s connect, 5 s read) timeouts, no redirects, body capped at 1 MiB."""
    with requests.get(url, timeout=_FETCH_TIMEOUT, allow_redirects=False, stream=True,
                      headers={"Accept": "application/json"}) as resp:
        if resp.status_code != 200:
            raise ValueError(f"JWKS fetch returned HTTP {resp.status_code}")
        body = bytearray()
        for chunk in resp.iter_content(chunk_size=65536):
            body += chunk
            if len(body) > _MAX_JWKS_BYTES:
                raise ValueError("JWKS body too large")
    return json.loads(bytes(body))


# --------------------------------------------------------------------------- configuration

_AMBIGUOUS = object()  # marks a kid that occurs more than once in a JWK Set


def _index_jwks(jwks: Any) -> dict[str, Any]:
    """kid -> JWK dict (or _AMBIGUOUS). Raises ValueError if `jwks` is not a JWK Set."""
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWK Set (an object with a 'keys' array)")
    index: dict[str, Any] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            continue  # a key without kid can never be selected
        index[kid] = _AMBIGUOUS if kid in index else dict(jwk)
    return index


def _check_jku(iss: str, jku: Any) -> str:
    if not isinstance(jku, str) or not jku or any(c.isspace() for c in jku):
        raise ValueError(f"JWT_ISSUERS[{iss!r}]['jku'] must be an absolute http(s) URL string")
    try:
        parts = urlsplit(jku)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"JWT_ISSUERS[{iss!r}]['jku'] is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"JWT_ISSUERS[{iss!r}]['jku'] must be an absolute http(s) URL, "
                         f"got {jku!r}")
    return jku


@dataclass
class _RemoteJwks:
    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (kid index, fetched_at); replaced as a whole so readers need no lock
    snapshot: tuple[dict[str, Any], float] | None = None
    last_attempt: float | None = None


@dataclass
class _Issuer:
    iss: str
    inline: dict[str, Any] | None = None
    remote: _RemoteJwks | None = None


def _parse_issuers(issuers: Any) -> dict[str, _Issuer]:
    if not isinstance(issuers, Mapping):
        raise ValueError("JWT_ISSUERS must be a mapping {iss: {'jwks': {...}} | {'jku': url}}")
    if not issuers:
        raise ValueError("JWT_ISSUERS must name at least one trusted issuer")
    parsed: dict[str, _Issuer] = {}
    for iss, entry in issuers.items():
        if not isinstance(iss, str) or not iss.strip():
            raise ValueError(f"JWT_ISSUERS key {iss!r}: issuer must be a non-empty string")
        if not isinstance(entry, Mapping):
            raise ValueError(f"JWT_ISSUERS[{iss!r}] must be an object with 'jwks' or 'jku'")
        unknown = sorted(str(k) for k in entry if k not in ("jwks", "jku"))
        if unknown:
            raise ValueError(f"JWT_ISSUERS[{iss!r}]: unknown key(s) {unknown}; "
                             "allowed: 'jwks' or 'jku'")
        has_jwks, has_jku = "jwks" in entry, "jku" in entry
        if has_jwks == has_jku:
            raise ValueError(f"JWT_ISSUERS[{iss!r}] must have exactly one of 'jwks' or 'jku'")
        if has_jku:
            parsed[iss] = _Issuer(iss, remote=_RemoteJwks(_check_jku(iss, entry["jku"])))
            continue
        jwks = entry["jwks"]
        if not isinstance(jwks, Mapping) or "keys" not in jwks:
            raise ValueError(f"JWT_ISSUERS[{iss!r}]['jwks'] must be a JWK Set with a 'keys' array")
        if not isinstance(jwks["keys"], list) or not jwks["keys"]:
            raise ValueError(f"JWT_ISSUERS[{iss!r}]['jwks']['keys'] must be a non-empty array")
        for i, jwk in enumerate(jwks["keys"]):
            if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kty"), str):
                raise ValueError(f"JWT_ISSUERS[{iss!r}]['jwks']['keys'][{i}] must be a JWK "
                                 "object with a 'kty'")
            secret = sorted(_PRIVATE_JWK_MEMBERS.intersection(jwk))
            if secret:
                raise ValueError(f"JWT_ISSUERS[{iss!r}]['jwks']['keys'][{i}] contains private or "
                                 f"symmetric key material {secret}; configure public keys only")
        index = _index_jwks(jwks)
        dupes = sorted(k for k, v in index.items() if v is _AMBIGUOUS)
        if dupes:
            raise ValueError(f"JWT_ISSUERS[{iss!r}]['jwks'] has duplicate kid(s) {dupes}")
        parsed[iss] = _Issuer(iss, inline=index)
    return parsed


# --------------------------------------------------------------------------- verifier


class JwtVerifier:
    """Verifies CDS Hooks client JWTs. Thread-safe; keep one instance per application."""

    #: minimum interval between two JWKS fetches for one issuer (key-rotation refetch included)
    REFETCH_INTERVAL_SECONDS = 30.0
    #: bound on remembered jti values; when full of unexpired entries new tokens are refused
    MAX_JTI_ENTRIES = 100_000

    def __init__(self, issuers: dict, *, tenants: list[str] | None = None,
                 leeway_seconds: int = 30, max_lifetime_seconds: int = 3600,
                 clock: Callable[[], float] = time.time,
                 fetch_jwks: Callable[[str], dict] | None = None,
                 jwks_cache_seconds: int = 300):
        self._issuers = _parse_issuers(issuers)
        if tenants is not None:
            if isinstance(tenants, str) or not all(isinstance(t, str) for t in tenants):
                raise ValueError("tenants must be a list of strings (or None for no check)")
            tenants = frozenset(tenants)
        self._tenants: frozenset[str] | None = tenants
        if not _is_number(leeway_seconds) or leeway_seconds < 0:
            raise ValueError("leeway_seconds must be a number >= 0")
        if not _is_number(max_lifetime_seconds) or max_lifetime_seconds <= 0:
            raise ValueError("max_lifetime_seconds must be a number > 0")
        if not _is_number(jwks_cache_seconds) or jwks_cache_seconds < self.REFETCH_INTERVAL_SECONDS:
            raise ValueError(f"jwks_cache_seconds must be >= {self.REFETCH_INTERVAL_SECONDS:g}")
        if not callable(clock):
            raise ValueError("clock must be callable")
        if fetch_jwks is not None and not callable(fetch_jwks):
            raise ValueError("fetch_jwks must be callable or None")
        self._leeway = float(leeway_seconds)
        self._max_lifetime = float(max_lifetime_seconds)
        self._clock = clock
        self._fetch = fetch_jwks or default_fetch_jwks
        self._jwks_cache_seconds = float(jwks_cache_seconds)
        self._jti_lock = threading.Lock()
        self._jti_seen: dict[tuple[str, str], float] = {}  # (iss, jti) -> forget-after time
        self._jti_heap: list[tuple[float, tuple[str, str]]] = []

    # ------------------------------------------------------------------ public

    def verify(self, authorization_header: str | None, audience: str) -> dict:
        """Return the verified claims, or raise JwtRejected."""
        try:
            claims = self._verify(authorization_header, audience)
        except JwtRejected as exc:
            logger.info("JWT rejected: %s", exc.reason)
            raise
        except Exception as exc:  # never leak an unexpected error as anything but a rejection
            reason = f"unexpected error during verification ({type(exc).__name__})"
            logger.warning("JWT rejected: %s", reason)
            raise JwtRejected(reason) from None
        logger.debug("JWT accepted: iss=%s jti=%s tenant=%s", _short(claims.get("iss")),
                     _short(claims.get("jti")), _short(claims.get("tenant")))
        return claims

    # ------------------------------------------------------------------ steps

    def _verify(self, authorization_header: str | None, audience: str) -> dict:
        if not isinstance(audience, str) or not audience:
            raise JwtRejected("no audience to check against")
        token = self._bearer_token(authorization_header)
        header = self._checked_header(token)
        alg, kid = header["alg"], header["kid"]

        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except Exception as exc:
            raise JwtRejected(f"undecodable token payload ({type(exc).__name__})") from None
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise JwtRejected("iss missing or not a string")
        issuer = self._issuers.get(iss)
        if issuer is None:
            raise JwtRejected(f"untrusted iss {_short(iss)}")

        if "jku" in header:
            # Never fetched. For a jku-configured issuer it must name exactly that URL; for an
            # issuer with inline keys it is ignored (the configured keys are authoritative).
            if issuer.remote is not None and header["jku"] != issuer.remote.url:
                raise JwtRejected(f"header jku differs from the configured jku for iss "
                                  f"{_short(iss)}")

        jwk = self._find_jwk(issuer, kid)
        key = self._public_key(jwk, alg, kid)

        norm_aud = audience.removesuffix("/")
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg],
                audience=[norm_aud, norm_aud + "/"], issuer=iss, leeway=self._leeway,
                options={"require": ["exp", "iat", "jti", "iss", "aud"],
                         "verify_signature": True, "verify_aud": True, "verify_iss": True,
                         # time claims are checked below against self._clock
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError as exc:
            raise JwtRejected(f"token invalid: {type(exc).__name__}: "
                              f"{str(exc)[:120]} (iss {_short(iss)}, kid {_short(kid)})") from None

        self._check_audience(claims.get("aud"), norm_aud)
        now = self._clock()
        self._check_times(claims, now)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise JwtRejected("jti missing, empty or not a string")
        if len(jti) > _MAX_JTI_CHARS:
            raise JwtRejected("jti too long")
        if self._tenants is not None:
            tenant = claims.get("tenant")
            if not isinstance(tenant, str) or not tenant:
                raise JwtRejected(f"tenant required but missing (iss {_short(iss)})")
            if tenant not in self._tenants:
                raise JwtRejected(f"tenant {_short(tenant)} not allowed (iss {_short(iss)})")
        self._record_jti(iss, jti, float(claims["exp"]), now)
        return claims

    @staticmethod
    def _bearer_token(authorization_header: str | None) -> str:
        if authorization_header is None or not isinstance(authorization_header, str) \
                or not authorization_header.strip():
            raise JwtRejected("missing Authorization header")
        if len(authorization_header) > _MAX_TOKEN_CHARS:
            raise JwtRejected("Authorization header too large")
        match = _BEARER_RE.match(authorization_header)
        if match is None:
            raise JwtRejected("malformed Authorization header")
        scheme, token = match.groups()
        if scheme.lower() != "bearer":
            raise JwtRejected("Authorization scheme is not Bearer")
        if not _TOKEN_RE.match(token):
            raise JwtRejected("bearer token is not a compact JWS")
        return token

    @staticmethod
    def _checked_header(token: str) -> dict:
        try:
            header = jwt.get_unverified_header(token)
        except Exception as exc:
            raise JwtRejected(f"undecodable token header ({type(exc).__name__})") from None
        if not isinstance(header, dict):
            raise JwtRejected("token header is not an object")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise JwtRejected(f"alg {_short(alg)} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JwtRejected("kid missing from token header")
        typ = header.get("typ")
        if "typ" in header and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise JwtRejected(f"typ {_short(typ)} is not JWT")
        if "crit" in header or "b64" in header:
            raise JwtRejected("critical header extensions are not supported")
        if "jku" in header and not isinstance(header["jku"], str):
            raise JwtRejected("header jku is not a string")
        return header

    def _find_jwk(self, issuer: _Issuer, kid: str) -> dict:
        if issuer.inline is not None:
            return self._select(issuer.inline, issuer.iss, kid)
        remote = issuer.remote
        assert remote is not None
        snap = remote.snapshot
        if snap is not None and self._fresh(snap, self._clock()) and kid in snap[0]:
            return self._select(snap[0], issuer.iss, kid)
        with remote.lock:  # one fetch at a time per issuer; re-check under the lock
            now = self._clock()
            snap = remote.snapshot
            fresh = snap is not None and self._fresh(snap, now)
            if fresh and kid in snap[0]:
                return self._select(snap[0], issuer.iss, kid)
            last = remote.last_attempt
            if last is not None and 0 <= now - last < self.REFETCH_INTERVAL_SECONDS:
                if fresh:
                    raise JwtRejected(f"unknown kid {_short(kid)} for iss {_short(issuer.iss)} "
                                      "(JWKS refetch rate-limited)")
                raise JwtRejected(f"JWKS for iss {_short(issuer.iss)} unavailable "
                                  "(fetch rate-limited after a recent attempt)")
            remote.last_attempt = now
            try:
                index = _index_jwks(self._fetch(remote.url))
            except Exception as exc:
                logger.warning("JWKS fetch for iss %s from %s failed: %s", _short(issuer.iss),
                               remote.url, type(exc).__name__)
                raise JwtRejected(f"JWKS fetch for iss {_short(issuer.iss)} failed "
                                  f"({type(exc).__name__})") from None
            remote.snapshot = (index, now)
            logger.info("JWKS for iss %s fetched from %s (%d keys with kid)",
                        _short(issuer.iss), remote.url, len(index))
            return self._select(index, issuer.iss, kid)

    def _fresh(self, snap: tuple[dict, float], now: float) -> bool:
        return 0 <= now - snap[1] < self._jwks_cache_seconds

    @staticmethod
    def _select(index: dict[str, Any], iss: str, kid: str) -> dict:
        jwk = index.get(kid)
        if jwk is None:
            raise JwtRejected(f"unknown kid {_short(kid)} for iss {_short(iss)}")
        if jwk is _AMBIGUOUS:
            raise JwtRejected(f"kid {_short(kid)} is not unique in the JWKS of iss {_short(iss)}")
        return jwk

    @staticmethod
    def _public_key(jwk: dict, alg: str, kid: str) -> Any:
        where = f"key {_short(kid)}"
        use = jwk.get("use")
        if use is not None and use != "sig":
            raise JwtRejected(f"{where} is not a signature key (use {_short(use)})")
        key_ops = jwk.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            raise JwtRejected(f"{where} key_ops does not allow verify")
        key_alg = jwk.get("alg")
        if key_alg is not None and key_alg != alg:
            raise JwtRejected(f"{where} alg {_short(key_alg)} does not match header alg {alg}")
        kty = jwk.get("kty")
        if alg.startswith(("RS", "PS")):
            if kty != "RSA":
                raise JwtRejected(f"{where} kty {_short(kty)} does not fit alg {alg}")
        else:
            crv, curve_name = _EC_CURVES[alg]
            if kty != "EC" or jwk.get("crv") != crv:
                raise JwtRejected(f"{where} kty/crv {_short(kty)}/{_short(jwk.get('crv'))} "
                                  f"does not fit alg {alg}")
        public_jwk = {k: v for k, v in jwk.items() if k not in _PRIVATE_JWK_MEMBERS}
        try:
            key = jwt.PyJWK(public_jwk, algorithm=alg).key
        except Exception as exc:
            raise JwtRejected(f"{where} unusable ({type(exc).__name__})") from None
        if alg.startswith(("RS", "PS")):
            if not isinstance(key, rsa.RSAPublicKey):
                raise JwtRejected(f"{where} is not an RSA public key")
            if key.key_size < _MIN_RSA_BITS:
                raise JwtRejected(f"{where} RSA modulus below {_MIN_RSA_BITS} bits")
        elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve_name:
            raise JwtRejected(f"{where} is not an EC public key on {crv}")
        return key

    @staticmethod
    def _check_audience(aud: Any, norm_aud: str) -> None:
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not values \
                or not all(isinstance(v, str) for v in values):
            raise JwtRejected("aud is not a string or an array of strings")
        if norm_aud not in (v.removesuffix("/") for v in values):
            raise JwtRejected("aud does not name this endpoint")

    def _check_times(self, claims: dict, now: float) -> None:
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _is_number(exp):
            raise JwtRejected("exp is not a number")
        if not _is_number(iat):
            raise JwtRejected("iat is not a number")
        if "nbf" in claims and not _is_number(nbf):
            raise JwtRejected("nbf is not a number")
        if exp <= now - self._leeway:
            raise JwtRejected("token expired")
        if iat > now + self._leeway:
            raise JwtRejected("iat is in the future")
        if nbf is not None and nbf > now + self._leeway:
            raise JwtRejected("token not yet valid (nbf)")
        if exp <= iat:
            raise JwtRejected("exp is not after iat")
        if exp - iat > self._max_lifetime:
            raise JwtRejected(f"token lifetime {exp - iat:g}s exceeds {self._max_lifetime:g}s")

    def _record_jti(self, iss: str, jti: str, exp: float, now: float) -> None:
        """Atomically refuse a replayed jti or remember it until its token can no longer pass."""
        key = (iss, jti)
        forget_after = exp + self._leeway
        with self._jti_lock:
            heap, seen = self._jti_heap, self._jti_seen
            while heap and heap[0][0] <= now:
                when, old = heapq.heappop(heap)
                if seen.get(old) == when:
                    del seen[old]
            previous = seen.get(key)
            if previous is not None and previous > now:
                raise JwtRejected(f"replayed jti {_short(jti)} (iss {_short(iss)})")
            if len(seen) >= self.MAX_JTI_ENTRIES:
                logger.warning("JWT replay cache full (%d entries); refusing new tokens",
                               len(seen))
                raise JwtRejected("replay cache full")
            seen[key] = forget_after
            heapq.heappush(heap, (forget_after, key))
