"""Which FHIR servers the service may contact (CONTRACT §1, ``FHIR_SERVERS``).

Matching is URL-aware, not a string prefix test: scheme, host (case-insensitive)
and effective port must be equal, the candidate must carry no userinfo, no
query and no fragment, and its path must be the allowed path or lie under it
on a segment boundary. Paths are compared segment by segment after
percent-decoding, and any ``.``/``..`` segment (however encoded), backslash,
empty interior segment or control character makes a candidate unacceptable, so
``https://a/r4/%2e%2e/admin`` never counts as being under ``https://a/r4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]


def normalise_base(url: str) -> str:
    """A FHIR base URL without trailing slashes (``https://a/r4/`` -> ``https://a/r4``)."""
    return url.rstrip("/")


def _parse(url: object, *, allow_query: bool) -> _Parsed | None:
    """Split ``url`` into comparable parts; None when it is not an acceptable URL."""
    if not isinstance(url, str) or not url:
        return None
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        return None
    if "@" in parts.netloc:
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return None
    if parts.fragment or "#" in url:
        return None
    if not allow_query and (parts.query or "?" in url):
        return None
    path = parts.path
    segments = path.split("/")[1:] if path else []
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is insignificant
    decoded: list[str] = []
    for raw in segments:
        seg = unquote(raw)
        if seg == "":
            return None  # "//" inside the path
        for piece in seg.replace("\\", "/").split("/"):
            if piece in (".", "..") or piece == "":
                return None  # dot segments or encoded separators
        decoded.append(seg)
    return _Parsed(scheme, host, port or DEFAULT_PORTS[scheme], tuple(decoded))


def _under(candidate: _Parsed, allowed: _Parsed) -> bool:
    return (
        candidate.scheme == allowed.scheme
        and candidate.host == allowed.host
        and candidate.port == allowed.port
        and candidate.segments[: len(allowed.segments)] == allowed.segments
    )


def server_allowed(url: str, allowed: list[str] | None, *, allow_query: bool = False) -> bool:
    """True when ``url`` is a well-formed http(s) URL on one of the ``allowed`` servers.

    ``allowed`` None means any server (the URL must still be well-formed:
    http or https, a host, no userinfo, no query or fragment, no dot segments).
    ``allow_query`` permits a query string on the candidate, for following a
    search Bundle's ``next`` link; it never relaxes any other rule.
    Entries of ``allowed`` that are not acceptable URLs themselves match nothing.
    """
    candidate = _parse(url, allow_query=allow_query)
    if candidate is None:
        return False
    if allowed is None:
        return True
    for entry in allowed:
        base = _parse(entry, allow_query=False)
        if base is not None and _under(candidate, base):
            return True
    return False
