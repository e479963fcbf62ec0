// An action's log, following live: the log stream with tail=all gives the history and then
// every new line; the server closes with 1000 when the action has ended and all is sent.
// Lines come in arrays (batch=true: one message event per write, not per line), are drawn in
// batches on animation frames, and only the last CAP stay in the page, so a log of 100,000
// lines keeps the page responsive; "Download log" reads the whole log again.
// After a lost connection the stream is opened again from the start and the lines already
// received are skipped: each line shows once, in order.

import { h, download, isoSeconds, fmt } from "./dom.js";
import { LiveSocket, ApiError } from "./api.js";

export const CAP = 5000;          // lines kept in the page
const PER_FRAME = 2000;           // lines drawn per animation frame at most
const CHUNK = 200;               // lines per block of the page

const pad = (n) => String(n).padStart(2, "0");
function clock(seconds) {
  if (typeof seconds !== "number") return "";
  const d = new Date(seconds * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function logPath(uuid) {
  return `/api/audit/v1/action/${encodeURIComponent(uuid)}/logs/`;
}

export class LogView {
  constructor({ box, status, note, follow }) {
    Object.assign(this, { box, statusEl: status, note, follow });
    this.queue = [];
    this.received = 0;       // lines received from the stream (the ones skipped excepted)
    this.skip = 0;           // lines to skip after a reconnection (already received)
    this.shown = 0;          // lines in the page
    this.frame = null;
    this.socket = null;
  }

  start(uuid) {
    this.uuid = uuid;
    // Scrolling up to read stops the scrolling with new lines; back at the bottom, it resumes.
    // Only the reader's own scrolling stops it, never a scroll that layout caused.
    let touched = 0;
    const reader = () => { touched = performance.now(); };
    for (const type of ["wheel", "touchmove", "keydown", "pointerdown"]) this.box[`on${type}`] = reader;
    this.box.onscroll = () => {
      const box = this.box;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      if (atBottom) this.follow.checked = true;
      else if (performance.now() - touched < 1000) this.follow.checked = false;
    };
    this.box.replaceChildren();
    this.setStatus("Connecting…", "connecting");
    this.socket = new LiveSocket(logPath(uuid), { tail: "all", batch: "true" }, {
      onOpen: () => { this.skip = this.received; },
      onMessage: (m) => this.onMessage(m),
      onStatus: (s, detail) => this.onStatus(s, detail),
    }, { endOnClose: true }).start();
  }

  stop() {
    if (this.socket) this.socket.stop();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = null;
    this.queue = [];
  }

  onMessage(message) {
    if (message.type !== "log") return;
    if (this.skip > 0) {
      this.skip -= 1;
      return;
    }
    this.received += 1;
    this.queue.push(message);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.draw());
  }

  onStatus(s, detail) {
    if (s === "open") this.setStatus("Following live", "open");
    else if (s === "lost") this.setStatus(`Connection lost · reconnecting in ${detail.seconds} s`, "lost");
    else if (s === "failed") this.setStatus(`Log unavailable: ${detail}`, "lost");
    else if (s === "ended") this.setStatus("Complete: the action has ended", "ended");
    else this.setStatus("Connecting…", "connecting");
  }

  setStatus(text, cls) {
    this.statusEl.textContent = text;
    this.statusEl.className = `live-status live-${cls}`;
    this.box.setAttribute("aria-busy", String(cls === "connecting"));
  }

  /** Draw what arrived: into blocks of CHUNK lines; the browser lays out a full block only
   * while it is on screen (content-visibility), so a frame's cost does not grow with the log. */
  draw() {
    this.frame = null;
    // Lines that would be dropped from the page at once are not drawn at all.
    if (this.queue.length > CAP) this.queue.splice(0, this.queue.length - CAP);
    const batch = this.queue.splice(0, PER_FRAME);
    const box = this.box;
    let chunk = box.lastElementChild;
    for (const m of batch) {
      if (!chunk || chunk.childElementCount >= CHUNK) {
        if (chunk) chunk.classList.add("full");
        chunk = h("div", { class: "chunk" });
        box.append(chunk);
      }
      chunk.append(h("div", { class: m.streamType === "stderr" ? "line line-err" : "line" },
        h("span", { class: "ts", text: clock(m.timestamp) }),
        h("span", { class: "text", text: m.log })));
    }
    this.shown += batch.length;
    // Keep CAP lines: whole blocks first, then lines of the first block.
    while (this.shown - CAP >= box.firstElementChild.childElementCount) {
      this.shown -= box.firstElementChild.childElementCount;
      box.firstElementChild.remove();
    }
    for (let over = this.shown - CAP; over > 0; over -= 1) {
      box.firstElementChild.firstElementChild.remove();
      this.shown -= 1;
    }
    if (this.follow.checked) box.scrollTop = box.scrollHeight;
    this.note.textContent = this.received > CAP
      ? `${fmt(this.received)} lines; the page keeps the last ${fmt(CAP)}. Download the log for all of them.`
      : `${fmt(this.received)} line${this.received === 1 ? "" : "s"}`;
    if (this.queue.length) this.frame = requestAnimationFrame(() => this.draw());
  }
}

/** The whole log as a file: the stream once more, without following, to its end. */
export async function downloadLog(uuid, button) {
  button.disabled = true;
  const label = button.textContent;
  button.textContent = "Preparing…";
  const parts = [];
  try {
    await new Promise((resolve, reject) => {
      const params = { tail: "all", follow: "false", batch: "true" };
      const socket = new LiveSocket(logPath(uuid), params, {
        onMessage: (m) => {
          if (m.type !== "log") return;
          const ts = typeof m.timestamp === "number" ? isoSeconds(m.timestamp * 1000) : "";
          parts.push(`${ts} ${m.log}\n`);
        },
        onEnd: resolve,
        onStatus: (s, detail) => {
          if (s === "failed" || s === "lost") {
            socket.stop();
            reject(new ApiError(0, typeof detail === "string" ? detail : detail.reason));
          }
        },
      }, { endOnClose: true });
      socket.start();
    });
    download(parts, `auditd-${uuid}.log`, "text/plain");
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}
