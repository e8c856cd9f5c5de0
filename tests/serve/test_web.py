"""The pages (docs/pages.md): the customer widget a shop embeds (/widget, /static/widget.js), the operator console
(/operator) and the landing page.

Without a browser: the pages and files are served with their security headers (CSP: scripts from this origin only;
frame-ancestors: only /widget may be framed, by the configured shop origins), the widget has no key box and no debug
text, the CSS uses system CJK fonts only, and the scripts parse (``node --check``, when node is installed).

In headless Chromium (Debian's /usr/bin/chromium via Playwright; these tests skip with the reason when chromium or
playwright is missing): a shop page on another origin embeds the widget with a token from the shop's backend, asks,
sees the typing indicator then the streamed answer in a CJK font, rates it, presses 转人工; the operator page shows
path, facts and verification. Screenshots go to $KEFU_SCREENSHOTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from serve_support import API_KEY, live_uvicorn, make_service

from kefu.serve.gateway import Authenticator

CHROMIUM = os.environ.get("KEFU_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
        # the test's shop page (answered by Playwright) may load from the loopback kefu server, as a public shop
        # page loads from a public kefu host
        "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults"]
STATIC = Path(__file__).parents[2] / "src" / "kefu" / "serve" / "static"
CJK_FONTS = ("PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC",
             "WenQuanYi Micro Hei")
SHOP = "http://shop.localhost"  # a shop's site on another origin, answered by Playwright's request routing
DEBUG_WORDS = ("路径", "light", "full", "tiny", "handoff", "session", "verification", "API key")


# ----------------------------------------------------------------------------------------------- without a browser
def _csp(response) -> dict[str, str]:
    directives = [d.strip().split(None, 1) for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives if d}


def test_pages_are_served_with_security_headers(client, monkeypatch):
    monkeypatch.delenv("KEFU_WIDGET_FRAME_ANCESTORS", raising=False)
    for path in ("/", "/widget", "/widget?dev=1", "/operator"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        csp = _csp(r)
        assert csp["script-src"] == "'self'" and csp["default-src"] == "'none'" and csp["style-src"] == "'self'"
        assert csp["connect-src"] == "'self'" and csp["font-src"] == "'self'"  # no web fonts from elsewhere
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
        assert "<script>" not in r.text and " style=" not in r.text and "onclick" not in r.text  # nothing inline
    assert _csp(client.get("/widget"))["frame-ancestors"] == "'self'"  # no shop configured: framed by itself only
    for path in ("/", "/operator"):  # never framed
        r = client.get(path)
        assert _csp(r)["frame-ancestors"] == "'none'" and r.headers["x-frame-options"] == "DENY"
    assert "x-frame-options" not in client.get("/widget").headers


def test_widget_frame_ancestors_are_the_configured_shop_origins(client, monkeypatch):
    monkeypatch.setenv("KEFU_WIDGET_FRAME_ANCESTORS",
                       "https://shop.example, https://*.shop.example http://localhost:3000 evil;script-src 'unsafe-inline' javascript:x")
    r = client.get("/widget")
    assert _csp(r)["frame-ancestors"] == "'self' https://shop.example https://*.shop.example http://localhost:3000"
    assert _csp(r)["script-src"] == "'self'"  # a bad entry cannot add a directive
    assert _csp(client.get("/operator"))["frame-ancestors"] == "'none'"


def test_static_files_allow_list_and_types(client):
    for name, kind in (("widget.js", "text/javascript"), ("app.js", "text/javascript"),
                       ("operator.js", "text/javascript"), ("widget.css", "text/css"), ("operator.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == f"{kind}; charset=utf-8", name
        assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("index.html", "style.css", "..%2Fapp.py", "../secret", "nope.js"):
        assert client.get(f"/static/{name}").status_code == 404, name
    # every script and stylesheet a page names is served
    for path in ("/", "/widget", "/operator"):
        for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', client.get(path).text):
            assert client.get(ref).status_code == 200, (path, ref)


def test_widget_has_no_key_box_no_model_choice_and_no_debug_text(client):
    html = client.get("/widget").text
    js = client.get("/static/app.js").text
    assert 'type="password"' not in html and "<select" not in html and 'id="key"' not in html
    assert "API key" not in html + js and "localStorage" not in js  # no key typed in, none kept
    assert "转人工" in html and 'id="input"' in html
    assert "路径" not in js and "meta.path +" not in js and "meta.model" not in js  # nothing of the route is shown
    loader = client.get("/static/widget.js").text
    assert "data-token-url" in loader and "postMessage" in loader
    # the operator page is where keys, models and the route live
    operator = client.get("/operator").text
    assert 'type="password"' in operator and "<select" in operator


def test_fonts_are_system_cjk_fonts_without_downloads():
    for name in ("widget.css", "operator.css"):
        css = (STATIC / name).read_text(encoding="utf-8")
        stack = re.search(r"--kefu-font:([^;]+);", css).group(1)
        fonts = [f.strip().strip('"') for f in stack.split(",")]
        assert all(font in fonts for font in CJK_FONTS) and "sans-serif" in fonts, name
        assert fonts.index("Noto Sans CJK SC") < fonts.index("sans-serif")
        assert "@font-face" not in css and "url(" not in css and "@import" not in css, name
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text, path.name  # no CDN, nothing fetched elsewhere


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed: cannot syntax-check the scripts")
@pytest.mark.parametrize("name", ["app.js", "widget.js", "operator.js"])
def test_scripts_parse(name):
    run = subprocess.run(["node", "--check", str(STATIC / name)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr


# --------------------------------------------------------------------------------------------------- in Chromium
@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium fonts-noto-cjk)")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as exc:  # noqa: BLE001 -- e.g. a chromium the installed playwright cannot drive
            pytest.skip(f"cannot start chromium: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("KEFU_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cjk_font_installed() -> bool:
    if shutil.which("fc-list") is None:
        return False
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    return bool(out.strip())


# Inside the widget frame: note the order in which the typing indicator and the first answer text appear, and hold
# the first chat request back a moment so the indicator can be seen (and photographed).
WATCH = """
if (location.pathname === "/widget") {
  window.__events = []; window.__delay = %d;
  const realFetch = window.fetch.bind(window);
  window.fetch = (url, options) => {
    if (String(url).includes("/v1/chat/completions") && window.__delay) {
      const wait = window.__delay; window.__delay = 0;
      return new Promise((ok) => setTimeout(ok, wait)).then(() => realFetch(url, options));
    }
    return realFetch(url, options);
  };
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      const msg = el && el.closest && el.closest(".msg.assistant");
      if (!msg || msg.classList.contains("greeting")) continue;
      if (msg.classList.contains("typing")) window.__events.push("typing");
      else if (msg.textContent) window.__events.push("text");
    }
  }).observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
}
"""


def _shop(context, live_server: str, tokens: list[str]) -> None:
    """The shop's site: a product page with the widget's script tag, and the shop backend's token URL."""
    page = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>山岚户外旗舰店</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            f'<body><h1>山岚冲锋衣 SL-10001</h1><p>¥399 · 防水透气</p>'
            f'<script src="{live_server}/static/widget.js" data-token-url="/api/kefu-token"></script></body></html>')

    def handle(route):
        if route.request.url.endswith("/api/kefu-token"):
            assert route.request.method == "POST"
            tokens.append(route.request.url)
            route.fulfill(status=200, content_type="application/json",
                          body=json.dumps({"token": API_KEY, "expires_in": 300}))
        else:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=page)

    context.route(f"{SHOP}/**", handle)


def _widget_frame(page):
    frame = page.wait_for_selector(".kefu-frame").content_frame()
    assert frame is not None, "the widget's iframe did not load"
    return frame


def test_embedded_widget_asks_streams_rates_and_hands_off(browser, live_server, app, shots, monkeypatch):
    monkeypatch.setenv("KEFU_WIDGET_FRAME_ANCESTORS", SHOP)
    context = browser.new_context(viewport={"width": 1100, "height": 760}, locale="zh-CN")
    tokens: list[str] = []
    _shop(context, live_server, tokens)
    context.add_init_script(WATCH % 1200)
    chats: list = []
    page = context.new_page()
    page.on("request", lambda r: chats.append(r) if r.url.endswith("/v1/chat/completions") else None)
    page.goto(SHOP + "/p/SL-10001")
    page.click(".kefu-launcher")
    frame = _widget_frame(page)
    frame.wait_for_selector("#input")
    assert frame.locator("input[type=password], select, #key, #model").count() == 0  # no key box, no model choice

    frame.fill("#input", "SL-10001多少钱")
    frame.press("#input", "Enter")
    frame.wait_for_selector(".msg.assistant.typing .dot")  # the typing indicator while the answer is on its way
    page.screenshot(path=str(shots / "widget-typing.png"))
    frame.wait_for_selector(".msg.assistant.done")
    assert frame.inner_text(".msg.assistant.done .body") == "山岚冲锋衣的价格是¥399。"
    events = frame.evaluate("window.__events")
    assert "typing" in events and "text" in events and events.index("typing") < events.index("text")

    frame.fill("#input", "帮我推荐一款帐篷")  # the full model's path, streamed through SSE
    frame.click("#send")
    frame.locator(".msg.assistant.done").nth(1).wait_for()
    assert frame.locator(".msg.assistant.done .body").nth(1).inner_text().strip()

    frame.locator(".msg.assistant.done .rate-up").first.click()
    frame.wait_for_selector(".rate-up.chosen")
    frame.click("#handoff")
    frame.locator(".msg.assistant.done").nth(2).wait_for()
    assert "人工" in frame.locator(".msg.assistant.done .body").nth(2).inner_text()
    frame.locator(".msg.assistant.done .resolved").first.click()
    frame.wait_for_selector(".resolved.chosen")
    page.screenshot(path=str(shots / "widget-desktop.png"))

    # the token came from the shop's backend, and every request carried it and the server's session id
    session_id = frame.evaluate("window.kefuSession")
    assert session_id and tokens
    bodies = [json.loads(r.post_data) for r in chats]
    assert len(bodies) == 3 and "session_id" not in bodies[0]
    assert [b.get("session_id") for b in bodies[1:]] == [session_id, session_id]
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in chats)
    rows = app.state.service.feedback.list(session_id=session_id)
    assert [(r.kind, r.source) for r in rows] == [("rating", "web"), ("handoff", "web")]
    assert rows[0].rating == 1 and rows[1].outcome == "resolved"

    text = frame.inner_text("body")
    assert not [w for w in DEBUG_WORDS if w in text], text  # no route, model name or session shown to customers

    # Chinese in a CJK font, not tofu: the fonts Chromium actually used for the answer's glyphs
    if _cjk_font_installed():
        family = frame.evaluate("getComputedStyle(document.querySelector('.msg.assistant.done .body')).fontFamily")
        assert family.lstrip('"').startswith("PingFang SC")
        cdp = context.new_cdp_session(frame)
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": ".msg.assistant.done .body"})["nodeId"]
        used = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        cjk = [f for f in used if re.search(r"CJK|Han Sans|YaHei|PingFang|Hiragino|WenQuanYi", f["familyName"])]
        assert cjk and sum(f["glyphCount"] for f in cjk) >= len("山岚冲锋衣的价格是"), used

    # a phone: the chat takes the whole screen
    page.set_viewport_size({"width": 390, "height": 760})
    page.wait_for_function("document.querySelector('.kefu-frame').getBoundingClientRect().width == 390")
    page.screenshot(path=str(shots / "widget-mobile.png"))
    frame.click("#close")
    page.wait_for_function("getComputedStyle(document.querySelector('.kefu-frame')).display == 'none'")
    context.close()


def test_widget_is_not_framed_by_an_unlisted_shop(browser, live_server, monkeypatch):
    monkeypatch.delenv("KEFU_WIDGET_FRAME_ANCESTORS", raising=False)
    context = browser.new_context()
    _shop(context, live_server, [])
    page = context.new_page()
    page.goto(SHOP + "/p/SL-10001")
    page.click(".kefu-launcher")
    frame = _widget_frame(page)
    page.wait_for_timeout(1000)
    assert frame.query_selector("#input") is None  # Chromium refused to show kefu's page in the shop's frame
    context.close()


@pytest.fixture
def no_auth_server(tiny):
    """``kefu serve --no-auth``: the app without keys, on a live uvicorn."""
    from kefu.serve.app import create_app

    with live_uvicorn(create_app(make_service(tiny), auth=Authenticator(enabled=False, use_store=False))) as url:
        yield url


def test_widget_dev_mode_without_a_token(browser, no_auth_server):
    page = browser.new_page()
    requests: list = []
    page.on("request", lambda r: requests.append(r) if "/v1/" in r.url else None)
    page.goto(no_auth_server + "/widget?dev=1")
    assert page.locator("#close").is_hidden()  # not embedded: nothing to close
    page.fill("#input", "SL-10001多少钱")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.done")
    assert "¥399" in page.inner_text(".msg.assistant.done .body")
    assert requests and all("authorization" not in r.headers for r in requests)
    page.close()


def test_widget_shows_a_late_replacement_alone(browser, tiny, shop_kg, shop_time):
    """A streamed model answer whose second sentence fails verification: the customer saw the verified first
    sentence come in, then the replacement (the chunk marked ``kefu.replaces_sent``) stands alone in the bubble."""
    from kefu.serve.app import create_app
    from serve_support import Drafts, full_path_service

    service = full_path_service(tiny, shop_kg, Drafts("亲，X1冲锋衣是男款。有4XL码的，放心拍。"))
    with live_uvicorn(create_app(service, auth=Authenticator(enabled=False, use_store=False))) as url:
        page = browser.new_page()
        page.goto(url + "/widget?dev=1")
        page.fill("#input", "X1男款冲锋衣有XL码吗")
        page.press("#input", "Enter")
        page.wait_for_selector(".msg.assistant.done")
        shown = page.inner_text(".msg.assistant.done .body")
        page.close()
    assert "4XL" not in shown and "亲，X1冲锋衣是男款。" not in shown and shown.strip()


def test_operator_page_shows_path_facts_and_verification(browser, live_server, app, shots):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.add_init_script(f"sessionStorage.setItem('kefu-operator-key', '{API_KEY}')")
    page.goto(live_server + "/operator")
    page.locator("#model option").first.wait_for(state="attached")
    assert page.input_value("#model") == "tiny"
    page.fill("#input", "SL-10001多少钱")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.done")
    first = page.locator(".turn.assistant").nth(0)
    assert first.locator(".msg").inner_text() == "山岚冲锋衣的价格是¥399。"
    assert first.locator("dd[data-field='路径']").inner_text().startswith("light")
    assert first.locator("dd[data-field='原因']").inner_text().strip() not in ("", "—")
    assert first.locator("dd[data-field='所用事实']").count() == 1
    assert first.locator("dd[data-field='校验']").inner_text() in ("通过",) or \
        first.locator("dd[data-field='校验'] li").count() > 0

    page.fill("#input", "帮我推荐一款帐篷")
    page.click("#send")
    page.locator(".msg.assistant.done").nth(1).wait_for()
    second = page.locator(".turn.assistant").nth(1)
    meta_path = second.locator("dd[data-field='路径']").inner_text()
    assert meta_path.split("（")[0] in ("full", "light", "cache", "handoff")
    assert second.locator("dd[data-field='替换']").count() == 1 and second.locator("dd[data-field='修正']").count() == 1

    first.locator(".rate-up").click()
    page.wait_for_selector(".rate-up.chosen")
    first.locator(".correct").click()
    first.locator(".correction textarea").fill("山岚冲锋衣现价¥399，支持7天无理由退货。")
    first.locator(".save-correction").click()
    page.wait_for_selector(".correct.chosen")
    page.screenshot(path=str(shots / "operator.png"), full_page=True)
    session_id = page.evaluate("window.kefuSession")
    rows = app.state.service.feedback.list(session_id=session_id)
    assert [(r.kind, r.source) for r in rows] == [("rating", "web"), ("correction", "web")]
    page.close()
