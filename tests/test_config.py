"""Configuration: create_app() defaults, CDS_* environment parsing, precedence, errors."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import flask
import pytest

from cds_service import create_app
from cds_service.config import ConfigError, load_settings
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No CDS_* variable of the surrounding shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("CDS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """Flask's instance folder for the app built in the test, redirected into tmp_path."""
    folder = tmp_path / "instance"
    monkeypatch.setattr(flask.Flask, "auto_find_instance_path", lambda self: str(folder))
    return folder


def small_app(**config):
    config.setdefault("DATABASE_URL", "sqlite:///:memory:")
    return create_app(config)


# -- create_app() with no arguments ---------------------------------------------------------


def test_create_app_without_arguments_serves_discovery(tmp_path, monkeypatch, instance):
    monkeypatch.chdir(tmp_path)
    app = create_app()
    response = app.test_client().get("/cds-services")
    assert response.status_code == 200
    assert {s["id"] for s in response.get_json()["services"]} >= {
        "spine-postop-patient-view", "spine-postop-order-select", "spine-postop-order-sign"}


def test_create_app_without_arguments_has_jwt_off(tmp_path, monkeypatch, instance):
    monkeypatch.chdir(tmp_path)
    assert create_app().extensions["cds"].verifier is None


def test_default_database_is_a_sqlite_file_in_the_instance_folder(tmp_path, monkeypatch,
                                                                  instance):
    monkeypatch.chdir(tmp_path)
    app = create_app()
    database = Path(app.instance_path) / "cds_service.sqlite"
    assert app.extensions["cds"].storage.url == f"sqlite:///{database}"
    assert database.is_file()
    assert list(tmp_path.glob("*.sqlite")) == [], "nothing is written to the working directory"


def test_default_instance_folder_does_not_depend_on_the_working_directory(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path(flask.Flask("cds_service", instance_relative_config=True).instance_path)
    assert tmp_path not in folder.parents


def test_default_instance_folder_inside_the_repository_is_git_ignored():
    folder = Path(flask.Flask("cds_service", instance_relative_config=True).instance_path)
    if REPO not in folder.parents:
        pytest.skip(f"instance folder {folder} is outside the repository (installed package)")
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert f"{folder.relative_to(REPO)}/" in ignored or "*.sqlite" in ignored


def test_warning_is_logged_when_jwt_is_off(caplog):
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        small_app()
    assert any(r.levelno == logging.WARNING and "JWT" in r.getMessage() for r in caplog.records)


def test_no_jwt_warning_when_issuers_are_configured(caplog):
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
                      "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                      "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        app = small_app(JWT_ISSUERS={"https://ehr.example.org": {"jwks": jwks}})
    assert app.extensions["cds"].verifier is not None
    assert not any("JWT verification is off" in r.getMessage() for r in caplog.records)


# -- CDS_* environment variables ------------------------------------------------------------


def test_env_json_list_is_parsed():
    settings = load_settings(environ={"CDS_FHIR_SERVERS": '["https://fhir.example.org/r4"]'})
    assert settings["FHIR_SERVERS"] == ["https://fhir.example.org/r4"]


def test_env_json_mapping_is_parsed():
    settings = load_settings(environ={"CDS_THRESHOLDS": '{"recent_surgery_days": 60}'})
    assert settings["THRESHOLDS"] == {"recent_surgery_days": 60}


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("yes", True),
                                               ("false", False), ("0", False), ("off", False)])
def test_env_bool_is_parsed(raw, expected):
    assert load_settings(environ={"CDS_SANDBOX": raw})["SANDBOX"] is expected


def test_env_int_is_parsed():
    assert load_settings(environ={"CDS_MAX_REQUEST_BYTES": "2048"})["MAX_REQUEST_BYTES"] == 2048


def test_env_float_is_parsed():
    settings = load_settings(environ={"CDS_FHIR_CONNECT_TIMEOUT": "1.5"})
    assert settings["FHIR_CONNECT_TIMEOUT"] == 1.5


def test_env_instant_is_parsed_as_utc():
    settings = load_settings(environ={"CDS_EVALUATION_TIME": "2024-03-01T12:00:00+02:00"})
    assert settings["EVALUATION_TIME"] == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def test_env_reaches_the_app(monkeypatch):
    monkeypatch.setenv("CDS_MAX_REQUEST_BYTES", "4096")
    assert small_app().config["MAX_CONTENT_LENGTH"] == 4096


def test_mapping_wins_over_env(monkeypatch):
    monkeypatch.setenv("CDS_MAX_REQUEST_BYTES", "4096")
    assert small_app(MAX_REQUEST_BYTES=8192).config["MAX_CONTENT_LENGTH"] == 8192


def test_mapping_wins_over_env_for_lists():
    settings = load_settings({"FHIR_SERVERS": ["https://a.example.org"]},
                             environ={"CDS_FHIR_SERVERS": '["https://b.example.org"]'})
    assert settings["FHIR_SERVERS"] == ["https://a.example.org"]


def test_database_url_from_env_is_used(monkeypatch, tmp_path):
    database = tmp_path / "from-env.sqlite"
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{database}")
    app = create_app()
    assert app.extensions["cds"].storage.url == f"sqlite:///{database}"
    assert database.is_file()


@pytest.mark.parametrize("name", ["CDS_FHIR_SERVERS", "CDS_JWT_ISSUERS", "CDS_THRESHOLDS",
                                  "CDS_CORS_ORIGINS"])
def test_malformed_env_json_is_a_config_error_naming_the_variable(monkeypatch, name):
    monkeypatch.setenv(name, "[not json")
    with pytest.raises(ConfigError, match=name):
        small_app()


def test_env_json_of_the_wrong_shape_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CDS_FHIR_SERVERS", '{"url": "https://fhir.example.org"}')
    with pytest.raises(ConfigError, match="FHIR_SERVERS"):
        small_app()


def test_env_bool_that_is_no_bool_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CDS_SANDBOX", "maybe")
    with pytest.raises(ConfigError, match="CDS_SANDBOX"):
        small_app()


def test_env_int_that_is_no_int_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CDS_MAX_REQUEST_BYTES", "lots")
    with pytest.raises(ConfigError, match="MAX_REQUEST_BYTES"):
        small_app()


def test_mapping_value_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="FHIR_CONNECT_TIMEOUT"):
        small_app(FHIR_CONNECT_TIMEOUT=True)


def test_unknown_mapping_keys_pass_through_to_flask():
    assert small_app(TESTING=True).config["TESTING"] is True


# -- EVALUATION_TIME and THRESHOLDS ---------------------------------------------------------


def test_evaluation_time_is_the_clinical_now():
    app = small_app(EVALUATION_TIME="2024-03-01T12:00:00Z")
    assert app.extensions["cds"].hooks.now() == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_evaluation_time_without_offset_is_utc():
    app = small_app(EVALUATION_TIME="2024-03-01T12:00:00")
    assert app.extensions["cds"].hooks.now() == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-03-01T25:00:00Z", ""])
def test_malformed_evaluation_time_is_a_config_error(value):
    with pytest.raises(ConfigError, match="EVALUATION_TIME"):
        small_app(EVALUATION_TIME=value)


def test_malformed_evaluation_time_from_env_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CDS_EVALUATION_TIME", "next tuesday")
    with pytest.raises(ConfigError, match="EVALUATION_TIME"):
        small_app()


def test_threshold_override_is_applied():
    app = small_app(THRESHOLDS={"recent_surgery_days": 30})
    assert app.extensions["cds"].knowledge.thresholds["recent_surgery_days"] == 30


def test_threshold_override_from_env_is_applied(monkeypatch):
    monkeypatch.setenv("CDS_THRESHOLDS", '{"recent_surgery_days": 45}')
    assert small_app().extensions["cds"].knowledge.thresholds["recent_surgery_days"] == 45


def test_unknown_threshold_override_is_an_error_naming_it():
    with pytest.raises(ValueError, match="no_such_threshold"):
        small_app(THRESHOLDS={"no_such_threshold": 3})


def test_negative_threshold_override_is_an_error_naming_it():
    with pytest.raises(ValueError, match="recent_surgery_days"):
        small_app(THRESHOLDS={"recent_surgery_days": -1})


def test_malformed_jwt_issuers_is_an_error_at_startup():
    with pytest.raises(ValueError, match="JWT_ISSUERS"):
        small_app(JWT_ISSUERS={"https://ehr.example.org": {}})
