// The rider screen: shows the kiosk's current screen, pushed over server-sent events.
"use strict";
(function () {
  const lang = document.documentElement.dataset.lang || new URLSearchParams(location.search).get("lang") || "";
  let strings = null;
  let last = null;

  function fill(text, state) {
    return (text || "")
      .replace("{name}", state.name || "")
      .replace("{slot}", state.slot == null ? "" : String(state.slot))
      .replace("{tries}", state.tries == null ? "" : String(state.tries));
  }

  // The claim keypad: the code stays in this page until OK posts it (never shown in clear).
  let code = "";
  const MAX = 6;
  function showTyped() {
    const typed = document.getElementById("typed");
    typed.textContent = "●".repeat(code.length);
    typed.setAttribute("aria-label", strings ? fill((strings.keypad || {}).typed, { name: String(code.length) }) : "");
  }
  function claiming() { return last && last.key === "claim"; }
  function press(key) {
    if (!claiming()) return;
    if (/^[0-9]$/.test(key) && code.length < MAX) code += key;
    else if (key === "clear") code = "";
    else if (key === "back") code = code.slice(0, -1);
    else if (key === "ok" && code.length >= 4) {
      const body = JSON.stringify({ code: code });
      code = "";
      fetch("/claim", { method: "POST", headers: { "Content-Type": "application/json" }, body: body });
    }
    showTyped();
  }
  document.getElementById("keys").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (!button) return;
    press(button.dataset.digit || button.id);
  });
  document.addEventListener("keydown", (e) => {
    if (!claiming()) return;
    if (/^[0-9]$/.test(e.key)) press(e.key);
    else if (e.key === "Enter") press("ok");
    else if (e.key === "Backspace") press("back");
    else if (e.key === "Escape" || e.key === "Delete") press("clear");
    else return;
    e.preventDefault();
  });

  function render(state) {
    last = state;
    if (!strings) return;
    const entry = strings[state.key] || strings.idle;
    const main = document.getElementById("screen");
    main.className = "tone-" + (state.tone || "info");
    main.dataset.key = state.key;
    document.getElementById("title").textContent = fill(entry.title, state);
    document.getElementById("body").textContent = fill(entry.body, state);
    let detail = "";
    if (state.key === "checking" && state.detail) detail = (strings.hint || {})[state.detail] || "";
    if (state.key === "not_eligible" && state.detail) detail = (strings.refusal || {})[state.detail] || "";
    if (state.key === "out_of_service" && state.detail) detail = (strings.service || {})[state.detail] || "";
    if (state.key === "claim" && state.detail) detail = (strings.claim_detail || {})[state.detail] || "";
    const keypad = document.getElementById("keypad");
    if (state.key !== "claim") code = "";
    keypad.hidden = state.key !== "claim";
    document.getElementById("clear").textContent = (strings.keypad || {}).clear || "";
    document.getElementById("ok").textContent = (strings.keypad || {}).ok || "";
    showTyped();
    document.getElementById("detail").textContent = detail;
    const offline = document.getElementById("offline");
    offline.hidden = !state.offline;
    offline.textContent = strings.offline;
  }

  function connected(ok) {
    const note = document.getElementById("disconnected");
    note.hidden = ok;
    if (strings) note.textContent = strings.disconnected;
  }

  fetch("/strings" + (lang ? "?lang=" + encodeURIComponent(lang) : ""))
    .then((r) => r.json())
    .then((data) => {
      strings = data.strings;
      document.documentElement.lang = data.lang;
      if (last) render(last);
    });

  function listen() {
    const source = new EventSource("/events");
    source.addEventListener("screen", (e) => { connected(true); render(JSON.parse(e.data)); });
    source.onerror = () => { connected(false); };
    source.onopen = () => connected(true);
  }
  listen();
})();
