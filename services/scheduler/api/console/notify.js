// One notify: its request, policy and every attempt, with Cancel and Retry.
import { api } from "./api.js";
import { FINAL, RETRYABLE, badge, bytesText, get, h, hashFor, labelsText, millis, num, stateName, target, when } from "./util.js";

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

function responseHeaders(headers) {
  const entries = Object.entries(headers || {});
  if (!entries.length) return null;
  return h("details", { class: "response-headers" }, h("summary", {}, `${entries.length} headers`),
    h("table", { class: "headers" }, h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))))));
}

function dl(pairs) {
  return h("dl", {}, pairs.filter(([, v]) => v !== "" && v !== undefined && v !== null)
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export async function notifyPage(ctx, id) {
  const data = await api("GET", `/v1/notifies/${encodeURIComponent(id)}`);
  if (!ctx.fresh()) return false;
  const seen = JSON.stringify(data);
  if (seen === ctx.memo.painted) return true; // leave the page alone while nothing changed
  ctx.memo.painted = seen;
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
        ctx.act(ev.target, "Cancel", () => api("POST", `/v1/notifies/${encodeURIComponent(n.id)}:cancel`, {}).then(() => `Cancelled ${n.id}`));
      },
    }, "Cancel"),
    h("button", {
      type: "button", id: "retry", disabled: !RETRYABLE.has(state),
      onclick: (ev) => ctx.act(ev.target, "Retry", () =>
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
    h("td", {},
      h("pre", { class: "snippet" }, bytesText(get(a, "response_snippet"))),
      responseHeaders(get(a, "response_headers")))));
  ctx.view.replaceChildren(
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
          ["group", get(n, "group_key") ? h("a", { href: hashFor("/notifies", { group_key: get(n, "group_key") }) }, get(n, "group_key")) : ""],
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
