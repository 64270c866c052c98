// Shared helpers of the dashboard's pages: JSON calls to the API (with the CSRF header), the page's embedded
// data, value decoding, durations, query-string state, and the live clocks of durations and ages.

/** The test and bench hook: charts register what they hold and when they drew. */
export const hook = (window.__trainmon = window.__trainmon || { charts: {}, events: [], firstPaint: null });

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

/** fetch() an API path; JSON in and out. Throws an Error whose message is the API's `detail`; a 401 (the
 * session ended) goes to the login page unless `login` is false. */
export async function api(path, { method = "GET", body, login = true } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("trainmon_csrf");
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && login) {
    window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    throw new Error("sign in first");
  }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const detail = data && data.detail;
    throw new Error(typeof detail === "string" ? detail : `HTTP ${response.status}`);
  }
  return data;
}

/** The JSON the server embedded in <script type="application/json" id="page-data">. */
export function pageData() {
  const element = document.getElementById("page-data");
  return element ? JSON.parse(element.textContent) : {};
}

const NONFINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A metric value of the API: a number, or "NaN", "Infinity", "-Infinity". */
export function decodeValue(value) {
  return typeof value === "string" ? NONFINITE[value] : value;
}

/** 3661 -> "1h 01m", like the server's `duration` filter. */
export function formatDuration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "—";
  let rest = Math.max(0, Math.floor(seconds));
  const days = Math.floor(rest / 86400); rest %= 86400;
  const hours = Math.floor(rest / 3600); rest %= 3600;
  const minutes = Math.floor(rest / 60); const secs = rest % 60;
  const two = (n) => String(n).padStart(2, "0");
  if (days) return `${days}d ${two(hours)}h`;
  if (hours) return `${hours}h ${two(minutes)}m`;
  if (minutes) return `${minutes}m ${two(secs)}s`;
  return `${secs}s`;
}

/** The page's state in the query string: `readState({x: "step"})` -> values with those defaults. */
export function readState(defaults) {
  const params = new URLSearchParams(location.search);
  const state = {};
  for (const [name, fallback] of Object.entries(defaults)) state[name] = params.get(name) ?? fallback;
  return state;
}

/** Write `changes` into the query string without reloading (a default value is left out). */
export function writeState(changes, defaults = {}) {
  const params = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "" || String(value) === String(defaults[name])) {
      params.delete(name);
    } else {
      params.set(name, value);
    }
  }
  const query = params.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
}

/** A GET form that keeps the rest of the page's state (the chart controls in the query string) when submitted:
 * its fields replace theirs, a field at its default value is left out. Without scripts it submits as usual. */
export function keepStateOnSubmit(form, defaults = {}) {
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams(location.search);
    for (const [name, value] of new FormData(form)) {
      if (value === "" || String(value) === String(defaults[name])) params.delete(name);
      else params.set(name, value);
    }
    const query = params.toString();
    location.assign(new URL(form.action).pathname + (query ? "?" + query : ""));
  });
}

/** Every second: durations of running runs (`.live-duration`) and heartbeat ages (`.live-age`). */
export function startClocks() {
  const tick = () => {
    const now = Date.now();
    for (const element of document.querySelectorAll(".live-duration")) {
      const start = Date.parse(element.dataset.start);
      const end = element.dataset.end ? Date.parse(element.dataset.end) : now;
      if (!isNaN(start)) element.textContent = formatDuration((end - start) / 1000);
    }
    for (const element of document.querySelectorAll(".live-age")) {
      const at = Date.parse(element.getAttribute("datetime"));
      if (!isNaN(at)) element.textContent = formatDuration((now - at) / 1000) + " ago";
    }
  };
  tick();
  setInterval(tick, 1000);
}

/** An element with text content (never HTML). */
export function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

const signOut = document.getElementById("sign-out");
if (signOut) {
  signOut.addEventListener("click", async () => {
    await api("/api/session", { method: "DELETE" }).catch(() => {});
    window.location.assign("/login");
  });
}
startClocks();
