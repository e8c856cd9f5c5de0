// kefu operator console (/operator): shop staff ask with an agent/admin key and see, per answer, what kefu did —
// route/path and reason, the facts used, the verification result, replacements and fixes (the `kefu` extension object
// of each response) — and send ratings, corrections and handoff outcomes to /v1/feedback.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), input = $("input"), statusBox = $("status"), keyBox = $("key"), modelBox = $("model");
  const KEY = "kefu-operator-key";
  let history = [], sessionId = null, busy = false;
  keyBox.value = sessionStorage.getItem(KEY) || "";  // the tab's lifetime only, never localStorage

  function headers() {
    const h = { "Content-Type": "application/json" };
    if (keyBox.value) h["Authorization"] = "Bearer " + keyBox.value;
    return h;
  }
  function setStatus(text, ok) { statusBox.textContent = text || ""; statusBox.classList.toggle("ok", !!ok); }
  async function errorText(r) {
    try { return r.status + " " + (await r.json()).error.message; } catch (e) { return String(r.status); }
  }

  async function loadModels() {
    sessionStorage.setItem(KEY, keyBox.value);
    try {
      const r = await fetch("/v1/models", { headers: headers() });
      if (!r.ok) { setStatus("无法获取模型列表：" + await errorText(r)); return; }
      const data = await r.json();
      const keep = modelBox.value;
      modelBox.innerHTML = "";
      for (const m of data.data) {
        const o = document.createElement("option"); o.value = o.textContent = m.id; modelBox.appendChild(o);
      }
      if (keep && [...modelBox.options].some((o) => o.value === keep)) modelBox.value = keep;
      setStatus("");
    } catch (e) { setStatus("连接失败：" + e); }
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function list(items) {
    const ul = el("ul");
    for (const item of items) ul.appendChild(el("li", null, typeof item === "string" ? item : JSON.stringify(item)));
    return ul;
  }

  function factsOf(meta) {
    const facts = meta.facts !== undefined ? meta.facts : meta.facts_used;
    if (facts === undefined || facts === null) return null;
    if (Array.isArray(facts)) return facts;
    if (typeof facts === "string") return facts.split("\n").filter(Boolean);
    return [facts];
  }

  // The kefu extension object as a definition list: path, reason, facts, verification, replaced, fixes, handoff.
  function inspect(meta) {
    const box = el("div", "inspect");
    const dl = el("dl");
    function row(name, value, cls) {
      const dt = el("dt", null, name), dd = el("dd", cls);
      if (value instanceof Node) dd.appendChild(value); else dd.textContent = value;
      dd.dataset.field = name;
      dl.append(dt, dd);
    }
    const flags = [meta.cached ? "缓存" : "", meta.fallback ? "降级" : ""].filter(Boolean).join("，");
    row("路径", meta.path + (flags ? "（" + flags + "）" : ""), "path path-" + meta.path);
    row("原因", meta.reason || "—", "reason");
    row("意图", meta.intent || "—", "intent");
    const facts = factsOf(meta);
    row("所用事实", facts === null ? "（服务器未返回）" : facts.length ? list(facts) : "无", "facts");
    const problems = meta.verification || [];
    row("校验", problems.length ? list(problems) : "通过", "verification " + (problems.length ? "verify-bad" : "verify-ok"));
    row("替换", meta.replaced || "否", "replaced");
    row("修正", (meta.fixes && meta.fixes.length) ? list(meta.fixes) : "无", "fixes");
    if (meta.violations) row("违规", String(meta.violations), "violations");
    if (meta.handoff) row("转人工", JSON.stringify(meta.handoff), "handoff");
    if (meta.finish_reason && meta.finish_reason !== "stop") row("结束", meta.finish_reason, "finish");
    row("模型", meta.model || "—", "model");
    row("会话 / 消息", (meta.session_id || "—") + " / " + (meta.message_id || "—"), "ids");
    box.appendChild(dl);
    return box;
  }

  async function sendFeedback(payload, button) {
    const r = await fetch("/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify(
      Object.assign({ session_id: sessionId, source: "web", model: modelBox.value || null }, payload)) });
    if (r.ok) { if (button) button.classList.add("chosen"); setStatus("反馈已保存", true); }
    else { setStatus("反馈提交失败：" + await errorText(r)); }
  }

  function actions(turn, messageId, meta) {
    const bar = el("div", "actions");
    function add(label, className, payload) {
      const b = el("button", className, label); b.type = "button";
      b.addEventListener("click", () => sendFeedback(Object.assign({ message_id: messageId }, payload), b));
      bar.appendChild(b);
    }
    add("有帮助 +1", "rate-up", { kind: "rating", rating: 1 });
    add("没帮助 −1", "rate-down", { kind: "rating", rating: -1 });
    const fix = el("button", "correct", "纠正"); fix.type = "button"; bar.appendChild(fix);
    if (meta && meta.path === "handoff") {
      add("人工已解决", "resolved", { kind: "handoff", outcome: "resolved" });
      add("人工未解决", "unresolved", { kind: "handoff", outcome: "unresolved" });
      add("升级处理", "escalated", { kind: "handoff", outcome: "escalated" });
    }
    turn.appendChild(bar);
    fix.addEventListener("click", () => {
      if (turn.querySelector(".correction")) return;
      const box = el("div", "correction");
      const text = el("textarea"); text.rows = 2; text.placeholder = "正确的回答应该是……";
      const save = el("button", "save-correction", "提交纠正"); save.type = "button";
      save.addEventListener("click", async () => {
        if (!text.value.trim()) return;
        await sendFeedback({ kind: "correction", correction: text.value, message_id: messageId }, fix);
        box.remove();
      });
      box.append(text, save); turn.appendChild(box); text.focus();
    });
  }

  function addTurn(role, text) {
    const turn = el("div", "turn " + role);
    const msg = el("div", "msg " + role, text);
    turn.appendChild(msg); log.appendChild(turn); log.scrollTop = log.scrollHeight;
    return turn;
  }

  async function send(text) {
    if (busy || !text.trim()) return;
    busy = true; setStatus("");
    history.push({ role: "user", content: text });
    addTurn("user", text);
    const turn = addTurn("assistant", "正在生成……");
    const msg = turn.querySelector(".msg"); msg.classList.add("typing");
    let answer = "", messageId = null, meta = null;
    try {
      const request = { model: modelBox.value || "base", messages: history, stream: true };
      if (sessionId) request.session_id = sessionId;
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(request) });
      if (!r.ok) throw new Error(await errorText(r));
      for await (const chunk of chatChunks(r)) {
        if (chunk.id) messageId = chunk.id;
        if (chunk.kefu) { meta = chunk.kefu; if (meta.session_id) sessionId = meta.session_id; }
        const choice = chunk.choices && chunk.choices[0];
        const piece = (choice && choice.delta && choice.delta.content) || "";
        if (!piece) continue;
        msg.classList.remove("typing");
        answer += piece; msg.textContent = answer; log.scrollTop = log.scrollHeight;
      }
      msg.classList.remove("typing");
      msg.textContent = answer;
      history.push({ role: "assistant", content: answer });
      msg.classList.add("done");
      if (meta) turn.appendChild(inspect(meta));
      actions(turn, messageId || (meta && meta.message_id), meta);
    } catch (e) {
      msg.classList.remove("typing"); msg.classList.add("error");
      msg.textContent = "出错了：" + e.message; history.pop();
    } finally { busy = false; log.scrollTop = log.scrollHeight; }
  }

  $("form").addEventListener("submit", (e) => { e.preventDefault(); const t = input.value; input.value = ""; send(t); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("form").requestSubmit(); }
  });
  $("connect").addEventListener("click", loadModels);
  keyBox.addEventListener("change", loadModels);
  $("new-session").addEventListener("click", () => { history = []; sessionId = null; log.innerHTML = ""; setStatus(""); });
  Object.defineProperty(window, "kefuSession", { get: () => sessionId });
  loadModels();
})();
