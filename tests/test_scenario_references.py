"""Scenario records that link their entries by urn:uuid fullUrl (transaction Bundles,
Synthea exports) are read like records that use Type/id."""

from __future__ import annotations

import json
import uuid

from cds_service import create_app
from cds_service.scenario import default_fixtures_dir, load_scenario
from tests.conftest import rule_ids


def test_a_scenario_with_urn_uuid_references_fires_like_the_original(tmp_path):
    data = json.loads((default_fixtures_dir() / "source-case-1.json").read_text())
    mapping = {}
    for entry in data["record"]["entry"]:
        resource = entry["resource"]
        urn = f"urn:uuid:{uuid.uuid4()}"
        mapping[f"{resource['resourceType']}/{resource.pop('id')}"] = urn
        entry["fullUrl"] = urn
    text = json.dumps(data)
    for ref, urn in mapping.items():
        text = text.replace(f'"reference": "{ref}"', f'"reference": "{urn}"')
    assert '"reference": "Patient/' not in text
    path = tmp_path / "case-1-urn.json"
    path.write_text(text)

    scenario = load_scenario(path)
    app = create_app({"EVALUATION_TIME": scenario.evaluation_time, "DATABASE_URL": "sqlite://",
                      "TESTING": True})
    service = app.extensions["cds"].knowledge.services["spine-postop-patient-view"]
    response = app.test_client().post(f"/cds-services/{service.id}",
                                      json=scenario.request(service))
    assert response.status_code == 200
    assert rule_ids(response.get_json()) == scenario.expected_rules
