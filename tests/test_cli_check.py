"""``cds-service check`` (CONTRACT §7): the real console script runs scenario folders against
the service, in-process and at a live server."""

from __future__ import annotations

import json
import shutil

import pytest

from cds_service import create_app
from cds_service.scenario import default_fixtures_dir, scenario_files
from tests.cli_runs import Runs, assert_one_line_error, command, serving
from tests.conftest import load_json

AT = "2026-06-15T12:00:00Z"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A folder with a passing scenario, one whose expectedRules are wrong, and a broken file;
    and a folder with only the passing one."""
    mixed = tmp_path_factory.mktemp("mixed")
    fixtures = default_fixtures_dir()
    shutil.copy(fixtures / "source-case-1.json", mixed / "passes.json")
    wrong = load_json(fixtures / "source-case-1.json")
    wrong["expectedRules"] = ["early-postop-imaging-caveat", "postop-infection-workup",
                              "suspected-epidural-abscess"]
    wrong["silentRules"] = []
    (mixed / "wrong-expectation.json").write_text(json.dumps(wrong))
    (mixed / "broken.json").write_text('{"id": "broken", "hook": ')
    remote = tmp_path_factory.mktemp("remote")
    shutil.copy(fixtures / "source-case-1.json", remote / "source-case-1.json")
    return {"mixed": mixed, "remote": remote, "missing": mixed / "no-such-folder"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    database = tmp_path_factory.mktemp("check-server") / "cds.sqlite"
    app = create_app({"EVALUATION_TIME": AT, "DATABASE_URL": f"sqlite:///{database}",
                      "TESTING": True})
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def runs(folders, server):
    return Runs({
        "bundled": command("check"),
        "mixed": command("check", folders["mixed"]),
        "missing-folder": command("check", folders["missing"]),
        "url": command("check", folders["remote"], "--url", server),
    })


def row(run, scenario: str) -> str:
    """The table row of a scenario (the table is wide enough not to wrap)."""
    lines = [line for line in run.stdout.splitlines() if f" {scenario} " in line]
    assert len(lines) == 1, run
    return lines[0]


def test_check_passes_every_bundled_fixture(runs):
    run = runs["bundled"]
    assert run.code == 0, run
    count = len(scenario_files(default_fixtures_dir()))
    assert f"{count} scenarios: {count} passed, 0 failed" in run.stdout
    assert "source-case-1" in row(run, "source-case-1")


def test_check_shows_missing_and_unexpected_rules_of_a_wrong_expectation(runs):
    run = runs["mixed"]
    assert run.code == 1, run
    line = row(run, "wrong-expectation")
    assert "FAIL" in line
    assert "missing: suspected-epidural-abscess" in line
    assert "unexpected: urgent-decompression" in run.stdout


def test_check_reports_an_unreadable_scenario_as_a_failed_row_and_runs_the_rest(runs):
    run = runs["mixed"]
    line = row(run, "broken")
    assert "ERROR" in line and "not valid JSON" in line
    assert "PASS" in row(run, "passes")
    assert "3 scenarios: 1 passed, 2 failed" in run.stdout
    assert "Traceback" not in run.stderr


def test_check_on_a_missing_folder_is_a_one_line_error(runs):
    assert_one_line_error(runs["missing-folder"], 2, "no-such-folder", "not a folder")


def test_check_url_runs_against_a_live_service_and_says_evaluation_time_is_not_applied(runs):
    run = runs["url"]
    assert run.code == 0, run
    assert "evaluationTime cannot be applied" in run.stdout
    assert f"CDS_EVALUATION_TIME={AT}" in run.stdout
    assert "PASS" in row(run, "source-case-1")
