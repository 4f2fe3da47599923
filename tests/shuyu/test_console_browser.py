"""The console in a real browser: Chromium drives login, review, approval and the release.

Screenshots of every page go to tests/artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from shuyu.api import create_app
from tests.shuyu.api_support import Api, pending_review_job

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(api: Api) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(api.domain), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_a_reviewer_approves_an_output_in_the_browser(api: Api, server: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    job = pending_review_job(api)
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        page.goto(f"{server}/console/queue?lang=en")
        assert page.url.endswith("/console/login")
        page.screenshot(path=str(ARTIFACTS / "console-login.png"), full_page=True)
        page.fill("#token", api.tokens["rev.zhao"])
        page.click("button[type=submit]")
        page.wait_for_url("**/console/queue")
        assert job in page.inner_text("#queue-table")
        page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

        page.click(f"a[href='/console/review/{job}']")
        page.wait_for_url(f"**/console/review/{job}")
        assert "SELECT district" in page.inner_text("pre.code")
        assert page.locator("svg.bars rect.bar").count() == 8
        page.screenshot(path=str(ARTIFACTS / "console-review.png"), full_page=True)
        page.goto(f"{server}/console/review/{job}?lang=zh")
        page.screenshot(path=str(ARTIFACTS / "console-review-zh.png"), full_page=True)
        page.goto(f"{server}/console/review/{job}?lang=en")

        for q in ("beyond_scope", "direct_exposure", "model_attack", "other_risk"):
            page.check(f"input[name=q_{q}][value=no]")
        page.fill("#reason", "Aggregates by district only; every cell above the threshold.")
        page.click("button[value=approve]")
        page.wait_for_url("**/console/queue?flash=review.decided")
        assert "Your review is recorded" in page.inner_text("main")
        assert job not in page.inner_text("main")

        page.click("text=Releases")
        page.wait_for_url("**/console/releases")
        assert job in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "console-releases.png"), full_page=True)

        page.click("text=Audit trail")
        page.wait_for_url("**/console/audit")
        assert "verify" in page.inner_text("#audit-status").lower()
        page.click("#audit-status button")  # HTMX swaps the panel in place
        page.wait_for_timeout(300)
        assert "Hash chain and signatures verify" in page.inner_text("#audit-status")
        page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)

        page.click("text=Privacy budgets")
        page.wait_for_url("**/console/budgets")
        assert "S-2026-001" in page.inner_text("main")
        page.screenshot(path=str(ARTIFACTS / "console-budgets.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
