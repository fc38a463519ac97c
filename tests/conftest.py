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
