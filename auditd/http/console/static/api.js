// The API as the console uses it: the signed-in user's credentials on every request, stream
// tickets for WebSockets (no credential ever goes into a URL), and sockets that reconnect.

const SESSION_KEY = "auditd.console.session";

/** The signed-in user and key, kept in this tab only (sessionStorage). */
export const session = {
  get() {
    try {
      const value = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
      return value && value.user && value.key ? value : null;
    } catch {
      return null;
    }
  },
  set(user, key) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ user, key }));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
};

function basic({ user, key }) {
  const bytes = new TextEncoder().encode(`${user}:${key}`);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return `Basic ${btoa(binary)}`;
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Called when the server refuses the session's credentials (set by the page). */
export const hooks = { unauthorized: () => {} };

/** Only the API's own paths are ever requested (a `next` link or resource_uri included). */
function checkPath(path) {
  if (typeof path !== "string" || !/^\/(api|ui\/api)\//.test(path)) {
    throw new ApiError(0, `refusing to request ${JSON.stringify(path)}: not an API path`);
  }
  return path;
}

/** fetch() with the session's Basic credentials; the parsed JSON, or an ApiError. */
export async function api(path, { method = "GET", body } = {}, credentials = undefined) {
  const fromSession = credentials === undefined;
  const auth = fromSession ? session.get() : credentials;
  if (!auth) {
    hooks.unauthorized();
    throw new ApiError(401, "not signed in");
  }
  const headers = { Authorization: basic(auth), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    // credentials: "omit": no cookies or cached HTTP credentials go along, and a 401 never
    // opens the browser's own password dialog.
    response = await fetch(checkPath(path), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit", cache: "no-store", redirect: "error",
    });
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw new ApiError(0, `the server cannot be reached (${err.message})`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
    if (response.status === 401 && fromSession) hooks.unauthorized(message);
    throw new ApiError(response.status, message);
  }
  return data;
}

/** A path plus query from a path and URLSearchParams (or an object). */
export function withQuery(path, params) {
  const query = new URLSearchParams(params).toString();
  return query ? `${path}?${query}` : path;
}

/** ws:// or wss:// on this very server, for an API stream path and its query. */
function socketUrl(path, params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${withQuery(checkPath(path), params)}`;
}

/**
 * One of the API's WebSockets, opened with a fresh single-use ticket each time, reconnecting
 * with back-off when the connection is lost. Callbacks: onOpen() after each (re)connection,
 * onMessage(obj), onStatus(state, detail) with state in connecting|open|lost|ended|failed,
 * onEnd(code, reason) when the server closes normally (1000) and `endOnClose` is set.
 */
export class LiveSocket {
  constructor(path, params, handlers, { endOnClose = false } = {}) {
    Object.assign(this, { path, params, handlers, endOnClose });
    this.stopped = true;
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = this.ws.onopen = null;
      this.ws.close(1000);
      this.ws = null;
    }
  }

  status(state, detail) {
    if (this.handlers.onStatus) this.handlers.onStatus(state, detail);
  }

  async connect() {
    this.status("connecting");
    let ticket;
    try {
      ({ ticket } = await api("/ui/api/ticket", { method: "POST" }));
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        this.status("failed", err.message);
        return;
      }
      this.retry(err.message);
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(socketUrl(this.path, { ...this.params, ticket }));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.status("open");
      if (this.handlers.onOpen) this.handlers.onOpen();
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      // A stream opened with batch=true sends arrays of messages.
      if (Array.isArray(message)) for (const one of message) this.handlers.onMessage(one);
      else this.handlers.onMessage(message);
    };
    ws.onclose = (event) => {
      this.ws = null;
      if (this.stopped) return;
      if (event.code === 1000 && this.endOnClose) {
        this.stopped = true;
        this.status("ended", event.reason);
        if (this.handlers.onEnd) this.handlers.onEnd(event.code, event.reason);
        return;
      }
      this.retry(event.reason || `connection closed (${event.code})`);
    };
  }

  retry(reason) {
    if (this.stopped) return;
    const seconds = Math.min(15, 2 ** this.attempt);
    this.attempt += 1;
    this.status("lost", { reason, seconds });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (!this.stopped) this.connect();
    }, seconds * 1000);
  }
}
