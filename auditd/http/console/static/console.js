// The console's entry point: sign-in, the router (/ui/ and /ui/action/<uuid>, with the History
// API so back and forward work) and the page-wide banner.

import { $, show, refreshTimes } from "./dom.js";
import { api, session, hooks } from "./api.js";
import { showTimeline, hideTimeline, setupTimeline, tickTimeline } from "./timeline.js";
import { showAction, hideAction, setupAction } from "./action.js";

function showError(message) {
  const banner = $("#banner");
  banner.textContent = message;
  show(banner, Boolean(message));
}

function hideAll() {
  hideTimeline();
  hideAction();
  show($("#signin-view"), false);
}

export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search && !replace) return route();
  history[replace ? "replaceState" : "pushState"](null, "", url);
  route();
}

let lastView = null;

function route() {
  showError("");
  hideAll();
  const auth = session.get();
  show($("#session"), Boolean(auth));
  if (!auth) {
    lastView = null;
    showSignin();
    return;
  }
  $("#whoami").textContent = auth.user;
  const match = location.pathname.match(/^\/ui\/action\/([^/]+)\/?$/);
  const context = { navigate, onError: showError };
  const view = match ? "action" : "timeline";
  if (view !== lastView) $("#main").focus({ preventScroll: true });
  lastView = view;
  if (match) {
    showAction(decodeURIComponent(match[1]), context);
  } else {
    document.title = "Actions · auditd console";
    showTimeline(new URLSearchParams(location.search), context);
  }
}

// ------------------------------------------------------------------------------- sign-in

function showSignin(message) {
  document.title = "Sign in · auditd console";
  show($("#signin-view"), true);
  const error = $("#signin-error");
  error.textContent = message || "";
  show(error, Boolean(message));
  const form = $("#signin-form");
  form.elements.key.value = "";
  (form.elements.user.value ? form.elements.key : form.elements.user).focus();
}

async function signIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const user = form.elements.user.value.trim();
  const key = form.elements.key.value.trim();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    // Checked against the API before it is kept.
    await api("/api/audit/v1/action/?limit=1", {}, { user, key });
    session.set(user, key);
    form.elements.key.value = "";
    route();
  } catch (err) {
    const message = err.status === 401 ? "Unknown user or wrong API key." : err.message;
    show($("#signin-view"), true);
    const error = $("#signin-error");
    error.textContent = message;
    show(error, true);
    form.elements.key.focus();
  } finally {
    button.disabled = false;
  }
}

function signOut(message) {
  session.clear();
  lastView = null;
  hideAll();
  show($("#session"), false);
  $("#whoami").textContent = "";
  showError("");
  showSignin(typeof message === "string" ? message : "");
}

// ------------------------------------------------------------------------------- start

function start() {
  $("#signin-form").addEventListener("submit", signIn);
  $("#signout").addEventListener("click", () => signOut("You are signed out."));
  hooks.unauthorized = (message) => signOut(`Signed out: the server refused the key${message ? ` (${message})` : ""}.`);
  setupTimeline();
  setupAction({ onError: showError });
  // Links inside the console change the view without reloading the page.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
        event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  setInterval(() => {
    refreshTimes();
    tickTimeline();
  }, 5000);
  route();
}

start();
