"""/metrics of a real ``cds-service serve`` with two worker processes.

Two hook calls are made at once while the FHIR server they fetch from is slow,
so each sync worker takes one. /metrics, answered by either worker, must count
both: the workers share their values through a temporary folder that the
server makes (under TMPDIR) and removes when it stops.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fhir_server import FakeFhirServer
from tests.served import ServedProcess
from tests.source_case import CASE_1, PV, PV_ID, case1_request


@pytest.fixture(scope="module")
def fhir():
    with FakeFhirServer(CASE_1.resources) as server:
        server.delay_seconds = 0.5
        yield server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    temp = folder / "tmp"
    temp.mkdir()
    process = ServedProcess(folder, {"TMPDIR": str(temp)}, workers=2, threads=1)
    with process:
        yield process, temp


@pytest.fixture(scope="module")
def calls(served, fhir) -> list[requests.Response]:
    process, _ = served
    body = case1_request()
    del body["prefetch"]["conditions"]
    body["fhirServer"] = fhir.base_url
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda _: requests.post(process.url + PV, json=body, timeout=10),
                             range(2)))


def sample(process: ServedProcess, name: str, **labels: str) -> float:
    text = requests.get(process.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def test_both_workers_answered(served, calls):
    _, temp = served
    assert [response.status_code for response in calls] == [200, 200]
    [shared] = temp.glob("cds-metrics-*")
    pids = {path.stem.rsplit("_", 1)[1] for path in shared.glob("counter_*.db")}
    assert len(pids) == 2


def test_metrics_add_up_the_workers(served, calls):
    process, _ = served
    for _ in range(3):  # whichever worker answers
        assert sample(process, "cds_requests_total", endpoint="cds_hooks.invoke",
                      service=PV_ID, status="200") == 2
        assert sample(process, "cds_fhir_fetches_total", interaction="search",
                      outcome="ok") == 2


def test_the_shared_folder_is_removed_when_the_server_stops(served, calls):
    process, temp = served
    process.stop()
    assert not list(temp.glob("cds-metrics-*"))
