// The overview: notifies by state, rates, queues (with pause and redrive) and dispatchers.
import { api } from "./api.js";
import { redrive } from "./search.js";
import { STATES, badge, get, h, hashFor, num, short, stateName, when } from "./util.js";

let lastSample = null; // {at, ok, failed} of the previous status, for rates

function rates(status) {
  const now = { at: performance.now(), ok: num(get(status, "sent_ok")), failed: num(get(status, "sent_failed")) };
  const prev = lastSample;
  lastSample = now;
  if (!prev || now.at - prev.at < 500 || now.ok < prev.ok) return ["…", "…"];
  const dt = (now.at - prev.at) / 1000;
  return [((now.ok - prev.ok) / dt).toFixed(1), ((now.failed - prev.failed) / dt).toFixed(1)];
}

export async function overview(ctx) {
  const status = await api("GET", "/v1/status");
  if (!ctx.fresh()) return false;
  const counts = Object.fromEntries((get(status, "counts") || []).map((c) => [stateName(c.state), num(c.count)]));
  const [okRate, failedRate] = rates(status);
  document.getElementById("server").textContent =
    `v${get(status, "version") || "?"} · pid ${get(status, "pid") || "?"} · up since ${when(get(status, "start_time"))}` +
    (get(status, "shutting_down") ? " · SHUTTING DOWN" : "");

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
          onclick: (ev) => ctx.act(ev.target, `${paused ? "Resume" : "Pause"} ${name}`,
            () => api("POST", `/v1/queues/${encodeURIComponent(name)}:${paused ? "resume" : "pause"}`, {})
              .then(() => `Queue ${name} ${paused ? "resumed" : "paused"}`)),
        }, paused ? "Resume" : "Pause"),
        failed ? h("button", {
          type: "button",
          onclick: (ev) => redrive(ctx, ev.target, { queue: name }),
        }, "Redrive failed") : null));
  });

  const dispatchers = get(status, "dispatchers") || [];
  const dispatcherRows = dispatchers.map((d) => {
    const capacity = num(d.capacity);
    const inFlight = num(d.leases);
    return h("tr", { "data-dispatcher": get(d, "dispatcher_id") },
      h("td", {}, get(d, "dispatcher_id"), d.draining ? h("span", { class: "badge paused" }, "DRAINING") : null),
      h("td", {}, d.version),
      h("td", { class: "n" }, capacity),
      h("td", { class: "n" }, inFlight),
      h("td", {}, h("meter", { min: 0, max: capacity || 1, value: inFlight, title: `${inFlight} of ${capacity}` })),
      h("td", { class: "n" }, num(d.credit)),
      h("td", {}, when(get(d, "connect_time"))));
  });

  ctx.view.replaceChildren(
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
