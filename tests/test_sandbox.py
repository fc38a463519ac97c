"""The /sandbox page and its JSON API, through the Flask test client.

The API builds hook requests from bundled scenarios or a pasted patient Bundle,
invokes the service in-process at the chosen evaluation time and returns the
exchange with the validator's verdict and the cards rendered as HTML.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from cds_service import create_app
from cds_service.scenario import default_fixtures_dir
from tests.conftest import assert_conformant, load_json, rule_ids

FIRE = "/sandbox/api/fire"
CASE_1 = "source-case-1"
ORDER_SELECT_CT = "ct-insufficient-for-abscess--fires-order-select-ct-with-enhancing-collection"
SCRIPT = "<script>document.title='pwned'</script>"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One app for the module: firing never changes what the next fire returns."""
    folder = tmp_path_factory.mktemp("sandbox")
    return create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}",
                       "TESTING": True}).test_client()


@pytest.fixture(scope="module")
def case_1() -> dict:
    return load_json(default_fixtures_dir() / f"{CASE_1}.json")


@pytest.fixture(scope="module")
def order_select_ct() -> dict:
    return load_json(default_fixtures_dir() / f"{ORDER_SELECT_CT}.json")


def fire(client, **body):
    return client.post(FIRE, json=body)


def assert_bad_request(response, pointer: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]
    assert pointer in [d["pointer"] for d in body.get("details", [])]


# -- the page -------------------------------------------------------------------------------


def test_page_lists_the_bundled_scenarios(client, case_1):
    response = client.get("/sandbox")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert f'<option value="{CASE_1}" selected>' in page
    assert case_1["title"] in page
    assert page.count("<option value=") >= 60 + 3  # every fixture, and the three hooks


def test_page_loads_nothing_from_other_hosts(client):
    page = client.get("/sandbox").get_data(as_text=True)
    for url in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert url.startswith("/") or url == "data:,", url
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP forbids it


def test_page_is_served_with_a_same_origin_content_security_policy(client):
    policy = client.get("/sandbox").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy


@pytest.mark.parametrize("name", ["sandbox.js", "sandbox.css"])
def test_static_assets_are_served(client, name):
    response = client.get(f"/sandbox/static/{name}")
    assert response.status_code == 200
    assert b"http://" not in response.data and b"https://" not in response.data


def test_sandbox_off_is_404_everywhere(make_app):
    client = make_app(SANDBOX=False).test_client()
    for path in ("/sandbox", "/sandbox/api/scenarios", "/sandbox/static/sandbox.js"):
        assert client.get(path).status_code == 404, path
    assert fire(client, scenario=CASE_1).status_code == 404
    assert client.get("/cds-services").status_code == 200


def test_sandbox_is_off_with_the_environment_variable(make_app, monkeypatch):
    monkeypatch.setenv("CDS_SANDBOX", "false")
    assert make_app().test_client().get("/sandbox").status_code == 404


# -- scenarios ------------------------------------------------------------------------------


def test_scenario_list_gives_hook_and_evaluation_time(client):
    scenarios = {s["id"]: s for s in client.get("/sandbox/api/scenarios").get_json()["scenarios"]}
    assert scenarios[CASE_1]["hook"] == "patient-view"
    assert scenarios[CASE_1]["evaluationTime"] == "2026-06-15T12:00:00Z"
    assert "urgent-decompression" in scenarios[CASE_1]["expectedRules"]


def test_one_scenario_carries_its_record_and_draft_orders(client, order_select_ct):
    body = client.get(f"/sandbox/api/scenarios/{ORDER_SELECT_CT}").get_json()
    assert body["record"]["resourceType"] == "Bundle"
    assert body["draftOrders"] == order_select_ct["draftOrders"]
    assert body["selections"] == order_select_ct["selections"]


def test_unknown_scenario_is_404(client):
    response = client.get("/sandbox/api/scenarios/no-such-scenario")
    assert response.status_code == 404
    assert "no-such-scenario" in response.get_json()["error"]


# -- firing ---------------------------------------------------------------------------------


def test_fire_a_scenario_returns_the_exchange_at_the_scenario_time(client, case_1):
    body = fire(client, scenario=CASE_1).get_json()
    assert body["serviceId"] == "spine-postop-patient-view"
    assert body["status"] == 200
    assert body["evaluationTime"] == "2026-06-15T12:00:00Z"
    assert body["request"]["hook"] == "patient-view"
    assert body["request"]["prefetch"]["patient"]["id"] == "case1-patient"
    assert rule_ids(body["response"]) == case_1["expectedRules"]
    assert body["violations"] == []
    assert_conformant(body["response"])


def test_fire_renders_the_cards_with_their_indicators(client):
    html = fire(client, scenario=CASE_1).get_json()["html"]
    assert 'class="card card-critical"' in html
    assert 'data-rule="urgent-decompression"' in html
    assert "Casey Synthetic" in html
    assert "<strong>What the record shows</strong>" in html  # detail rendered from Markdown


def test_fire_uses_the_evaluation_time_given(client):
    body = fire(client, scenario=CASE_1, evaluationTime="2027-06-15T12:00:00Z").get_json()
    assert body["evaluationTime"] == "2027-06-15T12:00:00Z"
    assert "urgent-decompression" not in rule_ids(body["response"])  # the deficit is old by then


def test_fire_a_pasted_bundle(client, case_1):
    body = fire(client, bundle=case_1["record"], evaluationTime="2026-06-15T12:00:00Z")
    assert body.status_code == 200
    assert rule_ids(body.get_json()["response"]) == case_1["expectedRules"]


def test_fire_a_bundle_pasted_as_json_text(client, case_1):
    body = fire(client, bundle=json.dumps(case_1["record"]), hook="patient-view",
                evaluationTime="2026-06-15T12:00:00Z").get_json()
    assert rule_ids(body["response"]) == case_1["expectedRules"]


@pytest.mark.parametrize("patient", [
    {"name": [{"given": "Ann", "family": ["Lee"]}], "birthDate": "1979"},
    {"name": "Ann Lee", "gender": 1, "birthDate": 1979},
    {"name": [None, {"text": "Ann"}]},
], ids=["given-not-a-list", "name-not-a-list", "first-name-null"])
def test_fire_survives_an_oddly_shaped_patient(client, case_1, patient):
    record = copy.deepcopy(case_1["record"])
    for entry in record["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"] = {"resourceType": "Patient", "id": "case1-patient", **patient}
    response = fire(client, bundle=record, evaluationTime="2026-06-15T12:00:00Z")
    assert response.status_code == 200
    assert response.get_json()["status"] in (200, 400)


def test_fire_order_select_with_the_selections_given(client, order_select_ct):
    selected = fire(client, scenario=ORDER_SELECT_CT).get_json()
    assert "ct-insufficient-for-abscess" in rule_ids(selected["response"])
    others = fire(client, scenario=ORDER_SELECT_CT, selections=["ServiceRequest/crp"],
                  draftOrders=json.dumps(order_select_ct["draftOrders"])).get_json()
    assert others["request"]["context"]["selections"] == ["ServiceRequest/crp"]
    assert "ct-insufficient-for-abscess" not in rule_ids(others["response"])


def test_fire_another_hook_than_the_scenarios(client, order_select_ct):
    body = fire(client, scenario=ORDER_SELECT_CT, hook="order-sign").get_json()
    assert body["serviceId"] == "spine-postop-order-sign"
    assert "selections" not in body["request"]["context"]


# -- bad input ------------------------------------------------------------------------------


def test_body_that_is_not_json_is_400(client):
    response = client.post(FIRE, data=b"{", content_type="application/json")
    assert_bad_request(response, "")


@pytest.mark.parametrize("body, pointer", [
    ({}, "/scenario"),
    ({"scenario": CASE_1, "bundle": {"resourceType": "Bundle"}}, "/scenario"),
    ({"scenario": "no-such-scenario"}, "/scenario"),
    ({"bundle": "{not json"}, "/bundle"),
    ({"bundle": {"resourceType": "Patient", "id": "p"}}, "/bundle"),
    ({"bundle": {"resourceType": "Bundle", "type": "collection", "entry": []}}, "/bundle"),
    ({"scenario": CASE_1, "hook": "medication-prescribe"}, "/hook"),
    ({"scenario": CASE_1, "evaluationTime": "next tuesday"}, "/evaluationTime"),
    ({"scenario": CASE_1, "evaluationTime": 20260615}, "/evaluationTime"),
    ({"scenario": CASE_1, "hook": "order-sign"}, "/draftOrders"),
    ({"scenario": ORDER_SELECT_CT, "draftOrders": "[{"}, "/draftOrders"),
    ({"scenario": ORDER_SELECT_CT, "draftOrders": [1, 2]}, "/draftOrders"),
    ({"scenario": ORDER_SELECT_CT, "selections": ["ServiceRequest/elsewhere"]}, "/selections"),
    ({"scenario": ORDER_SELECT_CT, "selections": "ServiceRequest/crp"}, "/selections"),
], ids=["nothing", "both", "unknown-scenario", "bundle-not-json", "not-a-bundle",
        "no-patient", "unknown-hook", "bad-time", "time-not-text", "order-hook-without-drafts",
        "drafts-not-json", "drafts-not-resources", "selection-not-a-draft",
        "selections-not-a-list"])
def test_bad_input_is_400_naming_the_field(client, body, pointer):
    assert_bad_request(client.post(FIRE, json=body), pointer)


# -- escaping -------------------------------------------------------------------------------


def _case_1_with_script(case_1: dict) -> dict:
    record = copy.deepcopy(case_1["record"])
    for entry in record["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Procedure":
            resource["code"]["text"] = f"{SCRIPT} microdiscectomy"
        if resource["resourceType"] == "Patient":
            resource["name"] = [{"text": f"{SCRIPT}Casey"}]
    return record


def test_card_text_from_the_record_is_escaped_in_the_rendered_cards(client, case_1):
    body = fire(client, bundle=_case_1_with_script(case_1),
                evaluationTime="2026-06-15T12:00:00Z").get_json()
    details = "".join(card["detail"] for card in body["response"]["cards"])
    assert SCRIPT in details  # the card really carries the text...
    assert "<script" not in body["html"]  # ...and the page never gets it as markup
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in body["html"] or \
        "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in body["html"]


def test_scenario_titles_are_escaped_in_the_page(make_app, monkeypatch, tmp_path, case_1):
    folder = tmp_path / "fixtures"
    folder.mkdir()
    scenario = {**case_1, "title": f"Case {SCRIPT}", "description": SCRIPT}
    (folder / "evil.json").write_text(json.dumps(scenario), encoding="utf-8")
    monkeypatch.setattr("cds_service.web.sandbox.default_fixtures_dir", lambda: folder)
    client = make_app().test_client()
    page = client.get("/sandbox").get_data(as_text=True)
    assert SCRIPT not in page
    assert "Case &lt;script&gt;" in page
    assert fire(client, scenario="evil").get_json()["status"] == 200
