"""Source case 1 (fixtures/source-case-1.json) as a patient-view call, for the tests of the
platform concerns (logs, metrics, headers, time budget) that need a realistic request.

Its patient is ``case1-patient``, "Casey Synthetic", born 1979-03-02: data that must
never show in a log line or a metric label.
"""

from __future__ import annotations

from functools import cache

import pytest
from flask import Flask

from cds_service import create_app
from cds_service.engine.knowledge import Knowledge, load_knowledge
from cds_service.scenario import default_fixtures_dir, load_scenario

PV_ID = "spine-postop-patient-view"
PV = f"/cds-services/{PV_ID}"
CASE_1 = load_scenario(default_fixtures_dir() / "source-case-1.json")
PATIENT_DATA = ("case1-patient", "Casey", "Synthetic", "1979-03-02")
#: A public key set to turn JWT verification on with (no test here signs with it).
SOME_JWKS = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                       "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}


def case1_request() -> dict:
    """A fresh patient-view request for case 1, every prefetch key filled."""
    return CASE_1.request(_knowledge().services[PV_ID])


def module_app(**config):
    """A module-wide ``app`` fixture evaluating at case 1's time, with its own SQLite file:
    ``app = module_app()`` in a test module (building an app loads the knowledge)."""

    @pytest.fixture(scope="module")
    def app(tmp_path_factory) -> Flask:
        folder = tmp_path_factory.mktemp("db")
        return create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}",
                           "TESTING": True, "EVALUATION_TIME": CASE_1.evaluation_time,
                           **config})

    return app


@cache
def _knowledge() -> Knowledge:
    return load_knowledge()
