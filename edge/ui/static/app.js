// The rider screen: shows the kiosk's current screen, pushed over server-sent events.
"use strict";
(function () {
  const lang = document.documentElement.dataset.lang || new URLSearchParams(location.search).get("lang") || "";
  let strings = null;
  let last = null;

  function fill(text, state) {
    return (text || "")
      .replace("{name}", state.name || "")
      .replace("{slot}", state.slot == null ? "" : String(state.slot));
  }

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
