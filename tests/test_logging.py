"""Log output: the formatters, configure_logging, and the one line each request leaves.

The same checks against a real ``cds-service serve`` process, with patient data,
tokens and JWTs that must never show, are in test_logging_served.py.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from cds_service.config import ConfigError
from cds_service.logs import JsonFormatter, TextFormatter, configure_logging
from tests.source_case import CASE_1, PATIENT_DATA, PV, PV_ID, case1_request, module_app

REQUEST_LOGGER = "cds_service.requests"


app = module_app()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def record(message: str = "hello %s", *args: object, fields: dict | None = None,
           exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("cds_service.test", logging.INFO, __file__, 1, message,
                             args or ("world",), exc_info)
    if fields is not None:
        made.fields = fields
    return made


# -- formatters --------------------------------------------------------------------


def test_json_lines_hold_time_level_logger_message_and_fields():
    line = JsonFormatter().format(record(fields={"status": 200, "rules": ["a", "b"]}))
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["time"].endswith("Z") and parsed["time"][10] == "T"
    assert (parsed["level"], parsed["logger"], parsed["message"]) == (
        "INFO", "cds_service.test", "hello world")
    assert (parsed["status"], parsed["rules"]) == (200, ["a", "b"])


def test_json_lines_carry_the_exception_in_one_line():
    try:
        raise ValueError("bad")
    except ValueError:
        line = JsonFormatter().format(record(exc_info=sys.exc_info()))
    assert "\n" not in line
    assert "ValueError: bad" in json.loads(line)["exception"]


def test_text_lines_show_fields_as_key_value_pairs():
    line = TextFormatter().format(record(fields={"status": 200, "service": "x", "hook": None}))
    assert " INFO cds_service.test hello world status=200 service=\"x\"" in line
    assert "hook=" not in line


# -- configure_logging -------------------------------------------------------------


@pytest.fixture
def restored_logging():
    root, service = logging.getLogger(), logging.getLogger("cds_service")
    saved = (list(root.handlers), root.level, service.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    service.setLevel(saved[2])


def test_configure_logging_installs_one_stderr_handler_however_often_called(restored_logging):
    before = len(logging.getLogger().handlers)
    configure_logging("json")
    configure_logging("text")
    handlers = logging.getLogger().handlers
    assert len(handlers) == before + 1
    assert isinstance(handlers[-1].formatter, TextFormatter)
    assert handlers[-1].stream is sys.stderr


def test_configure_logging_keeps_libraries_at_warning_and_the_service_at_info(
        restored_logging):
    configure_logging("json")
    assert logging.getLogger().level == logging.WARNING
    assert not logging.getLogger("urllib3").isEnabledFor(logging.INFO)
    assert logging.getLogger("cds_service.requests").isEnabledFor(logging.INFO)


def test_configure_logging_reads_the_format_from_the_environment(restored_logging,
                                                                  monkeypatch):
    monkeypatch.setenv("CDS_LOG_FORMAT", "text")
    configure_logging()
    assert isinstance(logging.getLogger().handlers[-1].formatter, TextFormatter)


def test_an_unknown_log_format_is_a_config_error(restored_logging):
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        configure_logging("xml")


# -- the request line --------------------------------------------------------------


def request_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == REQUEST_LOGGER]


@pytest.fixture
def caplog_requests(caplog):
    caplog.set_level(logging.DEBUG, logger=REQUEST_LOGGER)
    return caplog


def test_a_hook_call_leaves_one_line_with_its_fields(client, caplog_requests):
    body = case1_request()
    assert client.post(PV, json=body).status_code == 200
    [line] = request_lines(caplog_requests)
    assert line.levelno == logging.INFO
    assert line.getMessage() == f"POST {PV} 200"
    fields = line.fields
    assert fields["duration_ms"] >= 0
    assert {k: fields[k] for k in ("method", "path", "status", "service", "hook",
                                   "hookInstance")} == {
        "method": "POST", "path": PV, "status": 200, "service": PV_ID,
        "hook": "patient-view", "hookInstance": body["hookInstance"]}
    assert sorted(fields["rules"]) == CASE_1.expected_rules
    assert fields["resources"] == len(CASE_1.resources)


def test_the_line_never_holds_the_query_string(client, caplog_requests):
    client.get("/cds-services?patient=case1-patient")
    [line] = request_lines(caplog_requests)
    assert line.fields["path"] == "/cds-services"
    assert "case1-patient" not in str(line.fields) + line.getMessage()


def test_a_long_hook_instance_is_cut_to_64_characters(client, caplog_requests):
    body = case1_request()
    body["hookInstance"] = "x" * 500
    client.post(PV, json=body)
    [line] = request_lines(caplog_requests)
    assert line.fields["hookInstance"] == "x" * 64


def test_a_refused_call_still_names_its_hook(client, caplog_requests):
    client.post(PV, json={"hook": "patient-view", "hookInstance": "h-1"})
    [line] = request_lines(caplog_requests)
    assert (line.fields["status"], line.fields["hook"], line.fields["hookInstance"]) == (
        400, "patient-view", "h-1")
    assert "rules" not in line.fields


def test_an_unknown_service_is_logged_as_unknown(client, caplog_requests):
    client.post("/cds-services/case1-patient", json={})
    [line] = request_lines(caplog_requests)
    assert line.fields["service"] == "unknown"


def test_probes_and_scrapes_are_logged_at_debug(client, caplog_requests):
    for path in ("/healthz", "/readyz", "/metrics"):
        client.get(path)
    assert [line.levelno for line in request_lines(caplog_requests)] == [logging.DEBUG] * 3


def test_a_call_out_of_time_is_logged_as_a_warning(make_app, caplog_requests):
    app = make_app(REQUEST_TIME_BUDGET_SECONDS=1e-6)
    app.test_client().post(PV, json=case1_request())
    [line] = request_lines(caplog_requests)
    assert (line.levelno, line.fields["status"]) == (logging.WARNING, 503)


def test_nothing_at_info_names_the_patient(client, caplog):
    caplog.set_level(logging.INFO)
    client.post(PV, json=case1_request())
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in PATIENT_DATA:
        assert secret not in text
