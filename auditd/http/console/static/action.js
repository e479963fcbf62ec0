// One action: every field, the raw JSON, the related actions, cancel and retry, and the log
// following live. The action's own changes come from the events stream, filtered on it.

import { $, h, show, timeEl, stateBadge, parseDate, exact, actionDuration } from "./dom.js";
import { api, withQuery, LiveSocket } from "./api.js";
import { LogView, downloadLog } from "./logview.js";

const EVENTS = "/api/audit/v1/events/";
const LIST = "/api/audit/v1/action/";

let state = null;

export function showAction(uuid, { navigate, onError }) {
  hideAction();
  const view = { uuid, navigate, onError, action: null, socket: null, log: null };
  state = view;
  $("#a-title").textContent = "Loading…";
  $("#a-subtitle").textContent = "";
  $("#a-state").replaceChildren();
  $("#a-fields").replaceChildren();
  $("#a-related").replaceChildren();
  $("#a-raw").textContent = "";
  $("#log-note").textContent = "";
  $("#log-status").textContent = "";
  $("#a-live").textContent = "";
  show($("#a-cancel"), false);
  show($("#a-retry"), false);
  show($("#action-view"), true);
  load(view);
}

export function hideAction() {
  if (state) {
    if (state.socket) state.socket.stop();
    if (state.log) state.log.stop();
    state = null;
  }
  $("#log").replaceChildren();
  show($("#action-view"), false);
}

async function load(view) {
  let action;
  try {
    action = await api(`${LIST}${encodeURIComponent(view.uuid)}/`);
  } catch (err) {
    if (state !== view) return;
    $("#a-title").textContent = err.status === 404 ? "No such action" : "The action could not be loaded";
    view.onError(err.message);
    return;
  }
  if (state !== view) return;
  render(view, action);
  loadRelated(view);
  view.socket = new LiveSocket(EVENTS, { object: action.resource_uri }, {
    onOpen: () => refresh(view),           // whatever changed while not connected
    onMessage: (m) => { if (m.type === "action") refresh(view); },
    onStatus: (s) => {
      if (state !== view) return;
      const el = $("#a-live");
      el.textContent = s === "open" ? "Live" : s === "lost" ? "Reconnecting…" : s === "failed" ? "Not live" : "";
      el.className = `live-status live-${s === "open" ? "open" : s === "lost" ? "lost" : "connecting"}`;
    },
  }).start();
  view.log = new LogView({ box: $("#log"), status: $("#log-status"), note: $("#log-note"),
    follow: $("#log-follow") });
  view.log.start(action.uuid);
}

async function refresh(view) {
  try {
    const action = await api(view.action.resource_uri);
    if (state === view) render(view, action);
  } catch (err) {
    if (state === view) view.onError(`The action could not be refreshed: ${err.message}`);
  }
}

function render(view, a) {
  view.action = a;
  document.title = `${a.action} · auditd console`;
  $("#a-title").textContent = a.action || "(unnamed action)";
  $("#a-state").replaceChildren(stateBadge(a.state));
  const started = parseDate(a.start_date);
  $("#a-subtitle").replaceChildren(
    `by ${a.user || "unknown"} · started `, timeEl(a.start_date),
    started ? ` · ${a.end_date ? "took" : "running for"} ${actionDuration(a).replace(/ so far$/, "")}` : "");
  show($("#a-cancel"), a.can_be_canceled === true);
  show($("#a-retry"), a.can_be_retried === true);
  $("#a-fields").replaceChildren(...Object.entries(a).flatMap(([key, value]) => [
    h("dt", { text: key }), h("dd", {}, fieldValue(key, value)),
  ]));
  $("#a-raw").textContent = JSON.stringify(a, null, 2);
}

function fieldValue(key, value) {
  if (value === null) return h("span", { class: "muted", text: "null" });
  if (typeof value === "boolean") return h("span", { class: value ? "bool-yes" : "bool-no", text: value ? "yes" : "no" });
  if (key === "state") return stateBadge(value);
  if (key.endsWith("_date")) {
    const ms = parseDate(value);
    return h("span", {}, h("span", { class: "mono", text: value }),
      ms ? h("span", { class: "muted", text: ` · ${exact(ms).split(" (")[0]}` }) : null);
  }
  if (key === "body" && typeof value === "string") {
    let text = value;
    try {
      text = JSON.stringify(JSON.parse(value), null, 2);
    } catch { /* not JSON: shown as it is */ }
    return h("pre", { class: "raw small", text });
  }
  if (value === "") return h("span", { class: "muted", text: "(empty)" });
  const mono = ["uuid", "resource_uri", "object", "path", "ip"].includes(key);
  return h("span", { class: mono ? "mono" : "", text: String(value) });
}

async function loadRelated(view) {
  const box = $("#a-related");
  const a = view.action;
  if (!a.object) {
    box.replaceChildren(h("p", { class: "muted", text: "This action has no target object." }));
    return;
  }
  try {
    const page = await api(withQuery(LIST, { object: a.object, include_related: "true", limit: "100" }));
    if (state !== view) return;
    const others = page.objects.filter((r) => r.uuid !== a.uuid);
    if (!others.length) {
      box.replaceChildren(h("p", { class: "muted", text: "No other action on this object or its relatives." }));
      return;
    }
    box.replaceChildren(h("ul", { class: "related" }, others.map((r) => h("li", {},
      h("a", { href: `/ui/action/${encodeURIComponent(r.uuid)}`, "data-nav": true, text: r.action || "(unnamed)" }),
      " ", stateBadge(r.state), " ", timeEl(r.start_date),
      h("div", { class: "mono muted small object", text: r.object }))),
    page.meta.total_count > page.objects.length
      ? h("li", { class: "muted", text: `…and ${page.meta.total_count - page.objects.length} more` }) : null));
  } catch (err) {
    if (state === view) box.replaceChildren(h("p", { class: "form-error", text: err.message }));
  }
}

async function operate(kind) {
  const view = state;
  if (!view || !view.action) return;
  const button = $(`#a-${kind}`);
  button.disabled = true;
  try {
    const result = await api(`${view.action.resource_uri}${kind}/`, { method: "POST" });
    if (state !== view) return;
    if (kind === "retry") view.navigate(`/ui/action/${encodeURIComponent(result.uuid)}`);
    else render(view, result);
  } catch (err) {
    if (state === view) view.onError(`${kind === "cancel" ? "Cancel" : "Retry"} failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
}

export function setupAction({ onError }) {
  $("#a-cancel").addEventListener("click", () => operate("cancel"));
  $("#a-retry").addEventListener("click", () => operate("retry"));
  $("#log-follow").addEventListener("change", (e) => {
    if (e.target.checked) $("#log").scrollTop = $("#log").scrollHeight;
  });
  $("#log-download").addEventListener("click", (e) => {
    if (state && state.action) {
      downloadLog(state.action.uuid, e.currentTarget).catch((err) => onError(`The download failed: ${err.message}`));
    }
  });
}
