"""Running the real ``cds-service`` console script in subprocesses, several at once.

Each run starts a Python interpreter that imports the whole service (a couple
of seconds), so a test module starts all its runs together in a fixture and
each test then reads the one it specifies. ``serving`` puts an app on a real
HTTP server for the runs that call a service at ``--url``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import make_server

# The console script installed beside this interpreter, else the same entry point via -m.
_SCRIPT = shutil.which("cds-service", path=str(Path(sys.executable).parent))
COMMAND = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "cds_service"]

# No CDS_* settings of the developer's shell leak in; wide enough that no table cell wraps.
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("CDS_")}, "COLUMNS": "200"}


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"cds-service {' '.join(self.args)} -> exit {self.code}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


def cds_service(*args: str, stdin: str | None = None) -> Run:
    done = subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, text=True,
                          env=ENV, timeout=180, check=False)
    return Run(args, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Command:
    args: tuple[str, ...]
    stdin: str | None = None


def command(*args: object, stdin: str | None = None) -> Command:
    return Command(tuple(map(str, args)), stdin)


class Runs:
    """Named command lines started in parallel; ``runs[name]`` waits for one."""

    def __init__(self, commands: dict[str, Command]) -> None:
        pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self._futures: dict[str, Future[Run]] = {
            name: pool.submit(cds_service, *c.args, stdin=c.stdin) for name, c in commands.items()}
        pool.shutdown(wait=False)

    def __getitem__(self, name: str) -> Run:
        return self._futures[name].result()


def assert_one_line_error(run: Run, code: int, *words: str) -> None:
    """A failure reported as ``cds-service: ...`` on one line, nothing on stdout, no traceback."""
    assert run.code == code, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds-service: "), run
    assert "Traceback" not in run.stderr, run
    assert run.stdout == "", run
    for word in words:
        assert word in lines[0], run


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` on a real HTTP server on a free loopback port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
