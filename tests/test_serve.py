"""``cds-service serve`` as a real process: gunicorn, two workers, the HTTP API, shutdown.

One server process is shared by the module. The shutdown test stops it, so it
comes last (pytest runs a module's tests in the order they are written).
Waits poll with a deadline; no test asserts how fast anything is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from cds_service.engine.knowledge import load_knowledge
from cds_service.scenario import build_request, load_scenario
from tests.conftest import REPO
from tests.served import ServedProcess

PATIENT_VIEW = "spine-postop-patient-view"
START_DEADLINE_SECONDS = 60  # after /healthz answers (tests.served waits for that)
GRACEFUL_TIMEOUT_SECONDS = 20  # CDS_GRACEFUL_TIMEOUT given to the server below
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"


def server_environment(folder: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its CDS_* variables, with a private database."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CDS_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update({"CDS_DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}",
                "CDS_EVALUATION_TIME": "2026-06-15T12:00:00Z", "CDS_LOG_FORMAT": "text",
                **extra})
    return env


def wait_until(condition: Callable[[], bool], deadline_seconds: float, what: str) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {deadline_seconds} s")
        time.sleep(0.2)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


class Server(ServedProcess):
    """The module's server, with a metrics folder of its own to see which workers answered."""

    def __init__(self, folder: Path) -> None:
        self.metrics_folder = folder / "metrics"
        self.metrics_folder.mkdir()
        env = server_environment(folder, CDS_GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT_SECONDS),
                                 PROMETHEUS_MULTIPROC_DIR=str(self.metrics_folder))
        super().__init__(folder, env, workers=2, threads=4)

    def get(self, path: str) -> requests.Response:
        # A new connection per request, so that the kernel may hand it to any worker.
        return requests.get(self.url + path, headers={"Connection": "close"}, timeout=30)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, headers={"Connection": "close"},
                             timeout=30)

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def pids_that_answered(self) -> set[int]:
        """Workers that counted a request: prometheus-client keeps one file per process."""
        return {int(path.stem.rsplit("_", 1)[1])
                for path in self.metrics_folder.glob("counter_*.db")}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("serve")) as served:
        wait_until(lambda: answers(served.url + "/cds-services"), START_DEADLINE_SECONDS,
                   "answering discovery")
        yield served


@pytest.fixture(scope="module")
def patient_view_cards(server) -> list[dict]:
    scenario = load_scenario(REPO / "fixtures" / "source-case-1.json")
    service = load_knowledge().services[PATIENT_VIEW]
    response = server.post(f"/cds-services/{PATIENT_VIEW}",
                           build_request(service, scenario.resources))
    assert response.status_code == 200, response.text
    return response.json()["cards"]


def test_discovery_answers_with_the_three_services(server):
    response = server.get("/cds-services")
    assert response.status_code == 200
    ids = {service["id"] for service in response.json()["services"]}
    assert {"spine-postop-patient-view", "spine-postop-order-select",
            "spine-postop-order-sign"} <= ids


def test_it_is_gunicorn_with_two_workers_not_the_development_server(server):
    assert len(server.worker_pids()) == 2
    assert "Werkzeug" not in server.get("/cds-services").headers.get("Server", "")


def urgent_decompression(cards: list[dict]) -> dict:
    matching = [c for c in cards if c["source"]["topic"]["code"] == "urgent-decompression"]
    assert len(matching) == 1, [c["source"]["topic"]["code"] for c in cards]
    return matching[0]


def test_start_up_warns_that_any_fhir_server_is_accepted(server):
    assert "FHIR_SERVERS is not set" in server.log()


def test_patient_view_of_source_case_1_gives_the_urgent_decompression_card(patient_view_cards):
    assert urgent_decompression(patient_view_cards)["indicator"] == "critical"


def test_feedback_on_a_returned_card_is_accepted(server, patient_view_cards):
    card = urgent_decompression(patient_view_cards)
    reason = card["overrideReasons"][0]
    body = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                          "overrideReason": {"reason": reason, "userComment": "seen"},
                          "outcomeTimestamp": "2026-06-15T12:05:00Z"}]}
    assert server.post(f"/cds-services/{PATIENT_VIEW}/feedback", body).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_platform_endpoints_answer(server, path):
    assert server.get(path).status_code == 200


def test_metrics_add_up_the_requests_of_every_worker(server):
    for _ in range(6):
        assert server.get("/healthz").status_code == 200
    text = server.get("/metrics").text
    healthz = [line for line in text.splitlines()
               if line.startswith("cds_requests_total{") and "operations.healthz" in line]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in healthz) >= 6


def test_both_workers_answer_requests(server):
    workers = server.worker_pids()

    def every_worker_answered() -> bool:
        for _ in range(5):
            assert server.get("/cds-services").status_code == 200
        return workers <= server.pids_that_answered()

    wait_until(every_worker_answered, 60, "answered by both workers")


@pytest.mark.parametrize("entrypoint", ["cds-service serve", "gunicorn -c deploy/gunicorn.conf.py"])
def test_a_port_already_in_use_is_one_line_and_a_failure(server, entrypoint, tmp_path):
    command = {
        "cds-service serve": [sys.executable, "-m", "cds_service", "serve",
                              "--host", "127.0.0.1", "--port", str(server.port)],
        "gunicorn -c deploy/gunicorn.conf.py": [sys.executable, "-m", "gunicorn", "-c",
                                                str(GUNICORN_CONF), "cds_service:create_app()"],
    }[entrypoint]
    env = server_environment(tmp_path, CDS_HOST="127.0.0.1", CDS_PORT=str(server.port))
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"cds-service: port {server.port} on 127.0.0.1 is already in use; stop what is "
        "listening there or choose another port (--port or CDS_PORT)")
    assert answers(server.url + "/healthz")  # the running server is untouched


def test_sigterm_stops_the_server_gracefully_with_status_0(server):
    """Last: it stops the module's server."""
    workers = server.worker_pids()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=GRACEFUL_TIMEOUT_SECONDS + 10) == 0
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10,
               "all workers gone")
    log = server.log()
    shutdown = log[log.index("Handling signal: term"):]
    assert "Traceback" not in shutdown and "Shutting down: Master" in shutdown

