"""auditd's own export format, and its import.

The export format, NDJSON, one JSON object per line:

- an action: the 17 keys of the Action as the API sends it, plus
  `namespace`; `cancelable` and `retriable` (the producer's flags: the API's can_be_* also depend
  on the state); `parents`, the object graph above the action's object as [child URI, parent URI]
  edges; and `logs`, its log lines as {"seq", "timestamp", "streamType", "log"}. What an import
  accepts on such a line is `auditd.formats.items`: a fixture item works too.
- an action with more than 1000 log lines is followed by lines {"logs_of": uuid, "logs": [...]}
  carrying the rest, so neither export nor import ever holds a whole log in memory.

CSV has one row per action: the Action's keys, its namespace and its log_count.

Import keys actions by uuid and log lines by (uuid, seq): importing a file twice adds nothing.
"""
import asyncio
import base64
import csv
import functools
import itertools
import json

from ..model.document import WIRE_FIELDS
from ..model.errors import InvalidRequest
from .items import load_item, load_logs, load_uuid, numbered

IMPORT_BATCH_ACTIONS = 500         # one writer transaction per batch of records ...
IMPORT_BATCH_LINES = 5000          # ... or of log lines, whichever comes first
LOG_CHUNK = 1000                   # log lines per NDJSON record
MAX_ERRORS_SHOWN = 20

CSV_FIELDS = ("uuid", "namespace", *(f for f in WIRE_FIELDS if f != "uuid"), "log_count")


# ---------------------------------------------------------------------------- export

def export_record(action: dict, edges: list, logs: list) -> dict:
    record = json.loads(action["doc"])
    record.update(namespace=action["namespace"], cancelable=bool(action["cancelable"]),
                  retriable=bool(action["retriable"]), parents=edges, logs=_log_objects(logs))
    return record


def _log_objects(lines) -> list[dict]:
    out = []
    for seq, ts, stream_type, line in lines:
        item = {"seq": seq, "timestamp": ts, "log": line}
        if stream_type is not None:
            item["streamType"] = stream_type
        out.append(item)
    return out


def _dumps(record) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


async def export(store, filters: dict, out, fmt: str = "ndjson", progress=None,
                 log_chunk: int = LOG_CHUNK, checkpoint: dict | None = None) -> int:
    """Write every matching action to the text stream `out`; returns how many.

    With a signed `checkpoint` (NDJSON only) the first line is {"checkpoint": ...} and every
    action carries "proof": its leaves and their inclusion paths in that checkpoint's tree, so
    `python -m auditd.verify export FILE` can check the file later, without auditd."""
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
    elif checkpoint is not None:
        out.write(_dumps({"checkpoint": checkpoint}))
    async for kind, action, *rest in store.export_actions(filters, with_logs=fmt == "ndjson",
                                                          log_chunk=log_chunk):
        if kind == "logs":
            out.write(_dumps({"logs_of": action["uuid"], "logs": _log_objects(rest[0])}))
            continue
        count += 1
        if writer is not None:
            row = json.loads(action["doc"])
            row = {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                   for k, v in row.items()}
            writer.writerow(dict(row, namespace=action["namespace"],
                                 log_count=action["log_count"]))
        else:
            record = export_record(action, *rest)
            if checkpoint is not None:
                record["proof"] = await _proof(store, action["uuid"], checkpoint["tree_size"])
            out.write(_dumps(record))
        if progress is not None:
            progress.update(count)
    return count


async def _proof(store, uuid: str, size: int) -> dict | None:
    """The action's leaves in the checkpoint's tree (None for an action recorded after it)."""
    try:
        proof = await store.proof(uuid, None, size)
    except InvalidRequest:
        return None
    for leaf in proof["leaves"]:
        leaf["leaf"] = base64.b64encode(leaf["leaf"]).decode() if leaf["leaf"] else None
    return {k: proof[k] for k in ("tree_size", "root_hash", "leaves")}


# ---------------------------------------------------------------------------- import

IMPORT_DEFAULT_USER = "admin"      # an item without `user`, as `serve --fixtures` does


def parse_line(text: str, lineno: int):
    """One NDJSON line as an import item for `Store.import_batch`; ValueError saying what is
    wrong if it is not one."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from None
    return parse_item(data, lineno)


def parse_item(data, lineno: int):
    """One action item (an export line, a fixture item) or logs_of line as an import item. An
    item without uuid gets a new one (so importing it again adds it again), one without user is
    the admin's."""
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object (an action, or {\"logs_of\": uuid, \"logs\": ...})")
    if "checkpoint" in data and len(data) == 1:
        return None                        # an export's checkpoint line: for verifiers
    if "logs_of" in data:
        if set(data) - {"logs_of", "logs"}:
            raise ValueError("a logs_of line has only the keys logs_of and logs")
        return ("logs", lineno, load_uuid(data["logs_of"], "logs_of"),
                numbered(load_logs(data.get("logs"), 0)))
    record, edges, logs = load_item(data, IMPORT_DEFAULT_USER)
    record["new_uuid"] = "uuid" not in data
    return ("action", lineno, record, edges, numbered(logs))


class ImportSummary:
    def __init__(self):
        self.imported = self.skipped = self.lines = 0
        self.errors: list[tuple[int, str]] = []
        self.new_uuids = 0          # items without a uuid, given a new one
        self.unit = "line"          # "item" for a JSON array

    def add(self, results):
        for lineno, outcome, added, error in results:
            self.lines += added
            if outcome == "imported":
                self.imported += 1
            elif outcome == "skipped":
                self.skipped += 1
            elif outcome == "error":
                self.errors.append((lineno, error))

    def text(self) -> str:
        text = (f"imported {self.imported:,} actions and {self.lines:,} log lines; "
                f"skipped {self.skipped:,} actions already present; {len(self.errors):,} errors")
        if self.new_uuids:
            text += (f"\n{self.new_uuids:,} actions had no uuid and were given a new one: "
                     "importing this file again adds them again")
        for lineno, error in sorted(self.errors)[:MAX_ERRORS_SHOWN]:
            text += f"\n  {self.unit} {lineno}: {error}"
        if len(self.errors) > MAX_ERRORS_SHOWN:
            text += f"\n  ... and {len(self.errors) - MAX_ERRORS_SHOWN:,} more"
        if self.errors:
            text += ("\nfix those lines and run the same import again: what was imported is "
                     "skipped the second time")
        return text


def _records(stream, summary):
    """(number, bytes read, parse) for each record of the binary `stream`, where parse() gives
    the import item (None for a blank line): NDJSON lines, or the items of a JSON array (a
    fixture file), which is read whole."""
    lines, blank = iter(stream), 0
    first = b""
    for first in lines:
        if first.strip():
            break
        blank += 1
        yield blank, len(first), lambda: None
    else:
        return
    if not first.lstrip().startswith(b"["):
        for lineno, raw in enumerate(itertools.chain([first], lines), blank + 1):
            yield lineno, len(raw), functools.partial(_parse_raw, raw, lineno)
        return
    summary.unit = "item"
    raw = first + b"".join(lines)
    try:
        items = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        summary.errors.append((0, f"the file starts with '[' but is not a JSON array ({err})"))
        return
    for number, item in enumerate(items):
        yield number, len(raw) if number == 0 else 0, functools.partial(parse_item, item, number)


def _parse_raw(raw: bytes, lineno: int):
    return parse_line(raw.decode("utf-8"), lineno) if raw.strip() else None


class BatchWriter:
    """Import items into `store.import_batch` in their order, in batches of at most `actions`
    items or `lines` log lines; one batch is written while the next is gathered. Each batch's
    results [(lineno, outcome, lines added, error)] go to `on_results`."""

    def __init__(self, store, on_results, actions: int = IMPORT_BATCH_ACTIONS,
                 lines: int = IMPORT_BATCH_LINES):
        self.store, self.on_results = store, on_results
        self.max_actions, self.max_lines = actions, lines
        self.batch, self.lines, self.writing = [], 0, None

    async def add(self, item):
        self.batch.append(item)
        self.lines += len(item[-1])
        if len(self.batch) >= self.max_actions or self.lines >= self.max_lines:
            await self.flush()

    async def flush(self):
        await self._written()
        if self.batch:
            self.writing = asyncio.ensure_future(self.store.import_batch(self.batch))
        self.batch, self.lines = [], 0

    async def finish(self):
        await self.flush()
        await self._written()

    async def abandon(self):
        """Stopped by an error: let the batch in flight finish."""
        if self.writing is not None:
            await asyncio.gather(self.writing, return_exceptions=True)

    async def _written(self):
        if self.writing is not None:
            results, self.writing = await self.writing, None
            self.on_results(results)


async def import_file(store, stream, size: int | None = None, progress=None,
                      batch_actions: int = IMPORT_BATCH_ACTIONS,
                      batch_lines: int = IMPORT_BATCH_LINES) -> ImportSummary:
    """Import NDJSON from the binary stream `stream`, batch by batch. One batch is written while
    the next is parsed; batches go to the writer in file order, so a logs_of line always finds
    an action from an earlier line already committed."""
    summary = ImportSummary()
    consumed = 0

    def results(batch_results):
        summary.add(batch_results)
        if progress is not None:
            progress.update(consumed, f"{summary.imported:,} imported, {summary.skipped:,} "
                                      f"skipped, {len(summary.errors):,} errors")

    writer = BatchWriter(store, results, batch_actions, batch_lines)
    try:
        for lineno, nbytes, parse in _records(stream, summary):
            consumed += nbytes
            try:
                item = parse()
            except (ValueError, UnicodeDecodeError) as err:
                summary.errors.append((lineno, str(err)))
                continue
            if item is None:
                continue
            if item[0] == "action" and item[2].pop("new_uuid"):
                summary.new_uuids += 1
            await writer.add(item)
        await writer.finish()
    finally:
        await writer.abandon()
    if progress is not None:
        progress.finish(consumed)
    return summary
