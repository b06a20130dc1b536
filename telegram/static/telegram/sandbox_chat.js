// The admin's sandbox chat: polls the transcript and sends what is typed to the server,
// which delivers it to the bot's webhook. Plain JS, no build step, no outside assets.
(function () {
  "use strict";
  const POLL_MS = 1000;

  function start() {
    const root = document.getElementById("sandbox-chat");
    if (!root || !root.dataset.bot) return;
    const list = document.getElementById("sandbox-transcript");
    const form = document.getElementById("sandbox-composer");
    const input = document.getElementById("sandbox-text");
    const status = document.getElementById("sandbox-status");
    const shown = new Set();
    let lastId = 0;
    let polling = false;

    function time(iso) {
      const d = new Date(iso);
      return isNaN(d) ? "" : d.toLocaleTimeString();
    }

    function bubble(message, note) {
      let item = document.getElementById("sandbox-msg-" + message.id);
      if (!item) {
        item = document.createElement("li");
        item.id = "sandbox-msg-" + message.id;
        item.className = message.sender === "user" ? "user" : "bot";
        item.dataset.sender = message.sender;
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = message.text; // never innerHTML: the text is the bot's
        const meta = document.createElement("span");
        meta.className = "meta";
        meta.textContent = time(message.created_at);
        item.append(text, meta);
        list.append(item);
        list.scrollTop = list.scrollHeight;
      }
      if (note) item.querySelector(".meta").textContent = time(message.created_at) + " · " + note;
      shown.add(message.id);
      lastId = Math.max(lastId, message.id);
    }

    async function poll() {
      if (polling) return;
      polling = true;
      try {
        const query = new URLSearchParams({ bot: root.dataset.bot, user: root.dataset.user, after: lastId });
        const response = await fetch(root.dataset.messagesUrl + "?" + query, { credentials: "same-origin" });
        if (response.ok) {
          const body = await response.json();
          body.messages.forEach((m) => { if (!shown.has(m.id)) bubble(m); });
        } else {
          status.textContent = "Could not refresh the chat (HTTP " + response.status + ").";
        }
      } catch (err) {
        status.textContent = "Could not refresh the chat: " + err;
      } finally {
        polling = false;
      }
    }

    function outcome(webhook) {
      if (!webhook) return "";
      if (webhook.http_status === null || webhook.http_status === undefined) return "webhook " + webhook.error;
      const answer = webhook.answer || {};
      const what = answer.status || answer.error || "";
      const detail = answer.detail ? ": " + answer.detail : "";
      return "webhook " + webhook.http_status + (what ? " " + what : "") + detail;
    }

    if (form) {
      form.addEventListener("submit", async function (event) {
        event.preventDefault();
        const text = input.value;
        if (!text.trim()) return;
        input.disabled = true;
        status.textContent = "Sending…";
        try {
          const response = await fetch(root.dataset.sendUrl, {
            method: "POST",
            credentials: "same-origin",
            headers: {
              "Content-Type": "application/json",
              "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value,
            },
            body: JSON.stringify({ bot: root.dataset.bot, user: root.dataset.user, text: text }),
          });
          const body = await response.json();
          if (response.ok) {
            bubble(body.sent, outcome(body.webhook));
            input.value = "";
            status.textContent = "";
            document.querySelectorAll(".sandbox-start-hint").forEach((el) => el.remove());
          } else {
            status.textContent = body.detail || "Not sent (HTTP " + response.status + ").";
          }
        } catch (err) {
          status.textContent = "Not sent: " + err;
        } finally {
          input.disabled = false;
          input.focus();
          poll();
        }
      });
    }
    poll();
    setInterval(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
