// The timeline: the list of actions, newest first, with the API's filters (carried in the
// console's own URL), keyset paging ("older" follows meta.next) and live updates from the
// events stream. Rows are kept by uuid, so an action is never shown twice: live updates, a
// re-list after a reconnection and "older" pages all merge into the same map.

import { $, h, show, timeEl, actionDuration, stateBadge, isoSeconds, fmt } from "./dom.js";
import { api, withQuery, LiveSocket } from "./api.js";
import { exportView } from "./export.js";

const LIST = "/api/audit/v1/action/";
const EVENTS = "/api/audit/v1/events/";
const FIRST_PAGE = 50;
const RELIST_MAX = 1000;          // the API's cap on one page
const PER_ACTION_MAX = 20;        // more changed actions than this at once: re-list instead

let state = null;                 // the view while it is shown; null when hidden

const form = () => $("#filters");
const tbody = () => $("#actions tbody");

/** The API query of the current view: the console URL's parameters, minus paging. */
function apiQuery(params) {
  const query = new URLSearchParams(params);
  for (const name of ["limit", "offset", "cursor"]) query.delete(name);
  return query;
}

export function showTimeline(params, { navigate, onError }) {
  hideTimeline();
  const query = apiQuery(params);
  state = {
    query, navigate, onError,
    rows: [],                 // actions, newest first
    byUuid: new Map(),        // uuid -> {action, tr, rank}
    top: 0,                   // rank of the newest row placed above the others (decreasing)
    bottom: 0,                // rank of the last row placed below the others (increasing)
    next: null,               // meta.next of the last page loaded
    total: null,
    paused: false,
    pending: new Set(),       // uuids changed since the last flush
    flushing: null,
    generation: 0,
    socket: null,
  };
  fillForm(query);
  show($("#timeline-view"), true);
  setStatus("connecting");
  const view = state;
  view.loaded = loadFirst(view);
  view.socket = new LiveSocket(EVENTS, {}, {
    onOpen: () => view.loaded.then(() => resync(view)),
    onMessage: (message) => onEvent(view, message),
    onStatus: (s, detail) => { if (state === view) setStatus(s, detail); },
  }).start();
}

export function hideTimeline() {
  if (state) {
    state.socket.stop();
    state = null;
  }
  tbody().replaceChildren();
  show($("#timeline-view"), false);
}

// ------------------------------------------------------------------------------- loading

async function loadFirst(view) {
  show($("#empty"), false);
  $("#count").textContent = "Loading…";
  try {
    const page = await api(withQuery(LIST, [...view.query, ["limit", String(FIRST_PAGE)]]));
    if (state !== view) return;
    view.next = page.meta.next;
    view.total = page.meta.total_count;
    merge(view, page.objects);
  } catch (err) {
    if (state !== view) return;
    $("#count").textContent = "";
    view.onError(`The list could not be loaded: ${err.message}`);
  }
}

async function loadOlder() {
  const view = state;
  if (!view || !view.next) return;
  const button = $("#older");
  button.disabled = true;
  button.textContent = "Loading…";
  try {
    const page = await api(view.next);
    if (state !== view) return;
    view.next = page.meta.next;
    view.total = page.meta.total_count;
    merge(view, page.objects);
  } catch (err) {
    view.onError(`Older actions could not be loaded: ${err.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Older actions";
  }
}

/** After a (re)connection: list the newest again and merge by uuid, so whatever happened while
 * the stream was down shows, and nothing shows twice. */
async function resync(view) {
  if (state !== view) return;
  const limit = Math.min(RELIST_MAX, Math.max(FIRST_PAGE, view.rows.length));
  try {
    const page = await api(withQuery(LIST, [...view.query, ["limit", String(limit)]]));
    if (state !== view) return;
    const fresh = new Set(page.objects.map((a) => a.uuid));
    // When the fresh page covers every row shown, its `next` continues from there; otherwise
    // the older rows stay, and so does the `next` that continues after them.
    if (view.rows.every((a) => fresh.has(a.uuid))) view.next = page.meta.next;
    view.total = page.meta.total_count;
    merge(view, page.objects, { newer: true, highlight: true });
  } catch (err) {
    if (state === view) view.onError(`The list could not be refreshed: ${err.message}`);
  }
}

// ------------------------------------------------------------------------------- live

function onEvent(view, message) {
  if (state !== view || message.type !== "action" || typeof message.resource_uri !== "string") return;
  const uuid = message.resource_uri.split("/").filter(Boolean).pop();
  view.pending.add(uuid);
  if (view.paused) setStatus("paused");
  else scheduleFlush(view);
}

function scheduleFlush(view) {
  if (view.flushing) return;
  view.flushing = view.loaded
    .then(() => new Promise((resolve) => setTimeout(resolve, 50)))   // gather a burst
    .then(() => flush(view))
    .finally(() => {
      view.flushing = null;
      if (state === view && view.pending.size && !view.paused) scheduleFlush(view);
    });
}

/** Bring the changed actions in: each is asked for with the view's filters (so the API decides
 * whether it belongs here), or, after a burst, the newest page is listed again. */
async function flush(view) {
  const uuids = [...view.pending];
  view.pending.clear();
  if (state !== view || !uuids.length) return;
  if (uuids.length > PER_ACTION_MAX) return resync(view);
  const found = new Array(uuids.length);
  await Promise.all(uuids.map(async (uuid, i) => {
    try {
      const query = new URLSearchParams(view.query);
      if (query.has("uuid") && query.get("uuid") !== uuid) return;
      query.set("uuid", uuid);
      const page = await api(withQuery(LIST, query));
      if (page.objects.length) {
        found[i] = page.objects[0];
      } else if (view.byUuid.has(uuid)) {
        // shown, but no longer matching the filters: show its new state all the same
        found[i] = await api(view.byUuid.get(uuid).action.resource_uri);
      }
    } catch (err) {
      if (err.status !== 404) view.onError(`A live update failed: ${err.message}`);
    }
  }));
  if (state !== view) return;
  // in the order of the events, so the newest last: newest first for merge()
  const actions = found.filter(Boolean).reverse();
  const added = actions.filter((a) => !view.byUuid.has(a.uuid)).length;
  if (view.total !== null) view.total += added;
  merge(view, actions, { newer: true, highlight: true });
}

function setPaused(paused) {
  if (!state) return;
  state.paused = paused;
  const button = $("#pause");
  button.setAttribute("aria-pressed", String(paused));
  button.textContent = paused ? "Resume" : "Pause";
  if (paused) setStatus("paused");
  else {
    setStatus(state.socketState || "open");
    if (state.pending.size) scheduleFlush(state);
  }
}

function setStatus(s, detail) {
  const el = $("#live-status");
  if (!state) return;
  if (s !== "paused") state.socketState = s;
  const socketState = state.socketState;
  let text, cls;
  if (state.paused) {
    const n = state.pending.size;
    text = n ? `Paused · ${fmt(n)} action${n === 1 ? "" : "s"} changed` : "Paused";
    cls = "paused";
  } else if (socketState === "open") {
    [text, cls] = ["Live", "open"];
  } else if (socketState === "lost") {
    [text, cls] = [`Connection lost · reconnecting in ${detail ? detail.seconds : 1} s`, "lost"];
  } else if (socketState === "failed") {
    [text, cls] = [`Live updates unavailable${detail ? `: ${detail}` : ""}`, "lost"];
  } else {
    [text, cls] = ["Connecting…", "connecting"];
  }
  el.textContent = text;
  el.className = `live-status live-${cls}`;
}

// ------------------------------------------------------------------------------- rows

/** Put `actions` in: known ones are replaced, new ones placed by start date. Among actions of
 * the same second the API's order stands: `newer` says whether the new ones were recorded
 * after those shown (live updates, a re-list) or before them (older pages); `actions` come in
 * the API's order, newest first. */
function merge(view, actions, { newer = false, highlight = false } = {}) {
  let changed = false;
  const fresh = newer ? [...actions].reverse() : actions;    // the oldest first when newer
  for (const action of fresh) {
    const known = view.byUuid.get(action.uuid);
    if (known && JSON.stringify(known.action) === JSON.stringify(action)) continue;
    changed = true;
    const tr = renderRow(action);
    if (highlight) tr.classList.add(known ? "row-updated" : "row-new");
    if (known) {
      known.tr.replaceWith(tr);
      Object.assign(known, { action, tr });
      view.rows[view.rows.findIndex((a) => a.uuid === action.uuid)] = action;
    } else {
      const rank = newer ? --view.top : ++view.bottom;
      view.byUuid.set(action.uuid, { action, tr, rank });
      view.rows.push(action);
    }
  }
  if (changed) {
    const start = (a) => Date.parse(a.start_date) || 0;
    const rank = (a) => view.byUuid.get(a.uuid).rank;
    view.rows.sort((a, b) => start(b) - start(a) || rank(a) - rank(b));
    const body = tbody();
    const wanted = view.rows.map((a) => view.byUuid.get(a.uuid).tr);
    if (wanted.length !== body.children.length || wanted.some((tr, i) => body.children[i] !== tr)) {
      body.replaceChildren(...wanted);
    }
  }
  renderFooter(view);
}

function renderFooter(view) {
  const shown = view.rows.length;
  const total = view.total === null ? shown : Math.max(view.total, shown);
  $("#count").textContent = total
    ? `Showing ${fmt(shown)} of ${fmt(total)} action${total === 1 ? "" : "s"}, newest first`
    : "";
  show($("#empty"), shown === 0);
  show($("#older"), Boolean(view.next));
}

function cell(label, ...content) {
  return h("td", { dataset: { label } }, ...content);
}

function renderRow(a) {
  return h("tr", { dataset: { uuid: a.uuid } },
    cell("Action",
      h("a", { href: `/ui/action/${encodeURIComponent(a.uuid)}`, "data-nav": true, class: "action-link",
        text: a.action || "(unnamed)" }),
      a.is_user_action ? null : h("span", { class: "tag", text: "automatic" })),
    cell("Object", h("span", { class: "mono object", title: a.object, text: a.object || "—" })),
    cell("User", a.user),
    cell("State", stateBadge(a.state)),
    cell("Start", timeEl(a.start_date)),
    cell("Duration", a.end_date ? actionDuration(a) : h("span", {
      class: "running", title: "still running", dataset: { duration: a.uuid },
      text: actionDuration(a).replace(/ so far$/, "") })),
    cell("IP / location", h("span", { class: "ip", text: a.ip || "—" }),
      a.location ? h("span", { class: "location", text: a.location }) : null),
    cell("User agent", h("span", { class: "ua", title: a.user_agent, text: a.user_agent || "—" })));
}

/** Running actions' durations count up (called on a timer by the page). */
export function tickTimeline() {
  if (!state) return;
  for (const el of tbody().querySelectorAll("span.running[data-duration]")) {
    const entry = state.byUuid.get(el.dataset.duration);
    if (entry) el.textContent = actionDuration(entry.action).replace(/ so far$/, "");
  }
}

// ------------------------------------------------------------------------------- filters

const FIELDS = ["state", "action", "user", "object", "start_date__gte", "start_date__lte",
  "uuid__startswith", "is_user_action", "end_date__gte", "end_date__lte"];

function fillForm(query) {
  const f = form();
  for (const name of FIELDS) f.elements[name].value = query.get(name) || "";
  f.elements.include_related.checked = query.get("include_related") === "true";
  $("#f-range").value = query.has("start_date__gte") || query.has("start_date__lte") ? "custom" : "";
  $("#f-more").open = ["is_user_action", "end_date__gte", "end_date__lte"].some((n) => query.has(n));
}

/** The form as API parameters; parameters the form does not show are kept from the URL. */
function formQuery() {
  const f = form();
  const query = new URLSearchParams(state ? state.query : "");
  query.delete("include_related");
  for (const name of FIELDS) {
    const value = f.elements[name].value.trim();
    if (value) query.set(name, value);
    else query.delete(name);
  }
  if (f.elements.include_related.checked && query.has("object")) query.set("include_related", "true");
  return query;
}

function applyForm(event) {
  if (event) event.preventDefault();
  if (!state) return;
  const query = formQuery();
  state.navigate(withQuery("/ui/", query));
}

function applyRange() {
  const value = $("#f-range").value;
  if (value === "custom" || !state) {
    $("#f-from").focus();
    return;
  }
  const f = form();
  f.elements.start_date__gte.value = value ? isoSeconds(Date.now() - Number(value) * 1000) : "";
  f.elements.start_date__lte.value = "";
  applyForm();
}

export function setupTimeline() {
  form().addEventListener("submit", applyForm);
  $("#f-clear").addEventListener("click", () => state && state.navigate("/ui/"));
  $("#f-range").addEventListener("change", applyRange);
  $("#older").addEventListener("click", loadOlder);
  $("#pause").addEventListener("click", () => setPaused(!(state && state.paused)));
  for (const format of ["ndjson", "csv"]) {
    $(`#export-${format}`).addEventListener("click", () => {
      if (state) exportView(state.query, format, $("#export-status"), state.onError);
    });
  }
}
