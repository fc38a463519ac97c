"""The service as a real process, for tests that need gunicorn, forks or stderr:

    with ServedProcess(tmp_path, {"CDS_LOG_FORMAT": "json"}, workers=1) as served:
        requests.get(served.url + "/healthz")
        served.log()        # everything the process wrote to stderr so far

It runs ``python -m cds_service serve`` on a free port of 127.0.0.1 with a
SQLite file in ``folder``, waits until ``/healthz`` answers and every worker has
booted, and stops the process (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

START_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServedProcess:
    def __init__(self, folder: Path, env: dict[str, str], *, workers: int = 1,
                 threads: int = 2) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {**inherited, "CDS_DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}",
                    **env}
        self.args = [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1",
                     "--port", str(self.port), "--workers", str(workers),
                     "--threads", str(threads)]
        self.workers = workers
        self.stderr_path = folder / "stderr.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServedProcess:
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cds-service serve exited early:\n{self.log()}")
            if self._answers() and self.log().count("Booting worker") >= self.workers:
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"cds-service serve did not answer in time:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")
