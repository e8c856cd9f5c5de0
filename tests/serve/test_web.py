"""End-to-end: the web chat page in headless Chromium (Debian's /usr/bin/chromium via Playwright) against a live
uvicorn: ask, see the streamed answer, rate it, press 转人工. Skips cleanly without chromium or playwright."""

import os
import shutil

import pytest

from serve_support import API_KEY

CHROMIUM = os.environ.get("KEFU_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as exc:  # e.g. a chromium the installed playwright cannot drive
            pytest.skip(f"cannot start chromium: {exc}")
        page = browser.new_page()
        yield page
        browser.close()


def test_web_chat_streams_rates_and_hands_off(browser_page, live_server, app):
    page = browser_page
    page.add_init_script(f"localStorage.setItem('kefu-key', '{API_KEY}')")
    page.goto(live_server + "/")
    page.wait_for_function("document.querySelectorAll('#model option').length > 0")
    page.fill("#input", "SL-10001多少钱")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.done")
    assert page.inner_text(".msg.assistant.done .body") == "山岚冲锋衣的价格是¥399。"
    page.fill("#input", "帮我推荐一款帐篷")  # full model path, streamed through SSE
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('.msg.assistant.done').length == 2")
    assert page.locator(".msg.assistant.done .body").nth(1).inner_text().strip()
    page.locator(".msg.assistant.done .rate-up").first.click()
    page.wait_for_selector(".rate-up.chosen")
    page.click("#handoff")
    page.wait_for_function("document.querySelectorAll('.msg.assistant.done').length == 3")
    assert "人工" in page.locator(".msg.assistant.done .body").nth(2).inner_text()
    page.locator(".msg.assistant.done .resolved").first.click()
    page.wait_for_selector(".resolved.chosen")
    session_id = page.evaluate("window.kefuSession")
    rows = app.state.service.feedback.list(session_id=session_id)
    assert [(r.kind, r.source) for r in rows] == [("rating", "web"), ("handoff", "web")]
    assert rows[0].rating == 1 and rows[1].outcome == "resolved"
    assert any("SL-10001" in t["content"] for t in rows[1].conversation)
