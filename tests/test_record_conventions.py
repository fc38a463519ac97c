"""How the record is read (clinical/rules.md, "Reading the record"), shown through HTTP on
variations of source case 1: a left foot drop two days after a recent discectomy."""

from __future__ import annotations

import copy
from functools import cache

from cds_service import create_app
from cds_service.scenario import build_request, default_fixtures_dir, load_scenario
from tests.conftest import assert_conformant, rule_ids

CASE = load_scenario(default_fixtures_dir() / "source-case-1.json")
SERVICE = "spine-postop-patient-view"


@cache
def _app():
    return create_app({"EVALUATION_TIME": CASE.evaluation_time, "DATABASE_URL": "sqlite://",
                       "TESTING": True})


def fire(resources: list[dict]) -> dict:
    app = _app()
    service = app.extensions["cds"].knowledge.services[SERVICE]
    response = app.test_client().post(f"/cds-services/{SERVICE}",
                                      json=build_request(service, resources))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    return body


def with_foot_drop(change) -> list[dict]:
    resources = copy.deepcopy(CASE.resources)
    foot_drop = next(r for r in resources if r.get("id") == "foot-drop")
    change(foot_drop)
    return resources


def test_the_unchanged_case_fires_urgent_decompression():
    assert "urgent-decompression" in rule_ids(fire(CASE.resources))


def test_an_abated_condition_without_a_status_does_not_count():
    def abate(condition):
        del condition["clinicalStatus"]
        condition["abatementDateTime"] = "2026-06-14"
    assert "urgent-decompression" not in rule_ids(fire(with_foot_drop(abate)))


def test_a_provisional_deficit_counts_and_the_card_says_suspected():
    def provisional(condition):
        condition["verificationStatus"]["coding"][0]["code"] = "provisional"
    body = fire(with_foot_drop(provisional))
    card = next(c for c in body["cards"] if c["source"]["topic"]["code"] == "urgent-decompression")
    assert "Foot drop (left) (suspected)" in card["detail"]


def test_a_resource_of_another_patient_is_ignored():
    def other_patient(condition):
        condition["subject"] = {"reference": "Patient/someone-else"}
    assert "urgent-decompression" not in rule_ids(fire(with_foot_drop(other_patient)))


def test_an_icd10cm_code_sent_without_its_dot_still_matches():
    def no_dot(condition):
        condition["code"]["coding"][0]["code"] = "M21372"
    assert "urgent-decompression" in rule_ids(fire(with_foot_drop(no_dot)))


def test_a_code_without_its_system_is_never_matched():
    def no_system(condition):
        del condition["code"]["coding"][0]["system"]
        condition["code"].pop("text", None)
    assert "urgent-decompression" not in rule_ids(fire(with_foot_drop(no_system)))


def test_the_same_resource_sent_twice_is_cited_once():
    resources = copy.deepcopy(CASE.resources)
    resources.append(copy.deepcopy(next(r for r in resources if r.get("id") == "foot-drop")))
    card = next(c for c in fire(resources)["cards"]
                if c["source"]["topic"]["code"] == "urgent-decompression")
    assert card["detail"].count("`Condition/foot-drop`") == 1
