// The rider screen: shows the kiosk's current screen, pushed over server-sent events.
// When the kiosk stops answering for a few seconds it shows "out of service" instead (the
// page keeps its words in memory for that), and it reloads itself once a restarted kiosk
// answers again. Riders choose their language with the buttons at the bottom.
"use strict";
(function () {
  const root = document.documentElement;
  const home = root.dataset.lang || "en";
  const offered = (root.dataset.languages || home).split(" ").filter(Boolean);
  const MIN = Number(root.dataset.claimMin || 4);
  const MAX = Number(root.dataset.claimMax || 6);
  const PREVIEW = root.dataset.preview === "on";
  const RESET_MS = Number(root.dataset.languageResetS || 60) * 1000; // idle this long: home language
  const LOST_AFTER_MS = 1500; // no stream for this long: the kiosk is gone
  const QUIET_MS = 6000; // a stream that says nothing for this long is dead too
  const $ = (id) => document.getElementById(id);

  const words = {}; // language -> strings
  let lang = home;
  let strings = null;
  let last = null; // the kiosk's latest screen
  let lost = false;
  let code = ""; // the claim being typed: stays in this page until OK posts it
  let tooShort = false;
  let deadline = null; // when the claim screen gives up (the page's own clock)
  let idleSince = Date.now(); // nobody in front of the kiosk since

  function fill(text, values) {
    return (text || "").replace(/\{(\w+)\}/g, (_, key) => (values[key] == null ? "" : String(values[key])));
  }
  function setText(id, text) {
    const element = $(id);
    if (element.textContent !== text) element.textContent = text;
  }

  // -- what the screen shows ----------------------------------------------------------------

  function shown() {
    return lost ? { key: "lost", tone: "error" } : last || { key: "idle" };
  }

  function draw() {
    if (!strings) return;
    const state = shown();
    const key = state.key;
    const entry = strings[key] || strings.idle;
    const values = { name: state.name, slot: state.slot, tries: state.tries, min: MIN, max: MAX };
    const main = $("screen");
    main.className = "tone-" + (state.tone || "info");
    main.dataset.key = key;
    setText("title", fill(state.name && entry.title_named ? entry.title_named : entry.title, values));
    setText("body", fill(entry.body, values));
    let detail = "";
    let alert = false;
    if (key === "checking" && state.detail) detail = (strings.hint || {})[state.detail] || "";
    if (key === "out_of_service" && state.detail) detail = (strings.service || {})[state.detail] || "";
    if (key === "claim" && tooShort) {
      detail = fill(strings.keypad.too_short, values);
      alert = true;
    } else if (key === "claim" && state.detail) {
      detail = (strings.claim_detail || {})[state.detail] || "";
      alert = true;
    }
    setText("detail", detail);
    $("detail").className = alert ? "alert" : "";
    const claiming = key === "claim";
    $("keypad").hidden = !claiming;
    $("ok").textContent = strings.keypad.ok;
    $("back").setAttribute("aria-label", strings.keypad.back);
    $("cancel").textContent = strings.keypad.cancel;
    showTyped();
    tick();
    const guided = key === "idle" || key === "checking";
    $("guide").hidden = !guided;
    $("preview").hidden = !(guided && PREVIEW);
    const offline = $("offline");
    offline.hidden = !state.offline || key === "out_of_service" || key === "lost";
    setText("offline", strings.offline);
    drawLanguages();
  }

  function receive(state) {
    const before = last;
    last = state;
    if (state.key === "claim") {
      const fresh = !before || before.key !== "claim" || before.tries !== state.tries || before.detail !== state.detail;
      if (fresh) {
        code = "";
        tooShort = false;
        deadline = state.seconds ? Date.now() + state.seconds * 1000 : null;
      }
    } else {
      code = "";
      tooShort = false;
      deadline = null;
    }
    // a rider's visit ended: the next rider starts in the kiosk's language
    if (state.key !== "idle" || !before || before.key !== "idle") idleSince = Date.now();
    draw();
  }

  // -- languages ---------------------------------------------------------------------------

  function drawLanguages() {
    const nav = $("langs");
    nav.setAttribute("aria-label", strings.choose_language);
    // one language, or one whose strings are still on the way: no buttons (never a
    // bare language code on the screen)
    if (offered.length < 2 || offered.some((each) => !words[each])) {
      nav.hidden = true;
      return;
    }
    if (!nav.children.length) {
      for (const each of offered) {
        const button = document.createElement("button");
        button.type = "button";
        button.lang = each;
        button.dataset.lang = each;
        button.addEventListener("click", () => {
          idleSince = Date.now();
          use(each);
        });
        nav.appendChild(button);
      }
    }
    for (const button of nav.children) {
      const each = button.dataset.lang;
      button.textContent = words[each].language;
      button.setAttribute("aria-pressed", String(each === lang));
    }
    nav.hidden = false;
  }

  function use(wanted) {
    if (!words[wanted]) return;
    lang = wanted;
    strings = words[wanted];
    root.lang = wanted;
    draw();
  }

  function load(wanted) {
    return fetch("/strings?lang=" + encodeURIComponent(wanted))
      .then((answer) => {
        if (!answer.ok) throw new Error("strings " + answer.status);
        return answer.json();
      })
      .then((data) => {
        words[data.lang] = data.strings;
        if (data.lang === lang) use(lang);
        else draw();
      });
  }

  function loadAll() {
    // every offered language now, so that the page can still speak when the kiosk is gone
    Promise.all(offered.map(load)).catch(() => setTimeout(loadAll, 2000));
  }

  // -- the claim keypad ------------------------------------------------------------------------

  function showTyped() {
    const typed = $("typed");
    setText("typed", "●".repeat(code.length));
    typed.setAttribute("aria-label", fill(strings.keypad.typed, { count: code.length }));
  }
  function claiming() {
    return !lost && last && last.key === "claim";
  }
  function post(path, body) {
    return fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }
  function press(key) {
    if (!claiming()) return;
    tooShort = false;
    if (/^[0-9]$/.test(key) && code.length < MAX) code += key;
    else if (key === "back") code = code.slice(0, -1);
    else if (key === "cancel") {
      code = "";
      post("/claim/cancel", {});
    } else if (key === "ok" && code.length < MIN) tooShort = true;
    else if (key === "ok") {
      const typed = code;
      code = "";
      post("/claim", { code: typed });
    }
    draw();
  }
  $("keypad").addEventListener("click", (e) => {
    const button = e.target.closest("button");
    if (button) press(button.dataset.digit || button.id);
  });
  document.addEventListener("keydown", (e) => {
    if (!claiming()) return;
    if (/^[0-9]$/.test(e.key)) press(e.key);
    else if (e.key === "Enter") press("ok");
    else if (e.key === "Backspace") press("back");
    else if (e.key === "Escape") press("cancel");
    else return;
    e.preventDefault();
  });

  function tick() {
    if (!strings) return;
    // nobody there for a while: the next rider starts in the kiosk's language
    if (lang !== home && shown().key === "idle" && Date.now() - idleSince > RESET_MS) use(home);
    if (deadline === null || !claiming()) {
      setText("left", "");
      return;
    }
    const seconds = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    setText("left", fill(strings.keypad.left, { seconds: seconds }));
  }
  setInterval(tick, 250);

  // -- the camera preview (ui.preview): mirrored by the style sheet -------------------------------

  let previewUrl = null;
  function refreshPreview() {
    const img = $("preview");
    if (!PREVIEW || img.hidden) return;
    fetch("/preview.jpg", { cache: "no-store" })
      .then((answer) => (answer.status === 200 ? answer.blob() : null))
      .then((blob) => {
        if (!blob) return;
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = URL.createObjectURL(blob);
        img.src = previewUrl;
      })
      .catch(() => {});
  }
  if (PREVIEW) setInterval(refreshPreview, 500);

  // -- the kiosk's stream, and noticing when it is gone ------------------------------------------

  let source = null;
  let boot = null;
  let heard = Date.now();
  let downSince = null;

  function alive() {
    heard = Date.now();
    downSince = null;
    if (lost) {
      lost = false;
      draw();
    }
  }

  function connect() {
    source = new EventSource("/events");
    source.addEventListener("hello", (e) => {
      const started = JSON.parse(e.data).boot;
      if (boot !== null && started !== boot) {
        location.reload(); // a restarted kiosk: take its page, it answers now
        return;
      }
      boot = started;
      alive();
    });
    source.addEventListener("screen", (e) => {
      alive();
      receive(JSON.parse(e.data));
    });
    source.addEventListener("alive", alive);
    source.onerror = () => {
      if (downSince === null) downSince = Date.now();
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
    };
  }

  setInterval(() => {
    const now = Date.now();
    const down = downSince !== null && now - downSince > LOST_AFTER_MS;
    const quiet = now - heard > QUIET_MS;
    if ((down || quiet) && !lost) {
      lost = true;
      draw();
    }
    if (quiet && source && source.readyState === EventSource.OPEN) {
      source.close(); // open but silent: start again
      downSince = downSince || now;
      connect();
    }
  }, 250);

  // No zoom, selection or context menu: lockdown.js and lockdown.css, loaded before this file.

  loadAll();
  connect();
})();
