"""POST /cds-services/{id}: hook calls over HTTP (CONTRACT §1-§3, CDS Hooks 2.0 §Calling).

The reference examples are posted as they are. The hook-library examples are
only a ``context``; they are wrapped in an envelope (``hook`` = the example's
own hook, a ``hookInstance``) and nothing else is changed. FHIR data is either
prefetched or served by a ``FakeFhirServer`` on 127.0.0.1; no test reaches
the network (``no_network`` makes any other outbound HTTP a connection error).
"""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import REFERENCE, assert_conformant
from tests.fhir_server import FakeFhirServer, outcome

EXAMPLES = REFERENCE / "examples"
needs_reference = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                     reason=f"reference examples not found in {EXAMPLES}")

PV = "/cds-services/spine-postop-patient-view"
OS = "/cds-services/spine-postop-order-select"
OG = "/cds-services/spine-postop-order-sign"
SERVICE_OF_HOOK = {"patient-view": PV, "order-select": OS, "order-sign": OG}
SEARCH_KEYS = ("conditions", "observations", "imaging", "reports", "procedures", "medications",
               "servicerequests")
TOKEN = "s3cr3t-fhir-access-token-0123456789"
PATIENT = "p1"


@pytest.fixture(scope="module")
def app(module_client):
    return module_client.application


@pytest.fixture(scope="module")
def client(module_client):
    return module_client


def empty_bundle() -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0}


def full_prefetch(patient_id: str = PATIENT) -> dict:
    prefetch = {key: empty_bundle() for key in SEARCH_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": patient_id}
    return prefetch


def draft_service_request(rid: str = "sr1", patient_id: str = PATIENT) -> dict:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{patient_id}"},
            "code": {"text": "Physiotherapy"}}


def request_body(hook: str = "patient-view", *, prefetch: dict | None = None, **extra) -> dict:
    context = {"patientId": PATIENT, "userId": "Practitioner/u1"}
    if hook != "patient-view":
        order = draft_service_request()
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": order}]}
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/sr1"]
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context,
            "prefetch": full_prefetch() if prefetch is None else prefetch}
    if not body["prefetch"]:
        del body["prefetch"]
    body.update(extra)
    return body


def fhir_auth(token: str = TOKEN) -> dict:
    return {"access_token": token, "token_type": "Bearer", "expires_in": 300,
            "scope": "user/*.read", "subject": "spine-cds"}


def condition(cid: str, patient_id: str = PATIENT) -> dict:
    return {"resourceType": "Condition", "id": cid,
            "subject": {"reference": f"Patient/{patient_id}"}, "code": {"text": "Low back pain"}}


def assert_ok(response) -> dict:
    """200 with a conformant {"cards": [...]} body."""
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    body = response.get_json()
    assert isinstance(body.get("cards"), list)
    assert_conformant(body)
    return body


def pointers(response) -> list[str]:
    return [d["pointer"] for d in response.get_json().get("details", [])]


def searches(fhir: FakeFhirServer, rtype: str) -> list[dict]:
    """Query parameters of every search of ``rtype`` the fake server saw."""
    out = []
    for recorded in fhir.requests:
        parts = urlsplit(recorded.path)
        if parts.path == f"{fhir.prefix}/{rtype}":
            out.append({k: v[0] for k, v in parse_qs(parts.query).items()})
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Any outbound HTTP from requests fails as if the server were unreachable."""
    attempted: list[str] = []

    def refuse(self, request, *args, **kwargs):
        attempted.append(request.url)
        raise requests.ConnectionError("network disabled in tests")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    return attempted


@pytest.fixture
def fhir():
    with FakeFhirServer() as server:
        yield server


# -- the reference examples ------------------------------------------------------------------


def _load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def _example(name: str) -> tuple[str, dict]:
    """(service path, request body) for one reference example."""
    if name == "sandbox-patient-view-request.json":
        body = _load(name)["body"]
    elif name == "stu2-02-example.json":
        body = _load(name)
    else:  # hook-library examples: a context only
        hook = name.split("-0", 1)[0]
        body = {"hook": hook, "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "context": _load(name)["context"]}
    return SERVICE_OF_HOOK[body["hook"]], body


EXAMPLE_FILES = [
    "patient-view-01-examples.json",
    "patient-view-02-examples.json",
    "order-select-01-example-r4.json",
    "order-sign-01-example-r4.json",
    "stu2-02-example.json",
    "sandbox-patient-view-request.json",
]


@pytest.fixture
def example_client(make_app, no_network):
    return make_app(FHIR_RETRIES=0).test_client()


@needs_reference
@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_reference_example_as_sent_gets_200_or_412(example_client, name):
    path, body = _example(name)
    response = example_client.post(path, json=body)
    assert response.status_code in (200, 412), response.get_data(as_text=True)
    if response.status_code == 200:
        assert_conformant(response.get_json())
    else:
        assert all(p.startswith("/prefetch/") for p in pointers(response))


@needs_reference
@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_reference_example_with_all_data_prefetched_gets_conformant_cards(example_client, name):
    path, body = _example(name)
    prefetch = full_prefetch(body["context"]["patientId"])
    prefetch.update(body.get("prefetch") or {})
    body["prefetch"] = prefetch
    response = example_client.post(path, json=body)
    assert_ok(response)


@needs_reference
def test_example_fhir_servers_are_not_contacted_when_everything_is_prefetched(
        example_client, no_network):
    for name in EXAMPLE_FILES:
        path, body = _example(name)
        body["prefetch"] = {**full_prefetch(body["context"]["patientId"]),
                            **(body.get("prefetch") or {})}
        assert example_client.post(path, json=body).status_code == 200
    assert no_network == []


@needs_reference
def test_hook_library_invalid_nutrition_order_without_rule_still_gets_200(example_client):
    path, body = _example("order-select-01-example-r4.json")
    nutrition = body["context"]["draftOrders"]["entry"][0]["resource"]
    assert nutrition["resourceType"] == "NutritionOrder" and "intent" not in nutrition
    body["context"]["selections"] = ["NutritionOrder/pureeddiet-simple"]
    body["prefetch"] = full_prefetch(body["context"]["patientId"])
    response = example_client.post(path, json=body)
    assert_ok(response)


# -- routing and envelope --------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["patient-view", "order-select", "order-sign"])
def test_fully_prefetched_call_gets_cards_array(client, hook):
    response = client.post(SERVICE_OF_HOOK[hook], json=request_body(hook))
    assert_ok(response)
    assert response.mimetype == "application/json"


def test_unknown_service_is_404_with_json_error(client):
    response = client.post("/cds-services/no-such-service", json=request_body())
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert "no-such-service" in response.get_json()["error"]


def test_hook_not_matching_service_is_400_naming_both(client):
    response = client.post(OS, json=request_body("patient-view"))
    assert response.status_code == 400
    text = json.dumps(response.get_json())
    assert "order-select" in text and "patient-view" in text
    assert "/hook" in pointers(response)


def test_unknown_hook_name_is_400(client):
    body = request_body()
    body["hook"] = "encounter-start"
    response = client.post(PV, json=body)
    assert response.status_code == 400
    assert "/hook" in pointers(response)


# -- 412 ------------------------------------------------------------------------------------


def _required_keys(app, service_id: str) -> set[str]:
    service = app.extensions["cds"].knowledge.services[service_id]
    return {spec.key for spec in service.prefetch if spec.required}


def test_412_lists_every_missing_required_key_with_a_pointer(app, client):
    response = client.post(PV, json=request_body(prefetch={}))
    assert response.status_code == 412
    required = _required_keys(app, "spine-postop-patient-view")
    assert required
    assert set(pointers(response)) == {f"/prefetch/{key}" for key in required}


def test_412_names_only_the_keys_that_are_missing(app, client):
    prefetch = full_prefetch()
    del prefetch["conditions"]
    prefetch["observations"] = None
    response = client.post(PV, json=request_body(prefetch=prefetch))
    assert response.status_code == 412
    assert pointers(response) == ["/prefetch/conditions", "/prefetch/observations"]


def test_missing_optional_keys_do_not_cause_412(app, client):
    service = app.extensions["cds"].knowledge.services["spine-postop-patient-view"]
    prefetch = {spec.key: empty_bundle() for spec in service.prefetch if spec.required}
    assert len(prefetch) < len(service.prefetch), "the service has optional keys"
    response = client.post(PV, json=request_body(prefetch=prefetch))
    assert_ok(response)


def test_412_when_the_fhir_server_refuses_the_token(make_app, fhir):
    fhir.require_token = "another-token"
    client = make_app(FHIR_RETRIES=0).test_client()
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    response = client.post(PV, json=request_body(prefetch=prefetch, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert response.status_code == 412
    assert pointers(response) == ["/prefetch/conditions"]


# -- fetching from fhirServer ---------------------------------------------------------------


def test_null_prefetch_key_is_fetched_with_the_bearer_token(client, fhir):
    fhir.require_token = TOKEN
    fhir.add(condition("c1"))
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    response = client.post(PV, json=request_body(prefetch=prefetch, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    assert searches(fhir, "Condition") == [{"patient": PATIENT}]
    assert {r.headers.get("authorization") for r in fhir.requests} == {f"Bearer {TOKEN}"}


def test_absent_prefetch_fetches_every_key_from_the_fhir_server(app, client, fhir):
    response = client.post(PV, json=request_body(prefetch={}, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    fetched = {urlsplit(r.path).path.split("/")[2] for r in fhir.requests}
    assert {"Condition", "Observation", "ImagingStudy", "DiagnosticReport", "Procedure",
            "MedicationRequest"} <= fetched


def test_fetched_searches_follow_next_links(client):
    with FakeFhirServer([condition(f"c{i}") for i in range(5)], page_size=2) as fhir:
        prefetch = full_prefetch()
        prefetch["conditions"] = None
        response = client.post(PV, json=request_body(
            prefetch=prefetch, fhirServer=fhir.base_url, fhirAuthorization=fhir_auth()))
        assert_ok(response)
        offsets = sorted(int(q.get("_getpagesoffset", 0)) for q in searches(fhir, "Condition"))
    assert offsets == [0, 2, 4]


def test_paginated_prefetch_bundle_is_continued_on_the_fhir_server(client):
    with FakeFhirServer([condition(f"c{i}") for i in range(3)], page_size=1) as fhir:
        first_page = {"resourceType": "Bundle", "type": "searchset", "total": 3,
                      "entry": [{"resource": condition("c0")}],
                      "link": [{"relation": "next", "url": f"{fhir.base_url}/Condition?"
                                "patient=p1&_count=1&_getpagesoffset=1"}]}
        prefetch = full_prefetch()
        prefetch["conditions"] = first_page
        response = client.post(PV, json=request_body(
            prefetch=prefetch, fhirServer=fhir.base_url, fhirAuthorization=fhir_auth()))
        assert_ok(response)
        offsets = sorted(int(q["_getpagesoffset"]) for q in searches(fhir, "Condition"))
    assert offsets == [1, 2]


def test_operation_outcome_prefetch_value_is_refetched(client, fhir):
    prefetch = full_prefetch()
    prefetch["conditions"] = outcome("exception", "the EHR could not run the search")
    response = client.post(PV, json=request_body(prefetch=prefetch, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    assert searches(fhir, "Condition") == [{"patient": PATIENT}]


def test_prefetched_keys_are_not_refetched(client, fhir):
    response = client.post(PV, json=request_body(fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    assert fhir.requests == []


def test_open_fhir_server_is_used_without_fhir_authorization(client, fhir):
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    response = client.post(PV, json=request_body(prefetch=prefetch, fhirServer=fhir.base_url))
    assert_ok(response)
    assert len(searches(fhir, "Condition")) == 1
    assert all("authorization" not in r.headers for r in fhir.requests)


# -- FHIR_SERVERS allowlist -----------------------------------------------------------------


def _call_with_null_key(client, server: str):
    prefetch = full_prefetch()
    prefetch["conditions"] = None
    return client.post(PV, json=request_body(prefetch=prefetch, fhirServer=server,
                                             fhirAuthorization=fhir_auth()))


def test_fhir_server_outside_allowlist_is_400_and_never_contacted(make_app, fhir):
    client = make_app(FHIR_SERVERS=["https://fhir.example.org/r4"]).test_client()
    response = _call_with_null_key(client, fhir.base_url)
    assert response.status_code == 400
    assert "/fhirServer" in pointers(response)
    assert fhir.requests == []


def test_fhir_server_outside_allowlist_from_env_is_400_and_never_contacted(
        make_app, fhir, monkeypatch):
    monkeypatch.setenv("CDS_FHIR_SERVERS", '["https://fhir.example.org/r4"]')
    client = make_app().test_client()
    response = _call_with_null_key(client, fhir.base_url)
    assert response.status_code == 400
    assert fhir.requests == []


def test_fhir_server_outside_allowlist_is_400_even_when_all_is_prefetched(make_app, fhir):
    client = make_app(FHIR_SERVERS=["https://fhir.example.org/r4"]).test_client()
    response = client.post(PV, json=request_body(fhirServer=fhir.base_url))
    assert response.status_code == 400
    assert fhir.requests == []


def test_fhir_server_on_the_allowlist_is_fetched_from(make_app, fhir):
    client = make_app(FHIR_SERVERS=[fhir.base_url]).test_client()
    response = _call_with_null_key(client, fhir.base_url)
    assert_ok(response)
    assert len(searches(fhir, "Condition")) == 1


def test_allowlist_is_path_aware(make_app, fhir):
    client = make_app(FHIR_SERVERS=[fhir.origin + "/other"]).test_client()
    response = _call_with_null_key(client, fhir.base_url)
    assert response.status_code == 400
    assert fhir.requests == []


# -- cross-field checks ---------------------------------------------------------------------


def test_fhir_authorization_without_fhir_server_is_400(client):
    response = client.post(PV, json=request_body(fhirAuthorization=fhir_auth()))
    assert response.status_code == 400
    assert "/fhirAuthorization" in pointers(response)


def test_selection_not_in_draft_orders_is_400_with_pointer(client):
    body = request_body("order-select")
    body["context"]["selections"] = ["ServiceRequest/not-a-draft"]
    response = client.post(OS, json=body)
    assert response.status_code == 400
    assert "/context/selections/0" in pointers(response)


def test_invalid_draft_order_without_a_rule_is_ignored(client):
    body = request_body("order-sign")
    body["context"]["draftOrders"]["entry"].append({"resource": {
        "resourceType": "NutritionOrder", "id": "diet1", "status": "draft",
        "patient": {"reference": f"Patient/{PATIENT}"}, "dateTime": "2024-01-01"}})
    response = client.post(OG, json=body)
    assert_ok(response)


def test_invalid_selected_draft_order_without_a_rule_is_ignored(client):
    body = request_body("order-select")
    body["context"]["draftOrders"]["entry"].append({"resource": {
        "resourceType": "NutritionOrder", "id": "diet1", "status": "bogus-status"}})
    body["context"]["selections"] = ["NutritionOrder/diet1"]
    response = client.post(OS, json=body)
    assert_ok(response)


def test_resources_of_another_patient_do_not_fail_the_call(client):
    prefetch = full_prefetch()
    prefetch["conditions"] = {"resourceType": "Bundle", "type": "searchset",
                              "entry": [{"resource": condition("x1", "someone-else")}]}
    response = client.post(PV, json=request_body(prefetch=prefetch))
    assert_ok(response)


# -- secrets --------------------------------------------------------------------------------


def test_access_token_never_logged_on_success(client, fhir, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.require_token = TOKEN
    response = client.post(PV, json=request_body(prefetch={}, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    assert fhir.requests, "the token was used"
    assert caplog.records, "something was logged"
    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(r.args) for r in caplog.records)


def test_access_token_never_logged_or_returned_on_failure(make_app, fhir, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.require_token = "another-token"
    client = make_app(FHIR_RETRIES=0).test_client()
    response = client.post(PV, json=request_body(prefetch={}, fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert response.status_code == 412
    assert TOKEN not in response.get_data(as_text=True)
    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(r.args) for r in caplog.records)


def test_access_token_never_returned_in_a_400(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = request_body(fhirAuthorization=fhir_auth())  # no fhirServer: 400
    body["fhirAuthorization"]["token_type"] = "MAC"
    response = client.post(PV, json=body)
    assert response.status_code == 400
    assert TOKEN not in response.get_data(as_text=True)
    assert TOKEN not in caplog.text


def test_access_token_never_returned_in_a_200(client, fhir):
    response = client.post(PV, json=request_body(fhirServer=fhir.base_url,
                                                 fhirAuthorization=fhir_auth()))
    assert_ok(response)
    assert TOKEN not in response.get_data(as_text=True)
