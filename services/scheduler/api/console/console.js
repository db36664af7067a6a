// NotifyAgent console: plain JS on the HTTP/JSON API (/v1/...), no build step.
// Every value from the server reaches the page as text (textContent), never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "notifyagent.token";
  const REFRESH_MS = 2000;
  const PAGE_SIZE = 50;
  const STATES = [
    "STATE_SCHEDULED", "STATE_WAITING_TRIGGER", "STATE_PENDING", "STATE_DELIVERING",
    "STATE_RETRY_WAIT", "STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED",
  ];
  const FINAL = new Set(["STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED"]);
  const RETRYABLE = new Set(["STATE_FAILED", "STATE_CANCELLED"]);

  const view = document.getElementById("view");
  const message = document.getElementById("message");
  const tokenForm = document.getElementById("token-form");
  const forgetToken = document.getElementById("forget-token");
  let timer = null;
  let generation = 0; // bumped on every navigation: a stale refresh never paints over a new view
  let lastSample = null; // {at, ok, failed} of the previous status, for rates
  let painted = ""; // the notify last painted, to leave the page alone while nothing changed

  // --- small helpers ---------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // proto3 JSON may spell a field as in the proto or in lowerCamelCase: read either.
  function get(o, name) {
    if (!o) return undefined;
    if (name in o) return o[name];
    return o[name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())];
  }

  function stateName(s) {
    if (typeof s === "number") return ["STATE_UNSPECIFIED", ...STATES][s] || String(s);
    return s || "STATE_UNSPECIFIED";
  }

  const short = (state) => stateName(state).replace(/^STATE_/, "");
  const num = (v) => Number(v || 0); // int64 arrives as a string

  function when(ts, { ms = false } = {}) {
    if (!ts) return "";
    const d = new Date(ts);
    if (isNaN(d)) return String(ts);
    const iso = d.toISOString().replace("T", " ");
    return (ms ? iso : iso.replace(/\.\d+Z$/, "Z")).replace("Z", " UTC");
  }

  function millis(duration) {
    if (!duration) return "";
    const s = parseFloat(String(duration));
    if (isNaN(s)) return String(duration);
    return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`;
  }

  function bytesText(b64) {
    if (!b64) return "";
    try {
      const raw = atob(b64);
      const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
      return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
    } catch (e) {
      return b64;
    }
  }

  function badge(state) {
    return h("span", { class: `badge ${short(state).toLowerCase()}`, "data-state": short(state) }, short(state));
  }

  function say(text, kind = "error") {
    message.textContent = text;
    message.className = kind;
    message.hidden = !text;
  }

  function hashFor(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
    const qs = q.toString();
    return `#${path}${qs ? "?" + qs : ""}`;
  }

  // --- the API ---------------------------------------------------------------

  class ApiError extends Error {
    constructor(httpStatus, status, text) {
      super(`${status}: ${text}`);
      this.httpStatus = httpStatus;
    }
  }

  async function api(method, path, body) {
    const headers = { accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      throw new Error(`cannot reach the scheduler (${e.message}); trying again`);
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      const error = new ApiError(resp.status, err.status || `HTTP ${resp.status}`, err.message || resp.statusText);
      if (resp.status === 401) askToken(`${token ? "The token was refused" : "This server requires a token"} (${error.message})`);
      throw error;
    }
    return data || {};
  }

  function askToken(why) {
    tokenForm.hidden = false;
    say(why);
    document.getElementById("token").focus();
  }

  tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    tokenForm.hidden = true;
    say("");
    route();
  });

  forgetToken.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });

  // Runs an action from a button: disables it meanwhile, reports the outcome, then repaints.
  async function act(button, label, work) {
    button.disabled = true;
    try {
      const done = await work();
      say(done || `${label}: done`, "ok");
    } catch (e) {
      if (!(e instanceof ApiError && e.httpStatus === 401)) say(`${label} failed: ${e.message}`);
    } finally {
      button.disabled = false;
      if (tokenForm.hidden) route({ keepMessage: true });
    }
  }

  // --- overview --------------------------------------------------------------

  function rates(status) {
    const now = { at: performance.now(), ok: num(get(status, "sent_ok")), failed: num(get(status, "sent_failed")) };
    const prev = lastSample;
    lastSample = now;
    if (!prev || now.at - prev.at < 500 || now.ok < prev.ok) return ["…", "…"];
    const dt = (now.at - prev.at) / 1000;
    return [((now.ok - prev.ok) / dt).toFixed(1), ((now.failed - prev.failed) / dt).toFixed(1)];
  }

  async function overview(gen) {
    const status = await api("GET", "/v1/status");
    if (gen !== generation) return;
    const counts = Object.fromEntries((get(status, "counts") || []).map((c) => [stateName(c.state), num(c.count)]));
    const [okRate, failedRate] = rates(status);
    document.getElementById("server").textContent =
      `v${get(status, "version") || "?"} · pid ${get(status, "pid") || "?"} · up since ${when(get(status, "start_time"))}`;

    const stateCards = h("div", { class: "cards", id: "counts" },
      STATES.map((s) => h("a", { class: "card", href: hashFor("/notifies", { state: s }), "data-count": short(s) },
        h("span", { class: "label" }, badge(s)), h("span", { class: "value" }, counts[s] || 0))));

    const rateCards = h("div", { class: "cards", id: "rates" },
      h("div", { class: "card" }, h("span", { class: "label" }, "delivered / s"), h("span", { class: "value" }, okRate)),
      h("div", { class: "card" }, h("span", { class: "label" }, "failed for good / s"), h("span", { class: "value" }, failedRate)),
      h("div", { class: "card" }, h("span", { class: "label" }, "delivered since start"), h("span", { class: "value" }, num(get(status, "sent_ok")))),
      h("div", { class: "card" }, h("span", { class: "label" }, "failed since start"), h("span", { class: "value" }, num(get(status, "sent_failed")))),
      h("div", { class: "card" }, h("span", { class: "label" }, "in the timer wheel"), h("span", { class: "value" }, num(get(status, "wheel_size")))));

    const queues = get(status, "queues") || [];
    const queueRows = queues.map((q) => {
      const name = q.name;
      const paused = !!q.paused;
      const failed = num(q.failed);
      const limit = (v, unit = "") => (num(v) ? `${num(v)}${unit}` : "∞");
      return h("tr", { "data-queue": name },
        h("td", {}, h("a", { href: hashFor("/notifies", { queue: name }) }, name), paused ? h("span", { class: "badge paused" }, "PAUSED") : null),
        h("td", { class: "n" }, num(q.pending)),
        h("td", { class: "n" }, num(get(q, "in_flight"))),
        h("td", { class: "n" }, num(q.scheduled)),
        h("td", { class: "n" }, failed ? h("a", { href: hashFor("/notifies", { state: "STATE_FAILED", queue: name }) }, failed) : 0),
        h("td", { class: "n" }, num(q.succeeded)),
        h("td", { class: "n" }, limit(get(q, "max_concurrent"))),
        h("td", { class: "n" }, limit(q.rate, "/s"), num(q.burst) ? ` (burst ${num(q.burst)})` : ""),
        h("td", { class: "actions" },
          h("button", {
            type: "button", class: paused ? "" : "warn",
            onclick: (ev) => act(ev.target, `${paused ? "Resume" : "Pause"} ${name}`,
              () => api("POST", `/v1/queues/${encodeURIComponent(name)}:${paused ? "resume" : "pause"}`, {})
                .then(() => `Queue ${name} ${paused ? "resumed" : "paused"}`)),
          }, paused ? "Resume" : "Pause"),
          failed ? h("button", {
            type: "button",
            onclick: (ev) => redrive(ev.target, { queue: name }),
          }, "Redrive failed") : null));
    });

    const dispatchers = get(status, "dispatchers") || [];
    const dispatcherRows = dispatchers.map((d) => {
      const capacity = num(d.capacity);
      const inFlight = num(d.leases);
      return h("tr", { "data-dispatcher": get(d, "dispatcher_id") },
        h("td", {}, get(d, "dispatcher_id")),
        h("td", {}, d.version),
        h("td", { class: "n" }, capacity),
        h("td", { class: "n" }, inFlight),
        h("td", {}, h("meter", { min: 0, max: capacity || 1, value: inFlight, title: `${inFlight} of ${capacity}` })),
        h("td", { class: "n" }, num(d.credit)),
        h("td", {}, when(get(d, "connect_time"))));
    });

    view.replaceChildren(
      h("section", {}, h("h2", {}, "Notifies by state"), stateCards),
      h("section", {}, h("h2", {}, "Rates"), rateCards),
      h("section", {},
        h("h2", {}, "Queues"),
        queues.length
          ? h("table", { id: "queues" },
            h("thead", {}, h("tr", {}, ["queue", "pending", "in flight", "scheduled", "failed", "succeeded", "max concurrent", "rate", ""].map((c) => h("th", {}, c)))),
            h("tbody", {}, queueRows))
          : h("p", { class: "muted" }, "No queue has notifies yet.")),
      h("section", {},
        h("h2", {}, "Dispatchers"),
        dispatchers.length
          ? h("table", { id: "dispatchers" },
            h("thead", {}, h("tr", {}, ["dispatcher", "version", "capacity", "in flight", "", "credit", "connected since"].map((c) => h("th", {}, c)))),
            h("tbody", {}, dispatcherRows))
          : h("p", { class: "muted" }, "No dispatcher is connected: nothing is being delivered.")));
    return true;
  }

  // --- search ----------------------------------------------------------------

  const FILTERS = ["state", "queue", "trigger_key", "label"];

  function searchForm(params) {
    const input = (name, label, placeholder) =>
      h("label", {}, label, h("input", { name, id: `search-${name}`, value: params.get(name) || "", placeholder, autocomplete: "off" }));
    const stateSelect = h("select", { name: "state", id: "search-state" },
      h("option", { value: "" }, "any"),
      STATES.map((s) => h("option", { value: s, selected: params.get("state") === s }, short(s))));
    return h("form", {
      id: "search", class: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        const data = new FormData(ev.target);
        const id = String(data.get("id") || "").trim();
        if (id) {
          location.hash = `#/notify/${encodeURIComponent(id)}`;
          return;
        }
        const next = {};
        for (const f of FILTERS) next[f] = String(data.get(f) || "").trim();
        const target = hashFor("/notifies", next);
        if (location.hash === target) route();
        else location.hash = target;
      },
    },
      input("id", "Id", "exact notify id"),
      h("label", {}, "State", stateSelect),
      input("queue", "Queue", "any"),
      input("trigger_key", "Trigger key", "any"),
      input("label", "Label", "key=value, or key"),
      h("button", { type: "submit" }, "Search"));
  }

  function listQuery(params, pageToken, pageSize) {
    const q = new URLSearchParams();
    for (const f of FILTERS) if (params.get(f)) q.set(f, params.get(f));
    q.set("page_size", String(pageSize));
    if (pageToken) q.set("page_token", pageToken);
    return `/v1/notifies?${q}`;
  }

  function target(n) {
    const r = n.request || {};
    const method = String(r.method || "HTTP_METHOD_POST").replace(/^HTTP_METHOD_/, "");
    return `${method} ${r.url || ""}`;
  }

  function labelsText(labels) {
    return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  }

  async function search(gen, params) {
    const form = searchForm(params);
    const results = h("div", { id: "results" }, h("p", { class: "muted" }, "Loading…"));
    view.replaceChildren(h("section", {}, h("h2", {}, "Search notifies"), form, results));
    const data = await api("GET", listQuery(params, params.get("page_token"), PAGE_SIZE));
    if (gen !== generation) return;
    const items = get(data, "notifies") || [];
    const next = get(data, "next_page_token");
    const rows = items.map((n) => h("tr", { "data-id": n.id },
      h("td", {}, h("a", { href: `#/notify/${encodeURIComponent(n.id)}`, class: "mono" }, n.id)),
      h("td", {}, badge(n.state)),
      h("td", {}, n.queue || "default"),
      h("td", { class: "url" }, target(n)),
      h("td", { class: "n" }, num(get(n, "attempt_count"))),
      h("td", {}, when(get(n, "create_time"))),
      h("td", {}, FINAL.has(stateName(n.state)) ? when(get(n, "complete_time")) : when(get(n, "next_attempt_time"))),
      h("td", {}, labelsText(n.labels))));
    const more = {};
    for (const f of FILTERS) more[f] = params.get(f);
    const canRedrive = params.get("state") === "STATE_FAILED" && items.length > 0;
    results.replaceChildren(
      items.length
        ? h("table", { id: "notifies" },
          h("thead", {}, h("tr", {}, ["id", "state", "queue", "call", "attempts", "created", "next / completed", "labels"].map((c) => h("th", {}, c)))),
          h("tbody", {}, rows))
        : h("p", { class: "muted", id: "no-results" }, "No notify matches."),
      h("p", { class: "pager" },
        params.get("page_token") ? h("a", { href: hashFor("/notifies", more) }, "« first page") : null,
        next ? h("a", { href: hashFor("/notifies", { ...more, page_token: next }), id: "next-page" }, "next page »") : null,
        canRedrive ? h("button", {
          type: "button", id: "redrive",
          onclick: (ev) => redrive(ev.target, { queue: params.get("queue"), trigger_key: params.get("trigger_key"), label: params.get("label") }),
        }, "Redrive all failed that match") : null));
    return false; // a search is read again only when asked
  }

  // Retries every FAILED notify matching the filters, page by page (each retried one leaves the list).
  function redrive(button, filters) {
    const scope = Object.entries(filters).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ");
    if (!window.confirm(`Send every failed notify${scope ? ` (${scope})` : ""} again?`)) return;
    act(button, "Redrive", async () => {
      const params = new URLSearchParams({ ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)), state: "STATE_FAILED" });
      let token = "";
      let sent = 0;
      const errors = [];
      do {
        const page = await api("GET", listQuery(params, token, 100));
        for (const n of get(page, "notifies") || []) {
          try {
            await api("POST", `/v1/notifies/${encodeURIComponent(n.id)}:retry`, {});
            sent += 1;
          } catch (e) {
            errors.push(`${n.id}: ${e.message}`);
          }
        }
        token = get(page, "next_page_token") || "";
      } while (token);
      if (errors.length) throw new Error(`${sent} sent again, ${errors.length} refused (${errors.slice(0, 3).join("; ")})`);
      return `Redrive: ${sent} failed notifies sent again`;
    });
  }

  // --- one notify ------------------------------------------------------------

  function schedule(n) {
    if (get(n, "trigger_key")) return `on trigger ${get(n, "trigger_key")}`;
    if (get(n, "deliver_at")) return `at ${when(get(n, "deliver_at"))}`;
    if (n.delay) return `after ${millis(n.delay)}`;
    return "now";
  }

  function retryPolicy(p) {
    const max = num(get(p, "max_attempts"));
    if (!max) return "default";
    const codes = (get(p, "retry_codes") || []).join(", ");
    return `up to ${max} attempts a run, backoff ${millis(get(p, "min_backoff"))} to ${millis(get(p, "max_backoff"))}` +
      `${p.multiplier ? ` ×${p.multiplier}` : ""}${codes ? `, retrying ${codes}` : ""}`;
  }

  function requestBody(r) {
    if (get(r, "json_body")) return get(r, "json_body");
    const form = get(r, "form_body");
    if (form && Object.keys(form).length) return new URLSearchParams(form).toString();
    return bytesText(r.body);
  }

  function dl(pairs) {
    return h("dl", {}, pairs.filter(([, v]) => v !== "" && v !== undefined && v !== null)
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  async function notifyPage(gen, id) {
    const data = await api("GET", `/v1/notifies/${encodeURIComponent(id)}`);
    if (gen !== generation) return;
    const seen = JSON.stringify(data);
    if (seen === painted) return true;
    painted = seen;
    const n = data.notify || data;
    const state = stateName(n.state);
    const r = n.request || {};
    const retry = n.retry || {};
    const success = n.success || {};
    const attempts = n.attempts || [];
    const actions = h("div", { class: "actions" },
      h("button", {
        type: "button", id: "cancel", class: "warn", disabled: FINAL.has(state),
        onclick: (ev) => {
          if (!window.confirm(`Cancel ${n.id}?`)) return;
          act(ev.target, "Cancel", () => api("POST", `/v1/notifies/${encodeURIComponent(n.id)}:cancel`, {}).then(() => `Cancelled ${n.id}`));
        },
      }, "Cancel"),
      h("button", {
        type: "button", id: "retry", disabled: !RETRYABLE.has(state),
        onclick: (ev) => act(ev.target, "Retry", () =>
          api("POST", `/v1/notifies/${encodeURIComponent(n.id)}:retry`, {}).then(() => `Sent ${n.id} again`)),
      }, "Retry"));
    const headers = Object.entries(r.headers || {});
    const attemptRows = attempts.map((a) => h("tr", { "data-attempt": a.number, class: a.success ? "ok" : "bad" },
      h("td", { class: "n" }, a.number),
      h("td", {}, when(get(a, "start_time"), { ms: true })),
      h("td", { class: "n" }, millis(a.latency)),
      h("td", {}, get(a, "dispatcher_id")),
      h("td", { class: "n status" }, get(a, "status_code") || ""),
      h("td", {}, a.success ? "ok" : "failed"),
      h("td", { class: "error" }, a.error || ""),
      h("td", {}, h("pre", { class: "snippet" }, bytesText(get(a, "response_snippet"))))));
    view.replaceChildren(
      h("section", {},
        h("h2", {}, "Notify ", h("span", { class: "mono", id: "notify-id" }, n.id), " ", h("span", { id: "notify-state" }, badge(state))),
        actions,
        h("div", { class: "columns" },
          dl([
            ["queue", n.queue || "default"],
            ["ordering key", get(n, "ordering_key")],
            ["schedule", schedule(n)],
            ["created", when(get(n, "create_time"))],
            ["next attempt", FINAL.has(state) ? "" : when(get(n, "next_attempt_time"))],
            ["completed", when(get(n, "complete_time"))],
            ["attempts", num(get(n, "attempt_count"))],
            ["retry policy", retryPolicy(retry)],
            ["timeout", millis(n.timeout)],
            ["expires", when(get(n, "expire_at"))],
            ["success", [(get(success, "status_codes") || []).join(", ") || "any 2xx",
              get(success, "body_contains") ? ` with body containing "${get(success, "body_contains")}"` : "",
              get(n, "fire_and_forget") ? " (fire and forget)" : ""].join("")],
            ["callback", get(n, "callback_url")],
            ["labels", labelsText(n.labels)],
          ]),
          h("div", {},
            h("h3", {}, "Request"),
            h("p", { class: "mono url", id: "notify-url" }, target(n)),
            headers.length ? h("table", { class: "headers" }, h("tbody", {}, headers.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))))) : null,
            requestBody(r) ? h("pre", { class: "body" }, requestBody(r)) : null))),
      h("section", {},
        h("h2", {}, `Attempts (${attempts.length})`),
        attempts.length
          ? h("table", { id: "attempts" },
            h("thead", {}, h("tr", {}, ["#", "started", "latency", "dispatcher", "status", "result", "error", "response"].map((c) => h("th", {}, c)))),
            h("tbody", {}, attemptRows))
          : h("p", { class: "muted" }, "No attempt yet.")));
    return true;
  }

  // --- routing ---------------------------------------------------------------

  async function route(opts = {}) {
    clearTimeout(timer);
    const gen = ++generation;
    painted = "";
    if (!opts.keepMessage) say("");
    forgetToken.hidden = !sessionStorage.getItem(TOKEN_KEY);
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const params = new URLSearchParams(query || "");
    const page = path.startsWith("/notify/") ? "notifies" : path === "/notifies" ? "notifies" : "overview";
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === page);
    const paint = async () => {
      try {
        let again;
        if (path.startsWith("/notify/")) again = await notifyPage(gen, decodeURIComponent(path.slice("/notify/".length)));
        else if (path === "/notifies") again = await search(gen, params);
        else again = await overview(gen);
        if (again && gen === generation) timer = setTimeout(paint, REFRESH_MS);
      } catch (e) {
        if (gen !== generation) return;
        if (e instanceof ApiError && e.httpStatus === 401) return; // askToken has said why; a token repaints
        say(e.message);
        if (!(e instanceof ApiError && e.httpStatus === 404)) timer = setTimeout(paint, REFRESH_MS * 2);
      }
    };
    await paint();
  }

  window.addEventListener("hashchange", () => route());
  route();
})();
