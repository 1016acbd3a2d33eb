// Hangar console: the invoke playground streams the agent's answer as it arrives (fetch + a body reader).
"use strict";

function sseEvents(buffer, emit) {
  // Split complete SSE events off the front of buffer; returns what is left (an incomplete event).
  let cut;
  while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
    const block = buffer.slice(0, cut);
    buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
    const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
    if (data.length) emit(data.join("\n"));
  }
  return buffer;
}

async function invoke(form) {
  const status = document.getElementById("answer-status");
  const events = document.getElementById("events");
  const raw = document.getElementById("answer");
  const send = document.getElementById("send");
  events.replaceChildren();
  raw.textContent = "";
  const params = new URLSearchParams({ sessionId: form.sessionId.value });
  if (form.qualifier.value.trim()) params.set("qualifier", form.qualifier.value.trim());
  const url = "/console/invoke/" + encodeURIComponent(form.runtime.value) + "?" + params;
  send.disabled = true;
  status.textContent = "Sending…";
  status.dataset.state = "sending";
  try {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": form.dataset.csrf },
      body: form.payload.value,
    });
    const type = response.headers.get("content-type") || "";
    const streaming = type.startsWith("text/event-stream");
    status.textContent = response.ok ? (streaming ? "Streaming…" : "Receiving…") : "Error " + response.status;
    status.dataset.state = response.ok ? "streaming" : "error";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const text = decoder.decode(value, { stream: true });
      raw.textContent += text;
      if (streaming) {
        pending = sseEvents(pending + text, (data) => {
          const item = document.createElement("li");
          item.textContent = data;
          events.append(item);
        });
      }
    }
    if (response.ok) {
      status.textContent = "Done (" + response.status + ").";
      status.dataset.state = "done";
    }
  } catch (err) {
    status.textContent = "Failed: " + err;
    status.dataset.state = "error";
  } finally {
    send.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("invoke");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      invoke(form);
    });
  }
});

// Session log: ask for the events after the last one shown, every second, while the page is open.
function followLog(list) {
  const status = document.getElementById("log-status");
  let after = Number(list.dataset.after);
  let busy = false;
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(list.dataset.source + "?after=" + after, { credentials: "same-origin" });
      if (!response.ok) {
        status.textContent = "Stopped following: " + response.status;
        return;
      }
      const answer = await response.json();
      for (const [, seq, message] of answer.events) {
        const item = document.createElement("li");
        item.dataset.seq = seq;
        item.textContent = message;
        list.append(item);
        after = seq;
      }
      if (answer.events.length) {
        const empty = document.getElementById("log-empty");
        if (empty) empty.remove();
        if (answer.stream) document.getElementById("log-stream").textContent = answer.stream;
        if (answer.group) document.getElementById("log-group").textContent = answer.group;
      }
      status.dataset.live = answer.live ? "yes" : "no";
      status.textContent = answer.live ? "Following live…" : "The session has ended; showing what was kept.";
    } finally {
      busy = false;
    }
  }
  setInterval(poll, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("log");
  if (list && list.dataset.source) followLog(list);
});

// Playground WebSocket: one socket to the agent's /ws, opened on the first send (cookie + origin + CSRF token).
function webSocketPlayground(form, invokeForm) {
  const log = document.getElementById("ws-log");
  let socket = null;
  const note = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    log.append(item);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = form.message.value;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(text);
      note("→ " + text);
      return;
    }
    const params = new URLSearchParams({ sessionId: invokeForm.sessionId.value, csrf: invokeForm.dataset.csrf });
    if (invokeForm.qualifier.value.trim()) params.set("qualifier", invokeForm.qualifier.value.trim());
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/console/ws/" + encodeURIComponent(invokeForm.runtime.value) + "?" + params);
    socket.addEventListener("open", () => {
      note("connected");
      socket.send(text);
      note("→ " + text);
    });
    socket.addEventListener("message", (msg) => note("← " + (typeof msg.data === "string" ? msg.data : "(binary)")));
    socket.addEventListener("close", (msg) => {
      note("closed (" + msg.code + (msg.reason ? ": " + msg.reason : "") + ")");
      socket = null;
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("ws");
  const invokeForm = document.getElementById("invoke");
  if (form && invokeForm) webSocketPlayground(form, invokeForm);
});
