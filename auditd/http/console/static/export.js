// Export of the current filtered view, made in the browser: the API's pages are followed
// (meta.next, 1000 actions a page) and written out as NDJSON (exact: one Action per line, as
// the API sent it) or CSV (for spreadsheets).

import { download, stamp, fmt } from "./dom.js";
import { api, withQuery } from "./api.js";

const LIST = "/api/audit/v1/action/";
const COLUMNS = ["uuid", "resource_uri", "action", "object", "state", "user", "start_date",
  "end_date", "method", "path", "ip", "location", "user_agent", "is_user_action",
  "can_be_canceled", "can_be_retried", "body"];

let running = false;

/** One CSV field (RFC 4180). A text that a spreadsheet would run as a formula (=, +, -, @)
 * gets a leading apostrophe: opening an audit export must not execute what a caller typed. */
export function csvField(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function csvLine(action) {
  return COLUMNS.map((name) => csvField(action[name])).join(",") + "\r\n";
}

export async function exportView(query, format, statusEl, onError) {
  if (running) return;
  running = true;
  const parts = format === "csv" ? [COLUMNS.join(",") + "\r\n"] : [];
  const buttons = document.querySelectorAll("#export-ndjson, #export-csv");
  buttons.forEach((b) => { b.disabled = true; });
  let path = withQuery(LIST, [...new URLSearchParams(query), ["limit", "1000"]]);
  let done = 0;
  try {
    while (path) {
      const page = await api(path);
      for (const action of page.objects) {
        parts.push(format === "csv" ? csvLine(action) : JSON.stringify(action) + "\n");
      }
      done += page.objects.length;
      statusEl.textContent = `Exporting… ${fmt(done)} of ${fmt(page.meta.total_count)}`;
      path = page.meta.next;
    }
    const type = format === "csv" ? "text/csv" : "application/x-ndjson";
    download(parts, `auditd-actions-${stamp()}.${format}`, type);
    statusEl.textContent = `Exported ${fmt(done)} action${done === 1 ? "" : "s"} as ${format.toUpperCase()}`;
  } catch (err) {
    statusEl.textContent = "";
    onError(`The export failed: ${err.message}`);
  } finally {
    running = false;
    buttons.forEach((b) => { b.disabled = false; });
  }
}
