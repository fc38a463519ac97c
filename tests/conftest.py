"""Shared fixtures: an app per configuration, and a check applied to every response."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.protocol.validation import validate_response

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture
def make_app(tmp_path):
    """Build an app with a private SQLite file; keyword arguments are config keys."""

    def build(**config):
        config.setdefault("DATABASE_URL", f"sqlite:///{tmp_path / 'cds.sqlite'}")
        config.setdefault("TESTING", True)
        return create_app(config)

    return build


@pytest.fixture(scope="module")
def module_client(tmp_path_factory):
    """One app and client for a whole test module that needs no particular configuration."""
    folder = tmp_path_factory.mktemp("db")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}", "TESTING": True})
    return app.test_client()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def assert_conformant(body: dict) -> None:
    """Every response the tests see must be valid CDS Hooks 2.0 output."""
    violations = validate_response(body)
    assert violations == [], "\n".join(f"{v.pointer}: {v.message}" for v in violations)


def rule_ids(body: dict) -> list[str]:
    return sorted(card["source"]["topic"]["code"] for card in body["cards"])


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# The complete JWT of the CDS Hooks 2.0.1 spec example (ES384, kid example-kid).
SPEC_TOKEN = (
    "eyJhbGciOiJFUzM4NCIsInR5cCI6IkpXVCIsImtpZCI6ImV4YW1wbGUta2lkIiwiamt1IjoiaHR0cHM6Ly9maGlyLW"
    "Voci5leGFtcGxlLmNvbS9qd2tfdXJpIn0.eyJpc3MiOiJodHRwczovL2ZoaXItZWhyLmV4YW1wbGUuY29tLyIsImF1"
    "ZCI6Imh0dHBzOi8vY2RzLmV4YW1wbGUub3JnL2Nkcy1zZXJ2aWNlcy9zb21lLXNlcnZpY2UiLCJleHAiOjE0MjI1Nj"
    "g4NjAsImlhdCI6MTMxMTI4MDk3MCwianRpIjoiZWUyMmIwMjEtZTFiNy00NjExLWJhNWItOGVlYzZhMzNhYzFlIiwi"
    "dGVuYW50IjoiMmRkZDZjM2EtOGU5YS00NGM2LWEzMDUtNTIxMTFhZDMwMmEyIn0.d1WfLjGRKlcWB94l9do4cM8REX"
    "eYJLL6SGUBO8VHZhfM8mwKYP70EMxJ67War4TQblEpaQrp11wx5p7oPFm2ETYgCicS84vXWEIYTdjooZdooCSDf2L8"
    "-i4awdoUwiEb")
