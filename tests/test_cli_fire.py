"""``cds-service fire`` (CONTRACT §7): the real console script as a CDS client, in-process and
against a live server, with and without a CDS Hooks JWT."""

from __future__ import annotations

import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from jwt.algorithms import ECAlgorithm

from cds_service import create_app
from cds_service.scenario import default_fixtures_dir
from tests.cli_runs import Runs, assert_one_line_error, command, serving
from tests.conftest import load_json

AT = "2026-06-15T12:00:00Z"
ISS = "https://ehr.example.org"
CASE_1_RULES = ["early-postop-imaging-caveat", "postop-infection-workup", "urgent-decompression"]
SIGN_SCENARIO = "conservative-care-delays-decompression--fires-order-sign-esi-several-drafts.json"
SELECT_SCENARIO = ("ct-insufficient-for-abscess--fires-order-select-ct-with-enhancing-"
                   "collection.json")


def scenario(name: str) -> dict:
    return load_json(default_fixtures_dir() / name)


def as_transaction(record: dict) -> tuple[dict, dict[str, str]]:
    """The record as a transaction Bundle that links by urn:uuid fullUrls and has no ids."""
    urns = {f"{e['resource']['resourceType']}/{e['resource']['id']}": f"urn:uuid:{uuid.uuid4()}"
            for e in record["entry"]}
    text = json.dumps(record)
    for ref, urn in urns.items():
        text = text.replace(f'"reference": "{ref}"', f'"reference": "{urn}"')
    bundle = json.loads(text)
    bundle["type"] = "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        entry["fullUrl"] = urns[f"{resource['resourceType']}/{resource.pop('id')}"]
        entry["request"] = {"method": "POST", "url": resource["resourceType"]}
    return bundle, urns


def private_jwk(kid: str) -> dict:
    """A fresh EC P-384 private key as a JWK without 'alg' (fire derives ES384)."""
    return {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()))),
            "kid": kid}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fire")

    def write(name: str, content) -> str:
        path = folder / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    case_1 = scenario("source-case-1.json")["record"]
    transaction, urns = as_transaction(case_1)
    sign, select = scenario(SIGN_SCENARIO), scenario(SELECT_SCENARIO)
    first, *rest = sign["draftOrders"]
    trusted = private_jwk("ehr-key-1")
    return {
        "case-1": write("case-1.json", case_1),
        "transaction": write("transaction.json", transaction),
        "imaging-urn": urns["ImagingStudy/mri-lumbar"],
        "sign-record": write("sign-record.json", sign["record"]),
        "order-resource": write("order.json", first),
        "order-bundle": write("orders.json", {"resourceType": "Bundle", "type": "collection",
                                              "entry": [{"resource": o} for o in rest]}),
        "select-record": write("select-record.json", select["record"]),
        "select-orders": write("select-orders.json", {
            "resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": o} for o in select["draftOrders"]]}),
        "no-patient": write("no-patient.json", {
            "resourceType": "Bundle", "type": "collection",
            "entry": [e for e in case_1["entry"] if e["resource"]["resourceType"] != "Patient"]}),
        "not-json": write("not-json.json", '{"resourceType": "Bundle", "entry": [,]}'),
        "missing": str(folder / "does-not-exist.json"),
        "trusted-key": write("trusted-key.json", trusted),
        "trusted-jwks": {"keys": [{k: v for k, v in trusted.items() if k != "d"}]},
        "untrusted-key": write("untrusted-key.json", private_jwk("ehr-key-1")),
    }


def non_conformant_service() -> Flask:
    """A CDS service whose card has no indicator (REQUIRED in CDS Hooks 2.0)."""
    app = Flask("non_conformant")

    @app.get("/cds-services")
    def discovery():
        return {"services": [{"id": "greeter", "hook": "patient-view", "description": "Greets",
                              "prefetch": {"patient": "Patient/{{context.patientId}}"}}]}

    @app.post("/cds-services/greeter")
    def invoke():
        return {"cards": [{"summary": "Hello without an indicator", "source": {"label": "Demo"}}]}

    return app


@pytest.fixture(scope="module")
def servers(files, tmp_path_factory):
    """Live services: ours at the scenarios' time, open and requiring JWTs; a broken one."""
    folder = tmp_path_factory.mktemp("servers")
    base = {"EVALUATION_TIME": AT, "TESTING": True}
    open_app = create_app({**base, "DATABASE_URL": f"sqlite:///{folder / 'open.sqlite'}"})
    jwt_app = create_app({**base, "DATABASE_URL": f"sqlite:///{folder / 'jwt.sqlite'}",
                          "JWT_ISSUERS": {ISS: {"jwks": files["trusted-jwks"]}}})
    with serving(open_app) as open_url, serving(jwt_app) as jwt_url, \
            serving(non_conformant_service()) as broken_url:
        yield {"open": open_url, "jwt": jwt_url, "non-conformant": broken_url}


@pytest.fixture(scope="module")
def runs(files, servers):
    f = files
    runs = Runs({
        "terminal": command("fire", "patient-view", f["case-1"], "--at", AT),
        "json": command("fire", "patient-view", f["case-1"], "--at", AT, "--json"),
        "order-sign": command("fire", "order-sign", f["sign-record"], "--at", AT, "--json",
                              "--order", f["order-resource"], "--order", f["order-bundle"]),
        "order-select": command("fire", "order-select", f["select-record"], "--at", AT,
                                "--json", "--order", f["select-orders"],
                                "--select", "ServiceRequest/crp"),
        "transaction": command("fire", "patient-view", f["transaction"], "--at", AT, "--json"),
        "url": command("fire", "patient-view", f["case-1"], "--url", servers["open"], "--json"),
        "url-jwt": command("fire", "patient-view", f["case-1"], "--url", servers["jwt"],
                           "--jwt-key", f["trusted-key"], "--jwt-iss", ISS, "--json"),
        "url-wrong-key": command("fire", "patient-view", f["case-1"], "--url", servers["jwt"],
                                 "--jwt-key", f["untrusted-key"], "--jwt-iss", ISS),
        "non-conformant": command("fire", "patient-view", f["case-1"],
                                  "--url", servers["non-conformant"]),
        "missing-file": command("fire", "patient-view", f["missing"], "--at", AT),
        "invalid-json": command("fire", "patient-view", f["not-json"], "--at", AT),
        "no-patient": command("fire", "patient-view", f["no-patient"], "--at", AT),
        "unknown-hook": command("fire", "encounter-discharge", f["case-1"], "--at", AT),
        "unknown-selection": command("fire", "order-select", f["select-record"], "--at", AT,
                                     "--order", f["select-orders"],
                                     "--select", "ServiceRequest/mri"),
        "at-with-url": command("fire", "patient-view", f["case-1"], "--url", servers["open"],
                               "--at", AT),
    })
    yield runs


def rule_ids(run) -> list[str]:
    assert run.code == 0, run
    return sorted(card["source"]["topic"]["code"] for card in json.loads(run.stdout)["cards"])


def test_fire_shows_the_cards_in_the_terminal_with_the_verdict(runs):
    run = runs["terminal"]
    assert run.code == 0, run
    out = run.stdout
    assert "Acute left foot drop after recent discectomy" in out  # summary
    assert "critical - urgent-decompression" in out  # indicator and rule
    assert "What the record shows" in out  # detail, rendered from Markdown
    assert "**" not in out
    assert "Request a stat spine surgery consultation [recommended]" in out  # suggestion
    assert "create: Order urgent spine surgery consultation" in out  # its action
    assert "Already evaluated by spine surgery" in out  # override reason
    assert "VALID CDS Hooks 2.0 response: 3 cards (1 critical, 1 warning, 1 info)" in out


def test_fire_json_prints_only_the_response_with_the_rules_that_fired(runs):
    assert rule_ids(runs["json"]) == CASE_1_RULES


def test_fire_order_sign_sends_the_draft_orders_from_resource_and_bundle_files(runs):
    assert rule_ids(runs["order-sign"]) == ["conservative-care-delays-decompression"]


def test_fire_order_select_evaluates_only_the_selected_order(runs):
    assert rule_ids(runs["order-select"]) == []  # the CT draft is not selected


def test_fire_resolves_urn_uuid_references_of_a_transaction_bundle(runs, files):
    run = runs["transaction"]
    assert rule_ids(run) == CASE_1_RULES
    imaging_id = files["imaging-urn"].removeprefix("urn:uuid:")
    # The DiagnosticReport reached its ImagingStudy through the rewritten reference.
    assert f"ImagingStudy/{imaging_id}" in run.stdout


def test_fire_url_calls_a_running_service(runs):
    assert rule_ids(runs["url"]) == CASE_1_RULES


def test_fire_url_signs_a_cds_hooks_jwt_the_service_accepts(runs):
    assert rule_ids(runs["url-jwt"]) == CASE_1_RULES


def test_fire_url_with_a_key_the_service_does_not_trust_exits_3_with_the_error_body(runs):
    assert_one_line_error(runs["url-wrong-key"], 3, "HTTP 401", '"error": "Unauthorized"')


def test_fire_shows_the_cards_and_every_violation_of_a_non_conformant_response_and_exits_1(
        runs):
    run = runs["non-conformant"]
    assert run.code == 1, run
    assert "Hello without an indicator" in run.stdout
    assert "INVALID: the response violates CDS Hooks 2.0 (1 problem):" in run.stdout
    assert "/cards/0/indicator: missing required field 'indicator'" in run.stdout


def test_fire_on_a_missing_file_is_a_one_line_error(runs):
    assert_one_line_error(runs["missing-file"], 2, "does-not-exist.json", "no such file")


def test_fire_on_invalid_json_is_a_one_line_error(runs):
    assert_one_line_error(runs["invalid-json"], 2, "not valid JSON", "line 1")


def test_fire_on_a_bundle_without_a_patient_is_a_one_line_error(runs):
    assert_one_line_error(runs["no-patient"], 2, "exactly one Patient")


def test_fire_on_an_unknown_hook_is_a_one_line_error(runs):
    assert_one_line_error(runs["unknown-hook"], 2, "encounter-discharge", "patient-view")


def test_fire_with_a_selection_not_among_the_orders_is_a_one_line_error(runs):
    assert_one_line_error(runs["unknown-selection"], 2, "ServiceRequest/mri",
                          "ServiceRequest/ct-lumbar")


def test_fire_at_with_url_is_a_one_line_error_because_the_remote_clock_applies(runs):
    assert_one_line_error(runs["at-with-url"], 2, "--at", "--url", "CDS_EVALUATION_TIME")
