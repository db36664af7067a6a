// NotifyAgent console: plain JS modules on the HTTP/JSON API (/v1/...), no build step.
// This module routes (#/, #/notifies?..., #/notify/ID), repaints the view every few
// seconds and runs the actions; the views live in overview.js, search.js and notify.js.
import { ApiError, TOKEN_KEY } from "./api.js";
import { notifyPage } from "./notify.js";
import { overview } from "./overview.js";
import { search } from "./search.js";
import { say } from "./util.js";

const REFRESH_MS = 2000;
const view = document.getElementById("view");
const tokenForm = document.getElementById("token-form");
const forgetToken = document.getElementById("forget-token");
let timer = null;
let generation = 0; // bumped on every navigation: a stale answer never paints over a newer view

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

async function route(opts = {}) {
  clearTimeout(timer);
  const gen = ++generation;
  // What a view gets: where to paint, whether it is still the current one, how to act, and a memo for itself.
  const ctx = { view, fresh: () => gen === generation, act, memo: {} };
  if (!opts.keepMessage) say("");
  forgetToken.hidden = !sessionStorage.getItem(TOKEN_KEY);
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const page = path.startsWith("/notify") ? "notifies" : "overview";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === page);
  const paint = async () => {
    try {
      let again;
      if (path.startsWith("/notify/")) again = await notifyPage(ctx, decodeURIComponent(path.slice("/notify/".length)));
      else if (path === "/notifies") again = await search(ctx, params);
      else again = await overview(ctx);
      if (again && ctx.fresh()) timer = setTimeout(paint, REFRESH_MS);
    } catch (e) {
      if (!ctx.fresh()) return;
      if (e instanceof ApiError && e.httpStatus === 401) return; // askToken has said why; a token repaints
      say(e.message);
      if (!(e instanceof ApiError && e.httpStatus === 404)) timer = setTimeout(paint, REFRESH_MS * 2);
    }
  };
  await paint();
}

window.addEventListener("hashchange", () => route());
route();
