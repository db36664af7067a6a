// The HTTP/JSON API as the console calls it, with the token the operator gave (kept in this tab only).
import { say } from "./util.js";

export const TOKEN_KEY = "notifyagent.token";
const tokenForm = document.getElementById("token-form");

export class ApiError extends Error {
  constructor(httpStatus, status, text) {
    super(`${status}: ${text}`);
    this.httpStatus = httpStatus;
  }
}

export async function api(method, path, body) {
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

export function askToken(why) {
  tokenForm.hidden = false;
  say(why);
  document.getElementById("token").focus();
}
