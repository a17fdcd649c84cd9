"""Swagger UI in a real headless Chromium: the page renders from this server alone (no CDN), and
a worked example runs from "Try it out" to a job id."""

from __future__ import annotations

import re
import shutil

import pytest

from jobs.settings import REPO_ROOT
from tests.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts"
UUID = re.compile(r'"id":\s*"([0-9a-f-]{36})"')


def test_try_it_out_runs_a_worked_example(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(f"{stack.url}/docs")
            operation = page.locator("#operations-jobs-create_job")
            operation.locator(".opblock-summary").click()
            operation.get_by_role("button", name="Try it out").click()
            examples = operation.locator(".examples-select select").first
            examples.select_option(value="sd15_flux_hires")
            operation.get_by_role("button", name="Execute").click()
            body = operation.locator(".live-responses-table .response-col_description pre").first
            body.wait_for(timeout=15_000)
            body.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "swagger-try-it-out.png"))
            match = UUID.search(body.inner_text())
            assert match, body.inner_text()
            status = operation.locator(".live-responses-table tbody .response-col_status").first
            assert status.inner_text().strip() == "202"
        finally:
            browser.close()
    with stack.client() as client:
        envelope = client.get(f"/jobs/{match.group(1)}").json()
    assert envelope["spec"]["stages"][1]["model"] == "demo-flux"
