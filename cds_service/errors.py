"""Errors a client can act on: what was wrong, where, and what to send instead.

Every error that reaches the HTTP layer is a ``ClientError``; the web layer
turns it into ``{"error": ..., "details": [{"pointer": ..., "message": ...}]}``
with the error's status code. Nothing a client sends may end as a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Violation:
    """One thing wrong with a document, located by RFC 6901 JSON pointer."""

    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


@dataclass
class ClientError(Exception):
    status: int
    error: str
    details: list[Violation] = field(default_factory=list)

    def __str__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.status} {self.error}"

    def body(self) -> dict:
        out: dict = {"error": self.error}
        if self.details:
            out["details"] = [v.as_dict() for v in self.details]
        return out


def bad_request(error: str, details: list[Violation] | None = None) -> ClientError:
    return ClientError(400, error, list(details or []))


def precondition_failed(error: str, details: list[Violation] | None = None) -> ClientError:
    return ClientError(412, error, list(details or []))


def pointer_join(*parts: object) -> str:
    """Build a JSON pointer from path parts, escaping ``~`` and ``/``."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join("/" + p for p in escaped)
