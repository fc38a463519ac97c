"""gather(): prefetch first, fetch what is missing, 412 for required data that cannot be had."""

from __future__ import annotations

import logging

import pytest

from cds_service.config import load_settings
from cds_service.errors import ClientError
from cds_service.fhir.prefetch import PrefetchSpec, gather, is_read, render_template
from tests.fhir_server import FakeFhirServer, outcome

TOKEN = "prefetch-s3cret-token"
PATIENT = {"resourceType": "Patient", "id": "p1"}
COND = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
OBS = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}

SPECS = [
    PrefetchSpec("patient", "Patient/{{context.patientId}}", required=True),
    PrefetchSpec("conditions", "Condition?patient={{context.patientId}}", required=True),
    PrefetchSpec("observations", "Observation?patient={{context.patientId}}", required=False),
]


def bundle(*resources: dict, **extra) -> dict:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources], **extra}


def settings(**overrides) -> dict:
    return load_settings({"FHIR_TOTAL_TIMEOUT": 5.0, **overrides}, environ={})


def hook_request(prefetch: dict | None = None, server: FakeFhirServer | None = None,
                 token: str | None = TOKEN) -> dict:
    request: dict = {"hook": "patient-view", "hookInstance": "h1",
                     "context": {"userId": "Practitioner/u1", "patientId": "p1"}}
    if prefetch is not None:
        request["prefetch"] = prefetch
    if server is not None:
        request["fhirServer"] = server.base_url
        if token is not None:
            request["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer",
                                            "expires_in": 300, "scope": "user/*.read",
                                            "subject": "cds"}
    return request


@pytest.fixture
def fhir():
    with FakeFhirServer([PATIENT, COND, OBS]) as server:
        yield server


FULL_PREFETCH = {"patient": PATIENT, "conditions": bundle(COND), "observations": bundle(OBS)}


# -- prefetch used as given -------------------------------------------------------


def test_prefetch_bundle_used_without_any_fetch(fhir):
    data = gather(SPECS, hook_request(FULL_PREFETCH, fhir), settings())
    assert data.resources == {"patient": [PATIENT], "conditions": [COND], "observations": [OBS]}
    assert set(data.sources.values()) == {"prefetch"}
    assert data.notes == []
    assert fhir.requests == []


def test_prefetch_bundle_holding_more_than_asked_is_kept_whole():
    other = {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"}}
    prefetch = dict(FULL_PREFETCH, conditions=bundle(COND, other, type="collection"))
    data = gather(SPECS, hook_request(prefetch), settings())
    assert [r["id"] for r in data.resources["conditions"]] == ["c1", "c2"]


def test_prefetch_bundle_skips_outcome_and_resourceless_entries():
    messy = bundle(COND, outcome("informational", "note", severity="information"))
    messy["entry"].append({"fullUrl": "urn:uuid:x"})
    data = gather(SPECS, hook_request(dict(FULL_PREFETCH, conditions=messy)), settings())
    assert data.resources["conditions"] == [COND]


def test_lone_resource_for_a_search_key_accepted():
    data = gather(SPECS, hook_request(dict(FULL_PREFETCH, conditions=COND)), settings())
    assert data.resources["conditions"] == [COND]
    assert data.sources["conditions"] == "prefetch"


def test_empty_bundle_means_no_data_not_missing():
    data = gather(SPECS, hook_request(dict(FULL_PREFETCH, conditions=bundle())), settings())
    assert data.resources["conditions"] == []
    assert data.sources["conditions"] == "prefetch"


# -- fetched when not prefetched ------------------------------------------------------


def test_null_key_fetched(fhir):
    data = gather(SPECS, hook_request(dict(FULL_PREFETCH, conditions=None), fhir), settings())
    assert data.resources["conditions"] == [COND]
    assert data.sources["conditions"] == "fetched"
    assert [r.path for r in fhir.requests] == ["/fhir/Condition?patient=p1"]
    assert fhir.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_missing_key_fetched_as_read(fhir):
    prefetch = {k: v for k, v in FULL_PREFETCH.items() if k != "patient"}
    data = gather(SPECS, hook_request(prefetch, fhir), settings())
    assert data.resources["patient"] == [PATIENT]
    assert data.sources["patient"] == "fetched"
    assert [r.path for r in fhir.requests] == ["/fhir/Patient/p1"]


def test_no_prefetch_at_all_fetches_every_key(fhir):
    data = gather(SPECS, hook_request(None, fhir), settings())
    assert data.resources == {"patient": [PATIENT], "conditions": [COND], "observations": [OBS]}
    assert set(data.sources.values()) == {"fetched"}


def test_open_server_fetched_without_token(fhir):
    data = gather(SPECS, hook_request({}, fhir, token=None), settings())
    assert data.sources["patient"] == "fetched"
    assert all("authorization" not in r.headers for r in fhir.requests)


def test_operation_outcome_key_fetched_with_note(fhir):
    prefetch = dict(FULL_PREFETCH, observations=outcome("exception", "EHR failed"))
    data = gather(SPECS, hook_request(prefetch, fhir), settings())
    assert data.resources["observations"] == [OBS]
    assert data.sources["observations"] == "fetched"
    assert data.notes == ["prefetch key 'observations' held an OperationOutcome; "
                          "fetched from the FHIR server"]


def test_bundle_of_only_error_outcomes_fetched(fhir):
    prefetch = dict(FULL_PREFETCH, conditions=bundle(outcome("exception", "EHR failed")))
    data = gather(SPECS, hook_request(prefetch, fhir), settings())
    assert data.resources["conditions"] == [COND]
    assert data.sources["conditions"] == "fetched"


def test_paginated_prefetch_followed_on_fhir_server(fhir):
    fhir.page_size = 1
    more = {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p1"}}
    fhir.add(more)
    first = bundle(COND, link=[{"relation": "next", "url":
                               f"{fhir.base_url}/Condition?patient=p1&_count=1&_getpagesoffset=1"}])
    data = gather(SPECS, hook_request(dict(FULL_PREFETCH, conditions=first), fhir), settings())
    assert [r["id"] for r in data.resources["conditions"]] == ["c1", "c2"]
    assert len(fhir.requests) == 1


def test_one_time_budget_for_the_whole_gather(fhir):
    fhir.delay_seconds = 0.5  # the patient read fits the budget, the conditions search not
    with pytest.raises(ClientError) as caught:
        gather(SPECS, hook_request(None, fhir), settings(FHIR_TOTAL_TIMEOUT=0.8))
    assert [d.pointer for d in caught.value.details] == ["/prefetch/conditions"]


# -- unavailable data -------------------------------------------------------------------


def test_required_keys_unavailable_without_fhir_server_is_412_listing_each():
    with pytest.raises(ClientError) as caught:
        gather(SPECS, hook_request({"observations": bundle(OBS)}), settings())
    error = caught.value
    assert error.status == 412
    assert error.error == "Required data is neither prefetched nor fetchable"
    assert [d.pointer for d in error.details] == ["/prefetch/patient", "/prefetch/conditions"]
    assert "no fhirServer" in error.details[0].message
    assert "Patient/{{context.patientId}}" in error.details[0].message


def test_required_key_fetch_failure_is_412_with_reason(fhir):
    fhir.require_token = "another-token"
    with pytest.raises(ClientError) as caught:
        gather(SPECS, hook_request(dict(FULL_PREFETCH, patient=None), fhir), settings())
    assert caught.value.status == 412
    (detail,) = caught.value.details
    assert detail.pointer == "/prefetch/patient"
    assert "HTTP 401" in detail.message
    assert TOKEN not in detail.message


def test_optional_key_absent_gives_note_only():
    prefetch = {k: v for k, v in FULL_PREFETCH.items() if k != "observations"}
    data = gather(SPECS, hook_request(prefetch), settings())
    assert data.sources["observations"] == "absent"
    assert data.resources["observations"] == []
    assert len(data.notes) == 1
    assert data.notes[0].startswith("prefetch key 'observations' was not provided")
    assert "p1" not in data.notes[0]


def test_read_of_missing_patient_is_fetched_empty(fhir):
    request = hook_request({}, fhir)
    request["context"]["patientId"] = "unknown"
    data = gather(SPECS[:1], request, settings())
    assert data.resources["patient"] == []
    assert data.sources["patient"] == "fetched"


# -- fhirServer allowlist ---------------------------------------------------------------


def test_disallowed_fhir_server_is_400_and_never_contacted(fhir):
    with pytest.raises(ClientError) as caught:
        gather(SPECS, hook_request(None, fhir),
               settings(FHIR_SERVERS=["https://fhir.example.org/r4"]))
    assert caught.value.status == 400
    assert caught.value.error == "fhirServer is not an allowed FHIR server"
    assert [d.pointer for d in caught.value.details] == ["/fhirServer"]
    assert fhir.requests == []


def test_disallowed_fhir_server_checked_even_when_all_prefetched(fhir):
    with pytest.raises(ClientError) as caught:
        gather(SPECS, hook_request(FULL_PREFETCH, fhir), settings(FHIR_SERVERS=[]))
    assert caught.value.status == 400


def test_allowlist_by_path_prefix(fhir):
    data = gather(SPECS, hook_request({}, fhir), settings(FHIR_SERVERS=[fhir.base_url]))
    assert data.sources["patient"] == "fetched"
    with pytest.raises(ClientError):
        gather(SPECS, hook_request({}, fhir), settings(FHIR_SERVERS=[fhir.origin + "/other"]))


# -- templates ------------------------------------------------------------------------------


def test_template_with_context_value():
    assert render_template("Condition?patient={{context.patientId}}",
                           {"patientId": "p1"}) == "Condition?patient=p1"


def test_template_values_are_url_quoted():
    rendered = render_template("Condition?patient={{context.patientId}}&x=1",
                               {"patientId": "a&b=c/../d e"})
    assert rendered == "Condition?patient=a%26b%3Dc%2F..%2Fd%20e&x=1"


def test_template_user_ids_from_context_user_id():
    context = {"userId": "PractitionerRole/r9"}
    assert render_template("PractitionerRole?_id={{userPractitionerRoleId}}",
                           context) == "PractitionerRole?_id=r9"
    with pytest.raises(KeyError):
        render_template("Practitioner/{{userPractitionerId}}", context)


def test_template_user_ids_given_explicitly():
    assert render_template("Practitioner/{{ userPractitionerId }}", {},
                           {"userPractitionerId": "u1"}) == "Practitioner/u1"


def test_template_context_reference_kept_as_read():
    rendered = render_template("{{context.userId}}", {"userId": "Practitioner/123"})
    assert rendered == "Practitioner/123"
    assert is_read(rendered)


def test_template_missing_value_is_key_error():
    with pytest.raises(KeyError):
        render_template("Condition?patient={{context.patientId}}", {})


@pytest.mark.parametrize("template", ["{{context.draftOrders}}", "{{context.a.b}}",
                                      "{{somethingElse}}", "Condition?patient={{context.x"])
def test_template_invalid_token_is_value_error(template):
    with pytest.raises(ValueError):
        render_template(template, {"draftOrders": {"resourceType": "Bundle"}, "a": {"b": 1},
                                   "x": "1"})


def test_read_and_search_templates_told_apart():
    assert is_read("Patient/p1")
    assert not is_read("Condition?patient=p1")
    assert not is_read("Patient?_id=p1")


# -- logging ----------------------------------------------------------------------------------


def test_token_never_logged(fhir, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.fail_next(1, status=503)
    gather(SPECS, hook_request({"patient": None}, fhir), settings())
    fhir.require_token = "mismatch"
    with pytest.raises(ClientError):
        gather(SPECS, hook_request({}, fhir), settings())
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.args)


def test_info_logs_carry_key_not_patient_id(fhir, caplog):
    caplog.set_level(logging.INFO, logger="cds_service")
    gather(SPECS, hook_request({}, fhir), settings())
    ours = [r for r in caplog.records if r.name.startswith("cds_service")]
    assert any("conditions" in r.getMessage() for r in ours)
    assert all("p1" not in r.getMessage() for r in ours)


@pytest.mark.parametrize("junk", ["123", 42, ["x"], {"no": "resourceType"},
                                  {"resourceType": "Bundle", "entry": 5},
                                  {"resourceType": "Bundle", "entry": [{"resource": {
                                      "resourceType": "OperationOutcome", "issue": 7}}]}])
def test_malformed_prefetch_value_never_crashes(junk):
    data = gather(SPECS[2:], hook_request({"observations": junk}), settings())
    assert data.sources["observations"] in ("absent", "prefetch")
