"""The sandbox page end to end, in headless Chromium driven by Playwright.

The app runs on a real socket (werkzeug, a thread) with a private SQLite file;
the browser picks source case 1, fires, accepts a suggestion and overrides
another card, and the feedback must arrive in storage exactly as an EHR's
would. Screenshots go to tests/screenshots/ (git-ignored). The README's
docs/sandbox-case-1.png is refreshed with
``SANDBOX_DOCS_SCREENSHOT=1 python3 -m pytest tests/test_sandbox_browser.py``.

Debian's Chromium only (/usr/bin/chromium; `.ci/run` installs it): no browser
is ever downloaded. Skipped when Chromium or the playwright package is missing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cds_service import create_app

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "sandbox-case-1.png"
# Flags this machine needs: no sandbox as root, no GPU, and no background connections
# to Google's hosts, which the closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package "
                "(apt-get install chromium; .ci/run does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright package is not installed "
                                      "(pip install -e '.[test]')")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, object]]:
    """(base URL, app) of the service on a free loopback port."""
    folder = tmp_path_factory.mktemp("browser")
    app = create_app({"DATABASE_URL": f"sqlite:///{folder / 'cds.sqlite'}"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    opened.set_default_timeout(15_000)
    yield opened
    context.close()
    assert errors == [], f"the page logged errors: {errors}"


def _fire_case_1(page, base: str) -> None:
    page.goto(f"{base}/sandbox")
    page.select_option("#scenario", "source-case-1")
    page.wait_for_selector("#fire-form[data-loaded='source-case-1']", state="attached")
    assert page.input_value("#evaluation-time") == "2026-06-15T12:00:00Z"
    page.click("#fire")
    page.wait_for_selector(".card")


def _card(page, rule: str):
    return page.locator(f".card[data-rule='{rule}']")


def test_source_case_1_shows_the_critical_urgent_decompression_card(page, served):
    base, _app = served
    _fire_case_1(page, base)
    card = _card(page, "urgent-decompression")
    assert "card-critical" in card.get_attribute("class")
    assert card.locator(".badge").inner_text().strip().lower() == "critical"
    assert "foot drop" in card.locator(".card-summary").inner_text().lower()
    assert page.locator("#verdict").inner_text().startswith("✓ Valid")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "case-1-cards.png"))
    if os.environ.get("SANDBOX_DOCS_SCREENSHOT"):  # refreshes the README's picture
        page.set_viewport_size({"width": 1280, "height": 960})
        page.screenshot(path=str(DOCS_SCREENSHOT))


def test_accepting_a_suggestion_reveals_its_actions_and_stores_accepted_feedback(page, served):
    base, app = served
    _fire_case_1(page, base)
    card = _card(page, "urgent-decompression")
    suggestion = card.locator(".suggestion").first
    suggestion.locator("button.accept").click()
    sync_api.expect(card.locator(".feedback-status")).to_have_text("Accepted: feedback recorded")
    assert suggestion.locator(".actions").is_visible()
    assert "ServiceRequest" in suggestion.locator(".action-resource").inner_text()
    card_uuid = card.get_attribute("data-card")
    rows = app.extensions["cds"].storage.feedback(card_uuid)
    assert [r.outcome for r in rows] == ["accepted"]
    assert suggestion.get_attribute("data-suggestion") in rows[0].accepted_suggestions
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "case-1-accepted.png"), full_page=True)


def test_overriding_a_card_with_a_reason_stores_overridden_feedback(page, served):
    base, app = served
    _fire_case_1(page, base)
    card = _card(page, "postop-infection-workup")
    card.locator("button.override-toggle").click()
    chosen = json.loads(card.locator("select[name=reason] option").nth(1)
                        .get_attribute("data-coding"))
    card.locator("select[name=reason]").select_option(index=1)
    card.locator("input[name=comment]").fill("Labs drawn this morning")
    card.locator(".override-form button[type=submit]").click()
    sync_api.expect(card.locator(".feedback-status")).to_contain_text("Overridden:")
    rows = app.extensions["cds"].storage.feedback(card.get_attribute("data-card"))
    assert [r.outcome for r in rows] == ["overridden"]
    assert (rows[0].override_system, rows[0].override_code) == (chosen["system"],
                                                                chosen["code"])
    assert rows[0].user_comment == "Labs drawn this morning"
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "case-1-overridden.png"), full_page=True)
