// kefu widget loader: a shop puts this on its own pages.
//   <script src="KEFU/static/widget.js" data-token-url="/api/kefu-token" async></script>
// It adds a "在线客服" button and, when opened, an iframe with KEFU/widget. The chat itself runs inside the iframe (on
// kefu's origin, same-origin API calls, no CORS). The customer-scoped token comes from the shop's own backend:
// this script fetches data-token-url on the shop's origin (with the shop's cookies: the shop knows who is logged in)
// and hands the token to the iframe with postMessage addressed to kefu's origin only. The token URL answers
// {"token": "...", "expires_at": <unix seconds>} (or access_token/customer_token, expires_in) or the bare token text.
// Optional attributes: data-token-method (POST), data-model, data-title, data-color, data-position (right|left).
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__kefuWidgetLoaded) return;
  window.__kefuWidgetLoaded = true;
  var origin = new URL(script.src, location.href).origin;
  var tokenUrl = script.getAttribute("data-token-url");
  var tokenMethod = (script.getAttribute("data-token-method") || "POST").toUpperCase();
  var title = script.getAttribute("data-title") || "在线客服";
  var color = script.getAttribute("data-color") || "#e4393c";
  var side = script.getAttribute("data-position") === "left" ? "left" : "right";
  var src = origin + "/widget?embed=1";
  if (script.getAttribute("data-model")) src += "&model=" + encodeURIComponent(script.getAttribute("data-model"));
  var font = '"PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC", ' +
    '"WenQuanYi Micro Hei", sans-serif';
  var frame = null, open = false;

  function css(el, styles) { for (var k in styles) el.style[k] = styles[k]; return el; }

  var button = css(document.createElement("button"), {
    position: "fixed", bottom: "20px", zIndex: "2147483000", padding: "10px 18px", border: "0",
    borderRadius: "999px", background: color, color: "#fff", fontFamily: font, fontSize: "15px", cursor: "pointer",
    boxShadow: "0 4px 14px rgba(0,0,0,.2)"
  });
  button.style[side] = "20px";
  button.type = "button";
  button.className = "kefu-launcher";
  button.textContent = title;
  button.setAttribute("aria-expanded", "false");

  var small = window.matchMedia ? window.matchMedia("(max-width: 600px)") : { matches: false };
  function place() {
    if (!frame) return;
    if (small.matches) {  // phones: the chat takes the whole screen
      css(frame, { top: "0", bottom: "0", left: "0", right: "0", width: "100%", height: "100%", borderRadius: "0" });
    } else {
      css(frame, { top: "auto", bottom: "80px", width: "380px", height: "min(600px, calc(100vh - 100px))",
        borderRadius: "12px", left: side === "left" ? "20px" : "auto", right: side === "right" ? "20px" : "auto" });
    }
  }
  if (small.addEventListener) small.addEventListener("change", place);

  function show(yes) {
    open = yes;
    button.textContent = yes ? "收起" : title;
    if (yes && !frame) {
      frame = css(document.createElement("iframe"), {
        position: "fixed", zIndex: "2147483001", border: "0", background: "#fff",
        boxShadow: "0 8px 30px rgba(0,0,0,.25)"
      });
      frame.className = "kefu-frame";
      frame.title = title;
      frame.src = src;
      frame.setAttribute("referrerpolicy", "no-referrer");
      document.body.appendChild(frame);
      place();
    }
    if (frame) frame.style.display = yes ? "block" : "none";
    button.style.display = yes && small.matches ? "none" : "block";
    button.setAttribute("aria-expanded", yes ? "true" : "false");
  }
  button.addEventListener("click", function () { show(!open); });

  function readToken(r) {
    if (!r.ok) throw new Error("token url answered " + r.status);
    var type = r.headers.get("content-type") || "";
    if (type.indexOf("json") < 0) return r.text().then(function (t) { return { token: t.trim() }; });
    return r.json().then(function (d) {
      var token = d.token || d.access_token || d.customer_token;
      var expires = d.expires_at || (d.expires_in ? Date.now() / 1000 + Number(d.expires_in) : undefined);
      return { token: token, expires_at: typeof expires === "number" ? expires : undefined };
    });
  }

  window.addEventListener("message", function (event) {
    if (!frame || event.source !== frame.contentWindow || event.origin !== origin) return;
    var data = event.data || {};
    if (data.type === "kefu:close") { show(false); return; }
    if (data.type !== "kefu:token-request") return;
    if (!tokenUrl) {
      frame.contentWindow.postMessage({ type: "kefu:token-error" }, origin);
      return;
    }
    fetch(tokenUrl, { method: tokenMethod, credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(readToken)
      .then(function (t) {
        if (!t.token) throw new Error("no token");
        frame.contentWindow.postMessage({ type: "kefu:token", token: t.token, expires_at: t.expires_at }, origin);
      })
      .catch(function () { frame.contentWindow.postMessage({ type: "kefu:token-error" }, origin); });
  });

  function mount() { document.body.appendChild(button); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
  window.kefuWidget = { open: function () { show(true); }, close: function () { show(false); } };
})();
