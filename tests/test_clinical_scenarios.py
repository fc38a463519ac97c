"""Every scenario in fixtures/ through HTTP: exactly the expected rules fire, and the
response is valid CDS Hooks 2.0."""

from __future__ import annotations

from functools import cache

import pytest

from cds_service import create_app
from cds_service.scenario import default_fixtures_dir, load_scenario, scenario_files
from tests.conftest import assert_conformant, rule_ids

SCENARIOS = scenario_files(default_fixtures_dir())


@cache
def app_at(evaluation_time: str | None):
    return create_app({"EVALUATION_TIME": evaluation_time, "DATABASE_URL": "sqlite://",
                       "TESTING": True})


def fire(path):
    scenario = load_scenario(path)
    app = app_at(scenario.evaluation_time)
    knowledge = app.extensions["cds"].knowledge
    service = next(s for s in knowledge.services.values() if s.hook == scenario.hook)
    response = app.test_client().post(f"/cds-services/{service.id}",
                                      json=scenario.request(service))
    return scenario, response


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_fires_exactly_the_expected_rules(path):
    scenario, response = fire(path)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    assert rule_ids(body) == scenario.expected_rules


def test_every_rule_has_a_firing_scenario_and_two_silent_ones():
    knowledge = app_at(None).extensions["cds"].knowledge
    fires = {rule: 0 for rule in knowledge.rules}
    silent = {rule: 0 for rule in knowledge.rules}
    for path in SCENARIOS:
        scenario = load_scenario(path)
        for rule in scenario.expected_rules:
            fires[rule] += 1
        for rule in scenario.silent_rules:
            silent[rule] += 1
    assert [r for r, n in fires.items() if n == 0] == []
    assert [r for r, n in silent.items() if n < 2] == []
