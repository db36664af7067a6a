// Search by id, state, queue, trigger key or label; redrive every failed notify that matches.
import { api } from "./api.js";
import { FINAL, STATES, badge, get, h, hashFor, labelsText, num, short, stateName, target, when } from "./util.js";

const PAGE_SIZE = 50;
const FILTERS = ["state", "queue", "trigger_key", "group_key", "label"];

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
      const filters = {};
      for (const f of FILTERS) filters[f] = String(data.get(f) || "").trim();
      const wanted = hashFor("/notifies", filters);
      if (location.hash === wanted) window.dispatchEvent(new HashChangeEvent("hashchange")); // the same search, read again
      else location.hash = wanted;
    },
  },
    input("id", "Id", "exact notify id"),
    h("label", {}, "State", stateSelect),
    input("queue", "Queue", "any"),
    input("trigger_key", "Trigger key", "any"),
    input("group_key", "Group", "any"),
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

export async function search(ctx, params) {
  const form = searchForm(params);
  const results = h("div", { id: "results" }, h("p", { class: "muted" }, "Loading…"));
  ctx.view.replaceChildren(h("section", {}, h("h2", {}, "Search notifies"), form, results));
  const data = await api("GET", listQuery(params, params.get("page_token"), PAGE_SIZE));
  if (!ctx.fresh()) return false;
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
        onclick: (ev) => redrive(ctx, ev.target, Object.fromEntries(FILTERS.filter((f) => f !== "state").map((f) => [f, params.get(f)]))),
      }, "Redrive all failed that match") : null));
  return false; // a search is read again only when asked
}

// Retries every FAILED notify matching the filters, page by page (each retried one leaves the list).
export function redrive(ctx, button, filters) {
  const scope = Object.entries(filters).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ");
  if (!window.confirm(`Send every failed notify${scope ? ` (${scope})` : ""} again?`)) return;
  ctx.act(button, "Redrive", async () => {
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
