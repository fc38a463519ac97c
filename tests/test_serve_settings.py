"""The gunicorn settings and hooks of ``cds_service.server``, and start-up errors in one line."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from cds_service.config import ConfigError
from cds_service.server import (
    _bind_problem,
    gunicorn_settings,
    on_starting,
    post_fork,
    startup_error_message,
)
from tests.conftest import REPO

GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"


def test_defaults_are_two_threaded_workers_on_localhost_8080():
    settings = gunicorn_settings({})
    assert settings["bind"] == ["127.0.0.1:8080"]
    assert (settings["workers"], settings["threads"], settings["worker_class"]) == (2, 4, "gthread")
    assert (settings["timeout"], settings["graceful_timeout"], settings["keepalive"]) == (30, 20, 5)
    assert settings["preload_app"] is True


def test_environment_variables_set_every_server_setting():
    settings = gunicorn_settings({"CDS_HOST": "0.0.0.0", "CDS_PORT": "9000", "CDS_WORKERS": "3",
                                  "CDS_THREADS": "8", "CDS_TIMEOUT": "60",
                                  "CDS_GRACEFUL_TIMEOUT": "25", "CDS_KEEPALIVE": "75"})
    assert settings["bind"] == ["0.0.0.0:9000"]
    assert (settings["workers"], settings["threads"]) == (3, 8)
    assert settings["timeout"] == 60
    assert (settings["graceful_timeout"], settings["keepalive"]) == (25, 75)


def test_command_line_options_win_over_the_environment():
    settings = gunicorn_settings({"CDS_PORT": "9000", "CDS_WORKERS": "3"}, port=9100, workers=None)
    assert settings["bind"] == ["127.0.0.1:9100"]
    assert settings["workers"] == 3


def test_one_thread_means_sync_workers():
    assert gunicorn_settings({"CDS_THREADS": "1"})["worker_class"] == "sync"


def test_an_ipv6_host_is_bracketed():
    assert gunicorn_settings({}, host="::1")["bind"] == ["[::1]:8080"]


@pytest.mark.parametrize(("name", "value"), [("CDS_WORKERS", "two"), ("CDS_WORKERS", "0"),
                                             ("CDS_PORT", "70000"), ("CDS_HOST", " ")])
def test_a_bad_server_variable_is_a_config_error_naming_it(name, value):
    with pytest.raises(ConfigError, match=name):
        gunicorn_settings({name: value})


def test_post_fork_freezes_startup_objects_and_raises_the_young_collection_threshold():
    before = gc.get_threshold()
    try:
        post_fork(None, None)
        assert gc.get_threshold() == (50_000, 20, 20)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_malformed_database_url_is_reported_without_its_password():
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError

    with pytest.raises(ArgumentError) as caught:
        create_engine("not a url with s3cret")
    message = startup_error_message(caught.value)
    assert "s3cret" not in message and "CDS_DATABASE_URL" in message


def test_a_port_in_use_is_named_and_a_free_port_is_not():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert f"port {port} on 127.0.0.1 is already in use" in _bind_problem("127.0.0.1", port)
    assert _bind_problem("127.0.0.1", port) is None


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str, *args) -> None:
        self.warnings.append(message % args)


def arbiter(app) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(address=[], workers=1),
                           app=SimpleNamespace(wsgi=lambda: app), log=Log())


def test_start_up_warns_that_any_fhir_server_is_accepted_without_an_allowlist(
        make_app, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    master = arbiter(make_app())
    on_starting(master)
    assert any("FHIR_SERVERS is not set" in w for w in master.log.warnings)


def test_start_up_is_quiet_about_fhir_servers_with_an_allowlist(make_app, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    master = arbiter(make_app(FHIR_SERVERS=["https://fhir.example.org/r4"]))
    on_starting(master)
    assert not any("FHIR_SERVERS" in w for w in master.log.warnings)


# -- a bad configuration stops the start with one line, from either entrypoint ------------

ENTRYPOINTS = {
    "cds-service serve": [sys.executable, "-m", "cds_service", "serve"],
    "gunicorn -c deploy/gunicorn.conf.py": [sys.executable, "-m", "gunicorn", "-c",
                                            str(GUNICORN_CONF), "cds_service:create_app()"],
}
BAD_CONFIGURATIONS = {
    "malformed JWT_ISSUERS": {"CDS_JWT_ISSUERS": "{not json"},
    "bad worker count": {"CDS_WORKERS": "many"},
}


@pytest.fixture(scope="module")
def failed_starts(tmp_path_factory) -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """Every entrypoint started with every bad configuration, all at once (each start
    spends most of its time importing)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    running = {}
    for entrypoint, command in ENTRYPOINTS.items():
        for case, variables in BAD_CONFIGURATIONS.items():
            folder = tmp_path_factory.mktemp("start")
            env = {**base, "CDS_DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}", **variables}
            running[entrypoint, case] = subprocess.Popen(
                command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
    results = {}
    for key, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        results[key] = subprocess.CompletedProcess(process.args, process.returncode,
                                                   stdout, stderr)
    return results


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_malformed_jwt_issuers_stop_the_start_in_one_line(entrypoint, failed_starts):
    result = failed_starts[entrypoint, "malformed JWT_ISSUERS"]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "cds-service: CDS_JWT_ISSUERS must be JSON")


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_a_bad_worker_count_stops_the_start_in_one_line(entrypoint, failed_starts):
    result = failed_starts[entrypoint, "bad worker count"]
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "cds-service: CDS_WORKERS must be a whole number from 1 to 64, not 'many'")
