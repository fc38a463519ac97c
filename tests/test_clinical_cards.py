"""Card content, through HTTP, for the source cases and a few other fixtures: what the
summaries say, which facts the details cite (with date and FHIR reference), and which
orders the suggestions create or delete."""

from __future__ import annotations

from functools import cache

import pytest

from cds_service import create_app
from cds_service.protocol.validation import validate_fhir_resource
from cds_service.scenario import default_fixtures_dir, load_scenario, scenario_files
from tests.conftest import assert_conformant

FIXTURES = default_fixtures_dir()
LOINC = "http://loinc.org"


@cache
def _app(evaluation_time: str | None):
    return create_app({"EVALUATION_TIME": evaluation_time, "DATABASE_URL": "sqlite://",
                       "TESTING": True})


@cache
def cards_of(name: str) -> tuple[dict, ...]:
    scenario = load_scenario(FIXTURES / f"{name}.json")
    app = _app(scenario.evaluation_time)
    service = next(s for s in app.extensions["cds"].knowledge.services.values()
                   if s.hook == scenario.hook)
    response = app.test_client().post(f"/cds-services/{service.id}",
                                      json=scenario.request(service))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_conformant(body)
    return tuple(body["cards"])


def card(name: str, rule: str) -> dict:
    found = [c for c in cards_of(name) if c["source"]["topic"]["code"] == rule]
    assert len(found) == 1, f"{name}: expected one {rule} card, got {len(found)}"
    return found[0]


def created(suggestion: dict) -> list[dict]:
    return [a["resource"] for a in suggestion.get("actions", ()) if a["type"] == "create"]


def created_codes(c: dict) -> list[str]:
    return [coding["code"] for s in c.get("suggestions", ()) for r in created(s)
            for coding in r["code"]["coding"] if coding["system"] == LOINC]


# -- urgent-decompression -------------------------------------------------------------------

def test_source_case_1_names_the_side_and_the_recent_discectomy():
    c = card("source-case-1", "urgent-decompression")
    assert "left" in c["summary"].lower()
    assert "after recent discectomy" in c["summary"]
    assert "This follows a lumbar discectomy on 2026-05-25" in c["detail"]
    assert "within hours" not in c["detail"]  # unilateral: urgent, not an emergency


def test_source_case_1_detail_lists_each_fact_with_date_and_reference():
    detail = card("source-case-1", "urgent-decompression")["detail"]
    facts = detail.split("**What the record shows**")[1].split("**Evidence**")[0]
    assert "onset 2026-06-13, `Condition/foot-drop`" in facts
    assert "performed 2026-05-25, `Procedure/discectomy`" in facts
    assert "imaged 2026-06-14" in facts and "`DiagnosticReport/mri-lumbar-report" in facts
    assert "ImagingStudy/mri-lumbar`" in facts


def test_herniation_branch_also_cites_the_discectomy():
    name = "urgent-decompression--fires-left-foot-drop-snomed-bodysite-recurrent-herniation"
    c = card(name, "urgent-decompression")
    assert c["summary"].startswith("Acute left foot drop after recent discectomy")
    assert "recurrent herniation" in c["detail"]
    assert "`Procedure/discectomy`" in c["detail"]
    assert "`Condition/recurrent-herniation, ImagingStudy/mri-lumbar`" in c["detail"]


def test_bilateral_foot_drop_is_an_emergency():
    c = card("urgent-decompression--fires-bilateral-foot-drop-emergency", "urgent-decompression")
    assert c["summary"].startswith("Emergency: bilateral foot drop")
    assert "hours" in c["summary"]
    assert "within hours, not days" in c["detail"]
    assert "discectomy on" not in c["detail"]  # no surgery on record
    # an MRI was done today: only the stat consultation is suggested
    assert [s["label"] for s in c["suggestions"]] == ["Request a stat spine surgery consultation"]
    consult = created(c["suggestions"][0])[0]
    assert consult["priority"] == "stat"


def test_cauda_equina_after_discectomy_is_an_emergency():
    c = card("urgent-decompression--fires-cauda-equina-g83-4-postop-collection",
             "urgent-decompression")
    assert "Emergency" in c["summary"] and "cauda equina syndrome" in c["summary"]
    assert "after recent discectomy" in c["summary"]
    assert "Cauda equina syndrome from compression" in c["detail"]
    assert "postoperative fluid collection" in c["detail"]


# -- infection --------------------------------------------------------------------------------

def test_workup_suggests_only_labs_not_resulted_in_the_last_7_days():
    c = card("postop-infection-workup--fires-valuestring-recent-crp", "postop-infection-workup")
    codes = created_codes(c)
    assert "1988-5" not in codes  # CRP resulted yesterday
    assert sorted(codes) == ["30341-2", "57021-8", "600-7", "600-7"]  # ESR, CBC, 2 cultures


def test_workup_with_recent_esr_and_wbc_suggests_crp_and_cultures_only():
    c = card("postop-infection-workup--fires-spine-cds-codes-65-days-after-surgery",
             "postop-infection-workup")
    assert sorted(created_codes(c)) == ["1988-5", "600-7", "600-7"]


def test_epidural_abscess_lists_converted_abnormal_values_with_dates():
    name = "suspected-epidural-abscess--fires-enhancing-collection-crp-mg-dl-fever-degf"
    cards = cards_of(name)
    assert [x["source"]["topic"]["code"] for x in cards] == ["suspected-epidural-abscess"]
    detail = cards[0]["detail"]
    assert "CRP 24 mg/L (threshold > 10 mg/L): resulted 2026-06-14, `Observation/crp`" in detail
    assert "Temperature 38.5 °C (threshold >= 38 °C): resulted 2026-06-15, `Observation/temp`" \
        in detail
    assert "WBC" not in detail.split("**What the record shows**")[1]  # 10.2 is normal
    assert cards[0]["indicator"] == "critical"
    assert "1988-5" not in created_codes(cards[0])  # CRP is recent


def test_epidural_abscess_lists_wbc_and_esr():
    detail = card("suspected-epidural-abscess--fires-condition-evidence-wbc-esr",
                  "suspected-epidural-abscess")["detail"]
    assert "WBC 14.2 ×10³/µL" in detail and "ESR 48 mm/h" in detail
    assert "Temperature" not in detail.split("**What the record shows**")[1]  # 37.6 Cel


def test_ct_insufficient_replaces_the_draft_ct_with_an_mri():
    c = card("ct-insufficient-for-abscess--fires-order-select-ct-with-enhancing-collection",
             "ct-insufficient-for-abscess")
    assert len(c["suggestions"]) == 1
    actions = c["suggestions"][0]["actions"]
    assert [a["type"] for a in actions] == ["delete", "create"]
    assert actions[0]["resourceId"] == "ServiceRequest/ct-lumbar"
    mri = actions[1]["resource"]
    assert mri["resourceType"] == "ServiceRequest" and mri["status"] == "draft"
    assert {"system": LOINC, "code": "24967-2", "display": "MR Lumbar spine WO and W contrast IV"} \
        in mri["code"]["coding"]
    assert mri["subject"] == {"reference": "Patient/ct-f1-patient"}


# -- the other source case --------------------------------------------------------------------

def test_source_case_2_persistent_pain_and_cervical_source():
    pain = card("source-case-2", "persistent-pain-after-fusion")
    assert "While the pending MRI is awaited" in pain["detail"]
    assert "`Condition/seroma, ImagingStudy/ct-lumbar`" in pain["detail"]
    assert "imaged 2026-01-20" in pain["detail"]
    assert created_codes(pain) == ["30620-9"]  # CT lumbar without contrast (+ PT referral)
    cervical = card("source-case-2", "consider-cervical-source")
    assert created_codes(cervical) == ["30667-0"]  # MRI cervical spine without contrast


# -- every card of every fixture ----------------------------------------------------------------

@pytest.mark.parametrize("path", scenario_files(FIXTURES), ids=lambda p: p.stem)
def test_every_card_is_short_cited_and_suggests_valid_fhir(path):
    for c in cards_of(path.stem):
        assert len(c["summary"]) < 140
        assert "{{" not in c["summary"] + c["detail"] and "{%" not in c["detail"]
        facts = c["detail"].split("**What the record shows**")[1].split("**Evidence**")[0]
        lines = [line for line in facts.splitlines() if line.startswith("- ")]
        assert lines, f"{c['summary']}: no facts cited"
        for line in lines:
            assert "`" in line and "date not recorded" not in line, line
        for suggestion in c.get("suggestions", ()):
            for resource in created(suggestion):
                assert validate_fhir_resource(resource) == []
