// kefu customer widget (the /widget page, usually inside the iframe that /static/widget.js puts on a shop's page).
// No key box: the customer-scoped token comes from the shop's backend through the embedding page (postMessage), or,
// with /widget?dev=1 on a `kefu serve --no-auth` server, no token at all. Answers stream from /v1/chat/completions
// (SSE); ratings and handoff outcomes go to /v1/feedback; the server's session id is kept for the conversation.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), input = $("input"), form = $("form"), sendButton = $("send"), handoffButton = $("handoff");
  const params = new URLSearchParams(location.search);
  const dev = params.get("dev") === "1";
  const embedded = window.parent !== window;
  const SESSION_KEY = "kefu-widget-session";
  const history = [];
  let sessionId = null, model = params.get("model") || "", token = null, tokenExpires = 0, busy = false;
  try { sessionId = sessionStorage.getItem(SESSION_KEY); } catch (e) { /* storage blocked: one page's session */ }

  // ------------------------------------------------------------------ the customer token (from the shop's backend)
  let tokenWaiters = [];
  window.addEventListener("message", (event) => {
    if (!embedded || event.source !== window.parent || !event.data || typeof event.data !== "object") return;
    const data = event.data;
    if (data.type === "kefu:token" || data.type === "kefu:token-error") {
      const waiters = tokenWaiters; tokenWaiters = [];
      if (data.type === "kefu:token" && typeof data.token === "string" && data.token) {
        token = data.token;
        tokenExpires = typeof data.expires_at === "number" ? data.expires_at * 1000 : Date.now() + 5 * 60 * 1000;
        waiters.forEach((w) => w.resolve(token));
      } else {
        waiters.forEach((w) => w.reject(new Error("token")));
      }
    }
  });

  function askParentForToken() {
    return new Promise((resolve, reject) => {
      tokenWaiters.push({ resolve, reject });
      if (tokenWaiters.length === 1) window.parent.postMessage({ type: "kefu:token-request" }, "*"); // no secret in it
      setTimeout(() => reject(new Error("token timeout")), 15000);
    });
  }

  async function getToken(fresh) {
    if (dev) return null;
    if (!fresh && token && Date.now() < tokenExpires - 30000) return token;
    token = null;
    if (!embedded) throw new Error("token");
    return askParentForToken();
  }

  async function api(path, options, retried) {
    const t = await getToken(false);
    const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
    if (t) headers["Authorization"] = "Bearer " + t;
    const r = await fetch(path, Object.assign({}, options, { headers }));
    if (r.status === 401 && !dev && !retried) { await getToken(true); return api(path, options, true); }
    return r;
  }

  async function ensureModel() {
    if (model) return model;
    const r = await api("/v1/models", { method: "GET" });
    if (!r.ok) throw new Error("models " + r.status);
    const data = await r.json();
    model = (data.data && data.data[0] && data.data[0].id) || "";
    if (!model) throw new Error("no model");
    return model;
  }

  // ------------------------------------------------------------------------------------------------- the page
  function scrollDown() { log.scrollTop = log.scrollHeight; }

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const body = document.createElement("div"); body.className = "body"; body.textContent = text;
    div.appendChild(body);
    log.appendChild(div);
    scrollDown();
    return div;
  }

  function notice(text) {
    const div = document.createElement("div"); div.className = "notice"; div.textContent = text;
    log.appendChild(div); scrollDown();
  }

  function typing(div) {
    div.classList.add("typing");
    const body = div.querySelector(".body");
    body.textContent = "";
    body.setAttribute("aria-label", "客服正在输入");
    for (let i = 0; i < 3; i++) { const dot = document.createElement("span"); dot.className = "dot"; body.appendChild(dot); }
  }

  function friendly(status) {
    if (status === 429) return "您发送得太快了，请稍后再试。";
    if (status === 401 || status === 403) return "登录状态已失效，请刷新页面后再试。";
    return "抱歉，客服暂时无法回复，请稍后再试。";
  }

  async function sendFeedback(payload, button, group) {
    group.forEach((b) => { b.disabled = true; });
    try {
      const r = await api("/v1/feedback", { method: "POST", body: JSON.stringify(
        Object.assign({ session_id: sessionId, source: "web", model: model || null }, payload)) });
      if (!r.ok) throw new Error(String(r.status));
      button.classList.add("chosen");
      notice("感谢您的反馈");
    } catch (e) {
      group.forEach((b) => { b.disabled = false; });
      notice("反馈提交失败，请稍后再试");
    }
  }

  // A thumb drawn as SVG (widget.html's template), not the 👍 emoji: many systems have no colour-emoji font.
  function thumb() { return $("thumb").content.firstElementChild.cloneNode(true); }

  function addActions(div, messageId, meta) {
    if (!sessionId) return;
    const bar = document.createElement("div"); bar.className = "actions";
    const buttons = [];
    function add(label, className, icon, payload) {
      const b = document.createElement("button"); b.type = "button"; b.className = className;
      if (icon) b.appendChild(thumb());
      b.appendChild(document.createTextNode(label));
      b.addEventListener("click", () => sendFeedback(Object.assign({ message_id: messageId }, payload), b, buttons));
      buttons.push(b); bar.appendChild(b);
    }
    if (meta && meta.path === "handoff") {
      add("问题已解决", "resolved", null, { kind: "handoff", outcome: "resolved" });
      add("仍未解决", "unresolved", null, { kind: "handoff", outcome: "unresolved" });
    } else {
      add("有用", "rate-up", true, { kind: "rating", rating: 1 });  // 👍
      add("没用", "rate-down", true, { kind: "rating", rating: -1 });  // 👎
    }
    div.appendChild(bar);
  }

  function keepSession(meta) {
    if (meta && typeof meta.session_id === "string" && meta.session_id) {
      sessionId = meta.session_id;
      try { sessionStorage.setItem(SESSION_KEY, sessionId); } catch (e) { /* storage blocked */ }
    }
  }

  async function send(text) {
    text = (text || "").trim();
    if (busy || !text) return;
    busy = true; sendButton.disabled = true; handoffButton.disabled = true;
    history.push({ role: "user", content: text });
    bubble("user", text);
    const div = bubble("assistant", ""); typing(div);
    const body = div.querySelector(".body");
    let answer = "", messageId = null, meta = null, started = false;
    try {
      await ensureModel();
      const request = { model: model, messages: history, stream: true };
      if (sessionId) request.session_id = sessionId;
      const r = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(request) });
      if (!r.ok) { const e = new Error("http"); e.status = r.status; throw e; }
      for await (const chunk of chatChunks(r)) {
        if (chunk.id) messageId = chunk.id;
        const choice = chunk.choices && chunk.choices[0];
        let piece = (choice && choice.delta && choice.delta.content) || "";
        if (chunk.kefu && chunk.kefu.replaces_sent) {
          answer = ""; piece = piece.replace(/^\n/, ""); // a late verification failure: the replacement stands alone
        } else if (chunk.kefu) { meta = chunk.kefu; keepSession(meta); }
        if (!piece) continue;
        if (!started) {
          started = true; div.classList.remove("typing"); div.classList.add("streaming");
          body.removeAttribute("aria-label");
        }
        answer += piece; body.textContent = answer; scrollDown();
      }
      if (!started) throw new Error("empty answer");
      history.push({ role: "assistant", content: answer });
      div.classList.remove("streaming"); div.classList.add("done");
      addActions(div, messageId || (meta && meta.message_id), meta);
    } catch (e) {
      div.classList.remove("typing", "streaming"); div.classList.add("error");
      body.removeAttribute("aria-label");
      body.textContent = friendly(e.status);
      history.pop();
    } finally {
      busy = false; sendButton.disabled = false; handoffButton.disabled = false; scrollDown();
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); const t = input.value; input.value = ""; send(t); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  // The router hands "转人工" (an explicit request for a person) to a human; the reply says so.
  handoffButton.addEventListener("click", () => send("转人工"));
  if (embedded) {
    const close = $("close");
    close.hidden = false;
    close.addEventListener("click", () => window.parent.postMessage({ type: "kefu:close" }, "*"));
  }
  Object.defineProperty(window, "kefuSession", { get: () => sessionId });
})();
