"""Nothing answered with a 2xx is lost: the real server (``python -m cds_service serve``,
gunicorn) is killed with SIGKILL right after its last answer, and a new ``Storage`` on
the same SQLite file finds every feedback item, override and audit record."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cds_service.engine.knowledge import load_knowledge
from cds_service.scenario import build_request, default_fixtures_dir, load_scenario
from cds_service.storage import Storage
from tests.conftest import REPO

PV = "spine-postop-patient-view"
CASE = load_scenario(default_fixtures_dir() / "source-case-1.json")
SERVICE = load_knowledge().services[PV]
FEEDBACK_POSTS = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    database_url: str

    def kill_9(self) -> None:
        """SIGKILL to the master and its worker at once (their own process group)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_server(database: Path, log: Path) -> Server:
    port = free_port()
    env = {**os.environ, "CDS_DATABASE_URL": f"sqlite:///{database}",
           "CDS_EVALUATION_TIME": CASE.evaluation_time, "CDS_PATIENT_HASH_SECRET": "durable",
           "CDS_LOG_FORMAT": "text"}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", f"sqlite:///{database}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{server.url}/cds-services", timeout=2).status_code == 200:
                return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.kill_9()
    pytest.fail(f"the server did not answer discovery within 60 s:\n{log.read_text()}")


@pytest.fixture
def servers(tmp_path):
    """Starts servers on one database file; any still running at the end is killed."""
    started: list[Server] = []

    def start() -> Server:
        started.append(start_server(tmp_path / "cds.sqlite", tmp_path / "server.log"))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill_9()


def item(card: str, outcome: str = "overridden") -> dict:
    return {"card": card, "outcome": outcome, "outcomeTimestamp": "2026-06-15T12:00:00Z"}


def call(http: requests.Session, server: Server, body: dict) -> list[dict]:
    response = http.post(f"{server.url}/cds-services/{PV}", json=body, timeout=30)
    assert response.status_code == 200
    return response.json()["cards"]


def send(http: requests.Session, server: Server, feedback: dict) -> None:
    response = http.post(f"{server.url}/cds-services/{PV}/feedback",
                         json={"feedback": [feedback]}, timeout=30)
    assert response.status_code == 200


def test_feedback_answered_before_a_kill_9_is_all_stored(servers):
    server = servers()
    http = requests.Session()
    cards = call(http, server, build_request(SERVICE, CASE.resources))
    sent = [next(c["uuid"] for c in cards if c["indicator"] == "warning")]
    sent += [f"durable-{uuid.uuid4()}" for _ in range(FEEDBACK_POSTS - 1)]
    for card in sent:
        send(http, server, item(card))
    server.kill_9()  # right after the last answer

    storage = Storage(server.database_url)
    assert [row.card_uuid for row in storage.feedback()] == sent
    assert [row.card_uuid for row in storage.card_overrides()] == sent[:1]
    storage.close()


def test_a_hook_call_answered_before_a_kill_9_is_audited(servers):
    server = servers()
    http = requests.Session()
    first, second = (build_request(SERVICE, CASE.resources) for _ in range(2))
    warning = next(c for c in call(http, server, first) if c["indicator"] == "warning")
    send(http, server, item(warning["uuid"]))
    shown = call(http, server, second)
    server.kill_9()  # right after the last answer

    storage = Storage(server.database_url)
    assert [row.hook_instance for row in storage.audit_records()] == [
        first["hookInstance"], second["hookInstance"]]
    assert storage.audit_records()[-1].rules_suppressed == '["postop-infection-workup"]'
    assert {c["uuid"] for c in shown} <= {row.card_uuid for row in storage.issued_cards()}
    storage.close()
