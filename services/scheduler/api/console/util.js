// Small helpers shared by the console's views: building elements, reading proto3 JSON, formatting.
// Every value from the server reaches the page as text (textContent), never as HTML.

export const STATES = [
  "STATE_SCHEDULED", "STATE_WAITING_TRIGGER", "STATE_PENDING", "STATE_DELIVERING",
  "STATE_RETRY_WAIT", "STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED",
];
export const FINAL = new Set(["STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED"]);
export const RETRYABLE = new Set(["STATE_FAILED", "STATE_CANCELLED"]);

const message = document.getElementById("message");

export function h(tag, attrs, ...children) {
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
export function get(o, name) {
  if (!o) return undefined;
  if (name in o) return o[name];
  return o[name.replace(/_([a-z])/g, (_, c) => c.toUpperCase())];
}

export function stateName(s) {
  if (typeof s === "number") return ["STATE_UNSPECIFIED", ...STATES][s] || String(s);
  return s || "STATE_UNSPECIFIED";
}

export const short = (state) => stateName(state).replace(/^STATE_/, "");
export const num = (v) => Number(v || 0); // int64 arrives as a string

export function when(ts, { ms = false } = {}) {
  if (!ts) return "";
  const d = new Date(ts);
  if (isNaN(d)) return String(ts);
  const iso = d.toISOString().replace("T", " ");
  return (ms ? iso : iso.replace(/\.\d+Z$/, "Z")).replace("Z", " UTC");
}

export function millis(duration) {
  if (!duration) return "";
  const s = parseFloat(String(duration));
  if (isNaN(s)) return String(duration);
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

export function bytesText(b64) {
  if (!b64) return "";
  try {
    const raw = atob(b64);
    const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  } catch (e) {
    return b64;
  }
}

export function badge(state) {
  return h("span", { class: `badge ${short(state).toLowerCase()}`, "data-state": short(state) }, short(state));
}

export function say(text, kind = "error") {
  message.textContent = text;
  message.className = kind;
  message.hidden = !text;
}

export function hashFor(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v) q.set(k, v);
  const qs = q.toString();
  return `#${path}${qs ? "?" + qs : ""}`;
}

export function target(n) {
  const r = n.request || {};
  const method = String(r.method || "HTTP_METHOD_POST").replace(/^HTTP_METHOD_/, "");
  return `${method} ${r.url || ""}`;
}

export function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}
