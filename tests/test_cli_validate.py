"""``cds-service validate`` (CONTRACT §7): the real console script on the spec's examples,
on hand-broken copies of them, and on input it cannot read."""

from __future__ import annotations

import json

import pytest

from cds_service.protocol.validation import detect_kind
from tests.cli_runs import Runs, assert_one_line_error, command
from tests.conftest import REFERENCE, load_json

EXAMPLES = REFERENCE / "examples"
# Official examples that are themselves not conformant to CDS Hooks 2.0
# (reference/conformance-data/SOURCES.md), with the fault each has.
NON_CONFORMANT = {
    "stu2-16-system-action.json": "/systemActions/0/description",
    "stu2-18-example.json": "/cards/0/indicator",
    "stu2-26-extensions.json": "/context/patientId",
}
# Whole CDS Hooks documents among the examples (the rest are fragments: a token, an action...).
DOCUMENTS = sorted(p for p in EXAMPLES.glob("*.json") if detect_kind(load_json(p)))
VALID = [p for p in DOCUMENTS if p.name not in NON_CONFORMANT]


def broken_discovery() -> dict:
    doc = load_json(EXAMPLES / "stu2-01-discovery-example.json")
    del doc["services"][0]["hook"]
    doc["services"][1]["prefetch"]["medications"] = \
        "MedicationRequest?patient={{context.draftOrders}}"
    del doc["services"][2]["description"]
    return doc


def broken_request() -> dict:
    doc = load_json(EXAMPLES / "stu2-02-example.json")
    doc["hookInstance"] = 42
    doc["context"]["userId"] = "example"
    del doc["fhirServer"]
    return doc


def broken_response() -> dict:
    doc = load_json(EXAMPLES / "stu2-17-example.json")
    doc["cards"][0]["indicator"] = "urgent"
    doc["cards"][0]["links"][0]["appContext"] = "{}"
    doc["cards"][1]["summary"] = "x" * 141
    doc["cards"][1]["source"] = {"url": "https://example.com"}  # no label
    return doc


def broken_feedback() -> dict:
    doc = load_json(EXAMPLES / "stu2-19-example-suggestion-accepted.json")
    del doc["feedback"][0]["acceptedSuggestions"]
    doc["feedback"][0]["outcomeTimestamp"] = "yesterday"
    doc["feedback"].append({"card": "4e0a3a1e", "outcome": "ignored",
                            "outcomeTimestamp": "2021-12-11T10:05:31Z"})
    return doc


# Each hand-broken copy and the pointers of the faults put into it (14 in all).
BROKEN = {
    "discovery": (broken_discovery, ["/services/0/hook", "/services/1/prefetch/medications",
                                     "/services/2/description"]),
    "request": (broken_request, ["/hookInstance", "/context/userId", "/fhirAuthorization"]),
    "response": (broken_response, ["/cards/0/indicator", "/cards/0/links/0/appContext",
                                   "/cards/1/summary", "/cards/1/source/label"]),
    "feedback": (broken_feedback, ["/feedback/0/acceptedSuggestions",
                                   "/feedback/0/outcomeTimestamp", "/feedback/1/outcome"]),
}


@pytest.fixture(scope="module")
def broken_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    paths = {}
    for kind, (build, _) in BROKEN.items():
        paths[kind] = folder / f"broken-{kind}.json"
        paths[kind].write_text(json.dumps(build()))
    (folder / "not-json.json").write_text('{"cards": [}')
    (folder / "unknown-kind.json").write_text('{"resourceType": "Patient"}')
    paths["folder"] = folder
    return paths


@pytest.fixture(scope="module")
def runs(broken_files):
    folder = broken_files["folder"]
    response_text = (EXAMPLES / "stu2-17-example.json").read_text()
    return Runs({
        "examples": command("validate", *DOCUMENTS),
        "broken-copies": command("validate", *(broken_files[kind] for kind in BROKEN)),
        "one-broken-file": command("validate", broken_files["response"]),
        "stdin": command("validate", "-", stdin=response_text),
        "stdin-with-kind": command("validate", "-", "--kind", "feedback", stdin=response_text),
        "missing-file": command("validate", folder / "does-not-exist.json"),
        "invalid-json": command("validate", folder / "not-json.json"),
        "unknown-kind": command("validate", folder / "unknown-kind.json"),
    })


def test_the_examples_cover_every_kind_of_document():
    kinds = {detect_kind(load_json(p)) for p in VALID}
    assert kinds == {"discovery", "request", "response", "feedback"}
    assert {p.name for p in DOCUMENTS} >= set(NON_CONFORMANT)


def test_validate_accepts_every_valid_spec_example(runs):
    run = runs["examples"]
    for path in VALID:
        assert f"{path}: valid {detect_kind(load_json(path))}\n" in run.stdout, run


def test_validate_rejects_the_examples_known_to_be_non_conformant(runs):
    run = runs["examples"]
    assert run.code == 1, run
    for name, pointer in NON_CONFORMANT.items():
        assert f"{EXAMPLES / name}: {pointer}: " in run.stdout, run
    assert run.stdout.count(": valid ") == len(VALID)


@pytest.mark.parametrize("kind", BROKEN)
def test_validate_names_the_pointer_of_every_fault_in_a_broken_copy(runs, broken_files, kind):
    run = runs["broken-copies"]
    assert run.code == 1, run
    reported = {line.split(": ")[1] for line in run.stdout.splitlines()
                if line.startswith(f"{broken_files[kind]}: ")}
    assert set(BROKEN[kind][1]) <= reported, run


def test_validate_prints_one_pointer_and_message_per_line_for_a_single_file(runs):
    run = runs["one-broken-file"]
    assert run.code == 1, run
    lines = run.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == sorted(BROKEN["response"][1])
    assert all(len(line.split(": ", 1)[1]) > 10 for line in lines)  # a message, not just a code
    assert run.stderr == ""


def test_validate_reads_standard_input(runs):
    run = runs["stdin"]
    assert (run.code, run.stdout) == (0, "valid response\n"), run


def test_validate_kind_option_overrides_detection(runs):
    run = runs["stdin-with-kind"]
    assert run.code == 1, run
    assert run.stdout == "/feedback: missing required field 'feedback'\n", run


def test_validate_on_a_missing_file_is_a_one_line_error(runs):
    assert_one_line_error(runs["missing-file"], 2, "does-not-exist.json", "no such file")


def test_validate_on_invalid_json_is_a_one_line_error(runs):
    assert_one_line_error(runs["invalid-json"], 2, "not valid JSON", "line 1")


def test_validate_on_a_document_of_unknown_kind_is_a_one_line_error(runs):
    assert_one_line_error(runs["unknown-kind"], 2, "cannot tell", "--kind")
