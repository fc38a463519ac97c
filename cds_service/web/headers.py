"""Security headers on every response.

The API answers JSON only: nothing may render, frame or embed it, and nothing
it returns may be cached (hook responses carry patient data). The ``/sandbox``
page loads its own scripts, styles and images, so it gets a same-origin policy
instead. A view that sets one of these headers itself keeps its value.
"""

from __future__ import annotations

from flask import Flask, Response, request

API_CSP = "default-src 'none'; frame-ancestors 'none'"
SANDBOX_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
SANDBOX_PREFIX = "/sandbox"

_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _is_sandbox(path: str) -> bool:
    return path == SANDBOX_PREFIX or path.startswith(SANDBOX_PREFIX + "/")


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    for name, value in _ALWAYS.items():
        headers.setdefault(name, value)
    if _is_sandbox(request.path):
        headers.setdefault("Content-Security-Policy", SANDBOX_CSP)
    else:
        headers.setdefault("Content-Security-Policy", API_CSP)
        headers.setdefault("Cache-Control", "no-store")
    return response


def secure_headers(app: Flask) -> None:
    app.after_request(add_security_headers)
