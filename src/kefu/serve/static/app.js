// kefu web chat: streams answers from /v1/chat/completions (SSE), sends ratings/corrections to /v1/feedback.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), input = $("input"), statusBox = $("status"), keyBox = $("key"), modelBox = $("model");
  const sessionId = sessionStorage.getItem("kefu-session") ||
    ("web-" + Math.random().toString(36).slice(2) + Date.now().toString(36));
  sessionStorage.setItem("kefu-session", sessionId);
  keyBox.value = localStorage.getItem("kefu-key") || "";
  keyBox.addEventListener("change", () => { localStorage.setItem("kefu-key", keyBox.value); loadModels(); });
  const history = [];
  let busy = false;

  function headers() {
    const h = { "Content-Type": "application/json" };
    if (keyBox.value) h["Authorization"] = "Bearer " + keyBox.value;
    return h;
  }
  function setStatus(text) { statusBox.textContent = text || ""; }

  async function loadModels() {
    try {
      const r = await fetch("/v1/models", { headers: headers() });
      if (!r.ok) { setStatus("无法获取模型列表：" + r.status); return; }
      const data = await r.json();
      modelBox.innerHTML = "";
      for (const m of data.data) {
        const o = document.createElement("option"); o.value = o.textContent = m.id; modelBox.appendChild(o);
      }
      setStatus("");
    } catch (e) { setStatus("连接失败：" + e); }
  }

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const body = document.createElement("div"); body.className = "body"; body.textContent = text;
    div.appendChild(body);
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  async function sendFeedback(payload, button) {
    const r = await fetch("/v1/feedback", { method: "POST", headers: headers(),
      body: JSON.stringify(Object.assign({ session_id: sessionId, source: "web", model: modelBox.value }, payload)) });
    if (r.ok) { if (button) button.classList.add("chosen"); setStatus("感谢您的反馈"); }
    else { setStatus("反馈提交失败：" + r.status); }
  }

  function addActions(div, messageId, meta) {
    const bar = document.createElement("div"); bar.className = "actions";
    const up = document.createElement("button"); up.textContent = "👍 有帮助"; up.className = "rate-up";
    const down = document.createElement("button"); down.textContent = "👎 没帮助"; down.className = "rate-down";
    const fix = document.createElement("button"); fix.textContent = "纠正"; fix.className = "correct";
    up.onclick = () => sendFeedback({ kind: "rating", rating: 1, message_id: messageId }, up);
    down.onclick = () => sendFeedback({ kind: "rating", rating: -1, message_id: messageId }, down);
    fix.onclick = () => {
      const text = window.prompt("正确的回答应该是：");
      if (text) sendFeedback({ kind: "correction", correction: text, message_id: messageId }, fix);
    };
    bar.append(up, down, fix);
    if (meta && meta.path === "handoff") {
      const done = document.createElement("button"); done.textContent = "人工已解决"; done.className = "resolved";
      done.onclick = () => sendFeedback({ kind: "handoff", outcome: "resolved", message_id: messageId }, done);
      bar.append(done);
    }
    div.appendChild(bar);
    const m = document.createElement("div"); m.className = "meta";
    if (meta) m.textContent = "路径：" + meta.path + (meta.cached ? "（缓存）" : "") + (meta.fallback ? "（降级）" : "");
    div.appendChild(m);
  }

  async function send(text) {
    if (busy || !text.trim()) return;
    busy = true; setStatus("");
    history.push({ role: "user", content: text });
    bubble("user", text);
    const div = bubble("assistant", ""); div.classList.add("streaming");
    const body = div.querySelector(".body");
    let answer = "", messageId = null, meta = null;
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify({
        model: modelBox.value || "base", messages: history, stream: true, session_id: sessionId }) });
      if (!r.ok) {
        let msg = r.status + "";
        try { msg = (await r.json()).error.message; } catch (e) { /* keep status */ }
        throw new Error(msg);
      }
      const reader = r.body.getReader(); const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let idx;
        while ((idx = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, idx); buffer = buffer.slice(idx + 2);
          if (!event.startsWith("data:")) continue;
          const data = event.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          messageId = chunk.id; if (chunk.kefu) meta = chunk.kefu;
          const piece = chunk.choices[0].delta.content || "";
          answer += piece; body.textContent = answer; log.scrollTop = log.scrollHeight;
        }
      }
      history.push({ role: "assistant", content: answer });
      div.classList.remove("streaming"); div.classList.add("done");
      addActions(div, messageId, meta);
    } catch (e) {
      div.classList.remove("streaming"); div.classList.add("error");
      body.textContent = "出错了：" + e.message; history.pop();
    } finally { busy = false; }
  }

  $("form").addEventListener("submit", (e) => { e.preventDefault(); const t = input.value; input.value = ""; send(t); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
  });
  $("handoff").addEventListener("click", () => send("转人工"));
  window.kefuSession = sessionId;
  loadModels();
})();
