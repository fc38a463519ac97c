"""FhirClient and the FHIR_SERVERS allowlist, against a real local HTTP server."""

from __future__ import annotations

import logging
import time

import pytest

from cds_service.fhir import client as client_module
from cds_service.fhir.client import FhirClient, FhirFetchError
from cds_service.fhir.servers import normalise_base, server_allowed
from tests.fhir_server import FakeFhirServer

TOKEN = "s3cret-token-value"


def condition(i: int, patient: str = "p1") -> dict:
    return {"resourceType": "Condition", "id": f"c{i}",
            "subject": {"reference": f"Patient/{patient}"}}


@pytest.fixture
def fhir():
    with FakeFhirServer([{"resourceType": "Patient", "id": "p1"}]) as server:
        yield server


def make_client(server: FakeFhirServer, token: str | None = TOKEN, **overrides) -> FhirClient:
    options = dict(connect_timeout=2.0, total_timeout=5.0, retries=2, page_limit=20)
    options.update(overrides)
    return FhirClient(server.base_url, token, **options)


# -- allowlist ------------------------------------------------------------------

ALLOWED = ["https://fhir.example.org/r4", "http://ehr.local:8080/fhir/", "https://open.example"]

CASES = [
    ("https://fhir.example.org/r4", True),
    ("https://fhir.example.org/r4/", True),
    ("https://fhir.example.org/r4/tenant1", True),
    ("https://FHIR.Example.ORG/r4", True),
    ("https://fhir.example.org:443/r4", True),
    ("http://ehr.local:8080/fhir", True),
    ("https://open.example/anything/below", True),
    ("https://fhir.example.org/r4x", False),
    ("https://fhir.example.org/R4", False),
    ("https://fhir.example.org/", False),
    ("http://fhir.example.org/r4", False),
    ("https://fhir.example.org:8443/r4", False),
    ("http://ehr.local/fhir", False),
    ("http://ehr.local:80/fhir", False),
    ("https://user:pw@fhir.example.org/r4", False),
    ("https://fhir.example.org@evil.example/r4", False),
    ("https://fhir.example.org.evil.example/r4", False),
    ("https://evil.example/https://fhir.example.org/r4", False),
    ("https://fhir.example.org/r4/../admin", False),
    ("https://fhir.example.org/r4/%2e%2e/admin", False),
    ("https://fhir.example.org/r4/%2E%2E%2Fadmin", False),
    ("https://fhir.example.org/r4/./x", False),
    ("https://fhir.example.org/r4\\..\\admin", False),
    ("https://fhir.example.org/r4?x=1", False),
    ("https://fhir.example.org/r4#frag", False),
    ("https://fhir.example.org/r4//x", False),
    ("https://fhir.example.org:99999/r4", False),
    ("ftp://fhir.example.org/r4", False),
    ("fhir.example.org/r4", False),
    ("https://fhir.example.org/r4 ", False),
    ("", False),
]


@pytest.mark.parametrize(("url", "expected"), CASES)
def test_allowlist_matching(url, expected):
    assert server_allowed(url, ALLOWED) is expected


def test_allowlist_none_allows_any_well_formed_server():
    assert server_allowed("https://anywhere.example:9999/base", None)


def test_allowlist_none_still_refuses_malformed_urls():
    assert not server_allowed("https://u:p@anywhere.example/", None)
    assert not server_allowed("file:///etc/passwd", None)


def test_allowlist_empty_list_allows_nothing():
    assert not server_allowed("https://fhir.example.org/r4", [])


def test_allowlist_query_allowed_only_when_asked():
    url = "https://fhir.example.org/r4/Condition?_getpagesoffset=10"
    assert not server_allowed(url, ALLOWED)
    assert server_allowed(url, ALLOWED, allow_query=True)


def test_allowlist_ipv6_host_and_default_port():
    assert server_allowed("http://[::1]/fhir/x", ["http://[::1]:80/fhir"])


def test_normalise_base_strips_trailing_slash():
    assert normalise_base("https://a/r4/") == "https://a/r4"
    assert normalise_base("https://a/r4") == "https://a/r4"


# -- headers --------------------------------------------------------------------


def test_token_sent_as_bearer_header(fhir):
    make_client(fhir).read("Patient/p1")
    assert fhir.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert fhir.requests[0].headers["accept"] == "application/fhir+json"


def test_no_authorization_header_without_token(fhir):
    assert make_client(fhir, token=None).read("Patient/p1")["id"] == "p1"
    assert "authorization" not in fhir.requests[0].headers


def test_read_of_missing_resource_is_none(fhir):
    assert make_client(fhir).read("Patient/nope") is None


# -- paging ---------------------------------------------------------------------


def test_search_follows_next_links_across_pages(fhir):
    fhir.page_size = 2
    fhir.add(*(condition(i) for i in range(5)), condition(99, patient="other"))
    found = make_client(fhir).search("Condition?patient=p1")
    assert sorted(r["id"] for r in found) == ["c0", "c1", "c2", "c3", "c4"]
    assert len(fhir.requests) == 3


def test_search_skips_outcome_entries(fhir):
    fhir.add(condition(1))
    fhir.search_outcome = {"resourceType": "OperationOutcome",
                           "issue": [{"severity": "information", "code": "informational"}]}
    assert [r["id"] for r in make_client(fhir).search("Condition?patient=p1")] == ["c1"]


def test_page_limit_exceeded_is_an_error_naming_the_limit(fhir):
    fhir.page_size = 1
    fhir.add(*(condition(i) for i in range(5)))
    with pytest.raises(FhirFetchError, match=r"more than 3 pages"):
        make_client(fhir, page_limit=3).search("Condition?patient=p1")
    assert len(fhir.requests) == 3


def test_foreign_next_link_refused_and_never_requested(fhir):
    with FakeFhirServer() as elsewhere:
        fhir.page_size = 1
        fhir.add(condition(1), condition(2))
        fhir.next_link_override = f"{elsewhere.base_url}/Condition?patient=p1&page=2"
        with pytest.raises(FhirFetchError, match="not on the FHIR server"):
            make_client(fhir).search("Condition?patient=p1")
        assert elsewhere.requests == []
    assert len(fhir.requests) == 1


def test_next_link_outside_base_path_refused(fhir):
    fhir.page_size = 1
    fhir.add(condition(1), condition(2))
    fhir.next_link_override = f"{fhir.origin}/admin/Condition?page=2"
    with pytest.raises(FhirFetchError, match="not on the FHIR server"):
        make_client(fhir).search("Condition?patient=p1")
    assert len(fhir.requests) == 1


# -- retries --------------------------------------------------------------------


def test_retry_on_503_then_success(fhir):
    fhir.fail_next(1, status=503)
    assert make_client(fhir).read("Patient/p1")["id"] == "p1"
    assert len(fhir.requests) == 2


def test_retries_exhausted_is_an_error(fhir):
    fhir.fail_next(5, status=502)
    with pytest.raises(FhirFetchError, match=r"HTTP 502.*3 attempt"):
        make_client(fhir, retries=2).read("Patient/p1")
    assert len(fhir.requests) == 3


def test_no_retry_on_404(fhir):
    fhir.respond_next(1, 404, b"{}")
    assert make_client(fhir).read("Patient/p1") is None
    assert len(fhir.requests) == 1


def test_no_retry_on_400(fhir):
    fhir.respond_next(1, 400, b"{}")
    with pytest.raises(FhirFetchError, match="HTTP 400"):
        make_client(fhir).search("Condition?patient=p1")
    assert len(fhir.requests) == 1


def test_retry_on_connection_refused_then_error():
    with FakeFhirServer() as gone:
        base = gone.base_url
    client = FhirClient(base, None, connect_timeout=1, total_timeout=3, retries=1, page_limit=5)
    with pytest.raises(FhirFetchError, match="connection failed.*2 attempt"):
        client.read("Patient/p1")


# -- refusals and bad answers ---------------------------------------------------


def test_401_error_names_status_without_token(fhir):
    fhir.require_token = "the-right-one"
    with pytest.raises(FhirFetchError) as caught:
        make_client(fhir).read("Patient/p1")
    assert "refused access" in str(caught.value)
    assert "HTTP 401" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(fhir.requests) == 1


def test_403_is_refused_access(fhir):
    fhir.respond_next(1, 403, b"{}")
    with pytest.raises(FhirFetchError, match=r"refused access .*HTTP 403"):
        make_client(fhir).read("Patient/p1")


def test_token_accepted_when_server_requires_it(fhir):
    fhir.require_token = TOKEN
    assert make_client(fhir).read("Patient/p1")["id"] == "p1"


def test_total_timeout_honoured(fhir):
    fhir.delay_seconds = 3.0
    budget = 0.5
    started = time.monotonic()
    with pytest.raises(FhirFetchError, match="time budget"):
        make_client(fhir, total_timeout=budget, retries=3).read("Patient/p1")
    assert time.monotonic() - started < budget + 1.0


def test_time_budget_spans_all_requests_of_one_client(fhir):
    client = make_client(fhir, total_timeout=0.3)
    client.read("Patient/p1")
    time.sleep(0.35)
    with pytest.raises(FhirFetchError, match="time budget"):
        client.read("Patient/p1")
    assert len(fhir.requests) == 1


def test_non_json_body_is_an_error(fhir):
    fhir.respond_next(1, 200, b"<html>gateway</html>", content_type="text/html")
    with pytest.raises(FhirFetchError, match="not JSON"):
        make_client(fhir).read("Patient/p1")


def test_search_answer_not_a_bundle_is_an_error(fhir):
    fhir.respond_next(1, 200, {"resourceType": "Patient", "id": "p1"})
    with pytest.raises(FhirFetchError, match="not a Bundle"):
        make_client(fhir).search("Patient?_id=p1")


def test_oversized_body_is_an_error(fhir, monkeypatch):
    monkeypatch.setattr(client_module, "MAX_RESPONSE_BYTES", 1000)
    fhir.respond_next(1, 200, b'{"resourceType": "Patient", "x": "' + b"a" * 5000 + b'"}')
    with pytest.raises(FhirFetchError, match="larger than"):
        make_client(fhir).read("Patient/p1")


def test_redirect_not_followed(fhir):
    fhir.respond_next(1, 302, b"")
    with pytest.raises(FhirFetchError, match="redirect"):
        make_client(fhir).read("Patient/p1")
    assert len(fhir.requests) == 1


def test_dot_segments_in_relative_url_never_requested(fhir):
    with pytest.raises(FhirFetchError, match="not under"):
        make_client(fhir).read("Patient/../../admin")
    assert fhir.requests == []


def test_token_with_newline_refused_without_echo(fhir):
    with pytest.raises(FhirFetchError) as caught:
        make_client(fhir, token="abc\r\nX-Evil: 1").read("Patient/p1")
    assert "abc" not in str(caught.value)
    assert fhir.requests == []


def test_client_never_logs_token(fhir, caplog):
    caplog.set_level(logging.DEBUG)
    fhir.fail_next(1, status=503)
    fhir.add(condition(1))
    client = make_client(fhir)
    client.search("Condition?patient=p1")
    fhir.require_token = "other"
    with pytest.raises(FhirFetchError):
        client.read("Patient/p1")
    assert caplog.records
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
