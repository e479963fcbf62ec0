// DOM and formatting helpers. Data only ever reaches the page as text: h() sets textContent
// and attributes, never HTML.

export const $ = (selector, root = document) => root.querySelector(selector);

/** h("a", {href, class, text, onclick, dataset: {...}}, ...children): a new element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") el.textContent = String(value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function show(el, visible) {
  el.hidden = !visible;
}

// ------------------------------------------------------------------------------- dates

/** Milliseconds from the API's RFC 2822 dates ("Wed, 17 Sep 2014 08:26:22 +0000"); null for none. */
export function parseDate(value) {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

const pad = (n) => String(n).padStart(2, "0");

/** "2026-01-31 08:26:22 UTC" */
export function utc(ms) {
  const d = new Date(ms);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

/** The exact time, for a tooltip: local time, then UTC. */
export function exact(ms) {
  const local = new Date(ms).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    second: "2-digit", timeZoneName: "short",
  });
  return `${local} (${utc(ms)})`;
}

/** ISO 8601 UTC to the second, as the API's date filters accept it. */
export function isoSeconds(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", or a date past a month. */
export function relative(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  if (s < -60) return `in ${span(-s)}`;
  if (s < 10) return "just now";
  if (s < 30 * 86400) return `${span(s)} ago`;
  return utc(ms).slice(0, 10);
}

function span(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  const days = Math.floor(s / 86400);
  return `${days} day${days === 1 ? "" : "s"}`;
}

/** A duration in seconds, short: "0 s", "42 s", "3 min 4 s", "2 h 5 min", "3 d 4 h". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A <time> element showing a relative time, the exact one on hover; refreshTimes() updates it. */
export function timeEl(value) {
  const ms = parseDate(value);
  if (ms === null) return h("span", { class: "muted", text: value ? value : "—" });
  return h("time", {
    datetime: new Date(ms).toISOString(), title: exact(ms), dataset: { ms: String(ms) },
    text: relative(ms),
  });
}

/** The duration cell's text for an action (running ones count up). */
export function actionDuration(action, now = Date.now()) {
  const start = parseDate(action.start_date);
  if (start === null) return "—";
  const end = parseDate(action.end_date);
  return end === null ? `${duration((now - start) / 1000)} so far` : duration((end - start) / 1000);
}

export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-ms]")) {
    const text = relative(Number(el.dataset.ms), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

// ------------------------------------------------------------------------------- files

/** Offer `parts` (strings) as a file download, made in the page: nothing leaves the browser. */
export function download(parts, filename, type) {
  const url = URL.createObjectURL(new Blob(parts, { type }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** "20260131-082622", for file names. */
export function stamp(ms = Date.now()) {
  return isoSeconds(ms).replace(/[-:]/g, "").replace("T", "-").replace("Z", "");
}

export const STATES = ["Pending", "In progress", "Canceling", "Canceled", "Success", "Failed"];

/** A coloured state badge (colour is never the only signal: the state is written). */
export function stateBadge(state) {
  const known = STATES.includes(state) ? state.toLowerCase().replace(" ", "-") : "unknown";
  return h("span", { class: `state state-${known}`, text: state });
}

export const fmt = (n) => Number(n).toLocaleString("en-US");
