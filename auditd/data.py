"""The data lifecycle: export, import, purge (and the retention task), backup and check.

The export format, NDJSON, one JSON object per line:

- an action: the 17 keys of the Action as the API sends it, plus
  `namespace`; `cancelable` and `retriable` (the producer's flags: the API's can_be_* also depend
  on the state); `parents`, the object graph above the action's object as [child URI, parent URI]
  edges (a list of URIs, nearest first, as producers send it, is accepted on import too); and
  `logs`, its log lines as {"seq", "timestamp", "streamType", "log"}.
- an action with more than 1000 log lines is followed by lines {"logs_of": uuid, "logs": [...]}
  carrying the rest, so neither export nor import ever holds a whole log in memory.

Import keys actions by uuid and log lines by (uuid, seq): importing a file twice adds nothing.
"""
import asyncio
import csv
import json
import logging
import os
import sqlite3
import sys
import time
import uuid as uuidlib
from pathlib import Path

from aiohttp import web

from . import dates, keys
from .errors import AuditdError
from .schemas import FINAL_STATES, STATES
from .store import Store, lifecycle

log = logging.getLogger("auditd.data")

RETENTION_INTERVAL = 3600.0        # seconds between two retention passes
IMPORT_BATCH_ACTIONS = 500         # one writer transaction per batch of records ...
IMPORT_BATCH_LINES = 5000          # ... or of log lines, whichever comes first
LOG_CHUNK = 1000                   # log lines per NDJSON record
MAX_ERRORS_SHOWN = 20
DAY = 86400

WIRE_FIELDS = ("resource_uri", "uuid", "object", "action", "method", "path", "user", "user_agent",
               "start_date", "end_date", "state", "ip", "location", "is_user_action",
               "can_be_canceled", "can_be_retried", "body")
CSV_FIELDS = ("uuid", "namespace", *(f for f in WIRE_FIELDS if f != "uuid"), "log_count")


# ---------------------------------------------------------------------------- progress on stderr

class Progress:
    """A bar redrawn in place when stderr is a terminal; otherwise a line every `every` seconds."""

    def __init__(self, label: str, total: int | None, unit: str, stream=None, every: float = 5.0):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.1 if self.tty else every
        self.started = self.last = time.monotonic()

    def _text(self, done: int, extra: str) -> str:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            share = min(done / self.total, 1.0)
            if self.tty:
                bar = "#" * int(share * 30)
                text = f"{self.label} [{bar:<30}] {share:4.0%}"
            else:
                text = f"{self.label}: {share:.0%}"
            text += f" ({done:,}/{self.total:,} {self.unit}, {rate:,.0f}/s)"
        else:
            text = f"{self.label}: {done:,} {self.unit} ({rate:,.0f}/s)"
        return text + (f" {extra}" if extra else "")

    def update(self, done: int, extra: str = ""):
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self._text(done, extra))
        else:
            self.stream.write(self._text(done, extra) + "\n")
        self.stream.flush()

    def finish(self, done: int, extra: str = ""):
        if self.tty:
            self.stream.write("\r\x1b[K" + self._text(done, extra) + "\n")
            self.stream.flush()


def _say(message: str):
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- arguments

def _date(text: str) -> int:
    import argparse
    try:
        return dates.parse_date(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; accepted: {dates.ACCEPTED_FORMATS}") from None


def _database(args, must_exist: bool = True) -> str:
    from .cli import config_from_args
    path = config_from_args(args).db
    if must_exist and not Path(path).is_file():
        raise AuditdError(f"no database at {path}: pass --db PATH (the file 'auditd serve' uses)")
    return path


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


async def export(store, filters: dict, out, fmt: str = "ndjson", progress: Progress | None = None,
                 log_chunk: int = LOG_CHUNK) -> int:
    """Write every matching action to the text stream `out`; returns how many."""
    count = 0
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
    async for kind, action, *rest in lifecycle.export_actions(
            store, filters, with_logs=fmt == "ndjson", log_chunk=log_chunk):
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
            out.write(_dumps(export_record(action, *rest)))
        if progress is not None:
            progress.update(count)
    return count


def cmd_export(args) -> int:
    path = _database(args)
    filters = {"states": args.state, "namespaces": args.namespace,
               "since": args.since, "until": args.until}
    target = Path(args.output) if args.output and args.output != "-" else None
    partial = target.with_name(target.name + ".partial") if target else None

    async def run(out):
        async with Store(path) as store:
            total = await lifecycle.count_actions(store, filters)
            # No bar over the actions themselves when they go to the same terminal.
            progress = None if out.isatty() else Progress("exporting", total, "actions")
            count = await export(store, filters, out, args.format, progress)
            if progress is not None:
                progress.finish(count)
            return count

    try:
        if target is None:
            count = asyncio.run(run(sys.stdout))
            sys.stdout.flush()
        else:
            with open(partial, "w", encoding="utf-8", newline="") as out:
                count = asyncio.run(run(out))
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
    except BrokenPipeError:   # `auditd export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    _say(f"exported {count:,} actions as {args.format}"
         + (f" to {target}" if target else ""))
    return 0


# ---------------------------------------------------------------------------- import

# An action line: what each key must hold. Plain checks rather than a marshmallow schema: an
# import loads hundreds of thousands of lines, and this is several times faster.
_REQUIRED_TEXT = ("action", "user")
_OPTIONAL_TEXT = ("object", "method", "path", "user_agent", "ip", "location", "resource_uri")
_FLAGS = ("is_user_action", "cancelable", "retriable", "can_be_canceled", "can_be_retried")
_ACTION_KEYS = frozenset({"uuid", "state", "namespace", "body", "start_date", "end_date",
                          "parents", "logs", *_REQUIRED_TEXT, *_OPTIONAL_TEXT, *_FLAGS})


def _load_date(value, name: str, problems: list):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return dates.parse_date(value)
        except ValueError:
            pass
    problems.append(f"{name}: must be a date: {dates.ACCEPTED_FORMATS}")
    return None


def _load_action(data: dict) -> dict:
    """A complete action record (as `new_action` makes) from an action line; ValueError naming
    every problem otherwise."""
    problems = [f"unknown key '{k}'" for k in data if k not in _ACTION_KEYS]
    for name in ("uuid", "state", "start_date", *_REQUIRED_TEXT):
        if name not in data:
            problems.append(f"{name}: is required")
    for name in _REQUIRED_TEXT:
        if name in data and (not isinstance(data[name], str) or not data[name]):
            problems.append(f"{name}: must be a non-empty string")
    for name in _OPTIONAL_TEXT:
        if not isinstance(data.get(name, ""), str):
            problems.append(f"{name}: must be a string")
    for name in _FLAGS:
        if not isinstance(data.get(name, True), bool):
            problems.append(f"{name}: must be true or false")
    namespace = data.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        problems.append("namespace: must be a non-empty string")
    if not isinstance(data.get("body"), (str, type(None))):
        problems.append("body: must be a string or null")
    state = data.get("state")
    if state is not None and state not in STATES:
        problems.append("state: must be one of: " + ", ".join(STATES))
    start = _load_date(data["start_date"], "start_date", problems) if "start_date" in data \
        else None
    end_given = data.get("end_date")
    end = _load_date(end_given, "end_date", problems) if end_given is not None else None
    if state in FINAL_STATES:
        if end_given is None:
            problems.append(f"end_date: is required for a {state} action")
        elif end is not None and start is not None and end < start:
            problems.append("end_date: is before start_date")
    elif state in STATES and end_given is not None:
        problems.append(f"end_date: must be null while the action is {state}")
    if problems:
        raise ValueError("; ".join(problems))
    flags = {name: data.get(name) for name in _FLAGS}
    return {
        "uuid": _uuid(data["uuid"], "uuid"),
        "namespace": namespace or data["user"],
        "state": state, "action": data["action"], "user": data["user"],
        **{name: data.get(name, "") for name in _OPTIONAL_TEXT if name != "resource_uri"},
        "body": data.get("body"),
        "start_ts": start, "end_ts": end,
        "is_user_action": data.get("is_user_action", True),
        # The producer's own flags; an Action from the API only has can_be_*, which are the same
        # while the action can still be canceled or retried.
        "cancelable": next(f for f in (flags["cancelable"], flags["can_be_canceled"], True)
                           if f is not None),
        "retriable": next(f for f in (flags["retriable"], flags["can_be_retried"], True)
                          if f is not None),
    }


def _load_logs(items, first_seq: int = 1) -> list[tuple]:
    """[(seq, ts, stream_type, line)]; a line without seq follows the one before it."""
    if not isinstance(items, list):
        raise ValueError("logs: must be a list of log objects")
    lines, seq = [], first_seq - 1
    for i, item in enumerate(items):
        where = f"logs[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("log"), str):
            raise ValueError(f'{where}: must be {{"seq": int, "timestamp": int, '
                             '"streamType": str, "log": str}')
        unknown = set(item) - {"seq", "timestamp", "streamType", "log", "type"}
        if unknown:
            raise ValueError(f"{where}: unknown key '{sorted(unknown)[0]}'")
        seq = item.get("seq", seq + 1)
        ts, stream_type = item.get("timestamp"), item.get("streamType")
        if type(seq) is not int or seq < 1:
            raise ValueError(f"{where}.seq: must be an integer >= 1")
        if type(ts) is not int:
            raise ValueError(f"{where}.timestamp: must be Unix seconds (an integer)")
        if stream_type is not None and not isinstance(stream_type, str):
            raise ValueError(f"{where}.streamType: must be a string")
        lines.append((seq, ts, stream_type, item["log"]))
    return lines


def _load_edges(parents: list, object_uri: str) -> list[list[str]]:
    """[child URI, parent URI] edges, as exported; a producer's chain of parent URIs (nearest
    first) is accepted too and turned into edges from the action's object."""
    if not isinstance(parents, list):
        raise ValueError("parents: must be a list")
    if all(isinstance(p, list) and len(p) == 2 and all(isinstance(u, str) and u for u in p)
           for p in parents):
        return [list(p) for p in parents]
    if all(isinstance(p, str) and p for p in parents):
        if not object_uri:
            raise ValueError("parents: a list of parent URIs needs the action's object")
        chain = [object_uri, *parents]
        return [[chain[i], chain[i + 1]] for i in range(len(chain) - 1)]
    raise ValueError("parents: must be [child URI, parent URI] pairs or a list of parent URIs")


def parse_line(text: str, lineno: int):
    """One NDJSON line as an import item (see lifecycle.import_batch); ValueError if it is not
    one, with a message saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object (an action, or {\"logs_of\": uuid, \"logs\": ...})")
    if "logs_of" in data:
        if set(data) - {"logs_of", "logs"}:
            raise ValueError("a logs_of line has only the keys logs_of and logs")
        return ("logs", lineno, _uuid(data["logs_of"], "logs_of"), _load_logs(data.get("logs")))
    record = _load_action(data)
    edges = _load_edges(data.get("parents", []), record["object"])
    return ("action", lineno, record, edges, _load_logs(data.get("logs", [])))


def _uuid(value, name: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"{name}: {value!r} is not a uuid") from None


class ImportSummary:
    def __init__(self):
        self.imported = self.skipped = self.lines = 0
        self.errors: list[tuple[int, str]] = []

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
        for lineno, error in sorted(self.errors)[:MAX_ERRORS_SHOWN]:
            text += f"\n  line {lineno}: {error}"
        if len(self.errors) > MAX_ERRORS_SHOWN:
            text += f"\n  ... and {len(self.errors) - MAX_ERRORS_SHOWN:,} more"
        if self.errors:
            text += ("\nfix those lines and run the same import again: what was imported is "
                     "skipped the second time")
        return text


async def import_file(store, stream, size: int | None = None, progress: Progress | None = None,
                      batch_actions: int = IMPORT_BATCH_ACTIONS,
                      batch_lines: int = IMPORT_BATCH_LINES) -> ImportSummary:
    """Import NDJSON from the binary stream `stream`, batch by batch. One batch is written while
    the next is parsed; batches go to the writer in file order, so a logs_of line always finds
    an action from an earlier line already committed."""
    summary = ImportSummary()
    batch, batch_size, consumed = [], 0, 0
    writing = None

    async def written():
        nonlocal writing
        if writing is not None:
            summary.add(await writing)
            writing = None
            if progress is not None:
                progress.update(consumed, f"{summary.imported:,} imported, {summary.skipped:,} "
                                          f"skipped, {len(summary.errors):,} errors")

    async def flush():
        nonlocal batch, batch_size, writing
        await written()
        if batch:
            writing = asyncio.ensure_future(store._write(lifecycle.import_batch, batch))
        batch, batch_size = [], 0

    try:
        for lineno, raw in enumerate(stream, 1):
            consumed += len(raw)
            if not raw.strip():
                continue
            try:
                item = parse_line(raw.decode("utf-8"), lineno)
            except (ValueError, UnicodeDecodeError) as err:
                summary.errors.append((lineno, str(err)))
                continue
            batch.append(item)
            batch_size += len(item[-1])
            if len(batch) >= batch_actions or batch_size >= batch_lines:
                await flush()
        await flush()
        await written()
    finally:
        if writing is not None:   # stopped by an error: let the batch in flight finish
            await asyncio.gather(writing, return_exceptions=True)
    if progress is not None:
        progress.finish(consumed)
    return summary


def cmd_import(args) -> int:
    path = _database(args, must_exist=False)

    async def run(stream, size):
        async with Store(path) as store:
            progress = Progress("importing", size, "bytes")
            return await import_file(store, stream, size, progress)

    if args.file == "-":
        summary = asyncio.run(run(sys.stdin.buffer, None))
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as err:
            raise AuditdError(f"cannot read {args.file}: {err.strerror}; give the path of a "
                              "file written by 'auditd export'") from None
        with stream:
            summary = asyncio.run(run(stream, os.fstat(stream.fileno()).st_size or None))
    _say(summary.text())
    return 1 if summary.errors else 0


# ---------------------------------------------------------------------------- purge and retention

async def purge_before(store, cut: int, progress: Progress | None = None) -> tuple[int, int]:
    def report(actions, lines):
        if progress is not None:
            progress.update(actions, f"{lines:,} log lines")
    return await lifecycle.purge(store, cut, on_progress=report)


def cmd_purge(args) -> int:
    path = _database(args)
    when = dates.format_iso(args.before)

    async def run(store):
        actions, lines = await lifecycle.count_purgeable(store, args.before)
        if args.dry_run:
            _say(f"would remove {actions:,} final actions ended before {when} "
                 f"and their {lines:,} log lines (nothing removed: --dry-run)")
            return 0
        progress = Progress("purging", actions, "actions")
        removed, removed_lines = await purge_before(store, args.before, progress)
        progress.finish(removed, f"{removed_lines:,} log lines")
        _say(f"removed {removed:,} final actions (Success, Failed, Canceled) ended before {when} "
             f"and their {removed_lines:,} log lines")
        return 0

    async def main():
        async with Store(path) as store:
            return await run(store)
    return asyncio.run(main())


class Retention:
    """Applies `retention_days` every `interval` seconds, the first time at start; `run_now()`
    asks for a pass and returns once a pass that started after the request has finished."""

    def __init__(self, store, days: int, interval: float = RETENTION_INTERVAL):
        self.store, self.days, self.interval = store, days, interval
        self.started = self.finished = 0
        self.removed = 0
        self._wake = asyncio.Event()
        self._finished = asyncio.Condition()

    async def run_now(self) -> int:
        """Runs a pass soon and waits for it; returns how many actions retention removed so far."""
        target = self.started + 1
        self._wake.set()
        async with self._finished:
            await self._finished.wait_for(lambda: self.finished >= target)
        return self.removed

    async def run_once(self) -> tuple[int, int]:
        cut = dates.now() - self.days * DAY
        actions, lines = await lifecycle.purge(self.store, cut)
        if actions or lines:
            log.info("retention: removed %d final actions ended before %s and %d log lines",
                     actions, dates.format_iso(cut), lines)
        self.removed += actions
        return actions, lines

    async def run(self):
        while True:
            self._wake.clear()
            self.started += 1
            try:
                await self.run_once()
            except AuditdError as err:   # e.g. the database refused the write: try next time
                log.error("retention pass failed: %s", err.message)
            async with self._finished:
                self.finished += 1
                self._finished.notify_all()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass


RETENTION = web.AppKey("retention", Retention)


async def _retention_context(app: web.Application):
    days = app[keys.CONFIG].retention_days
    if not days or days <= 0:
        yield
        return
    retention = app[RETENTION] = Retention(app[keys.STORE], days)
    task = asyncio.create_task(retention.run(), name="auditd-retention")
    log.info("retention: final actions are removed %d days after they end", days)
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def setup(app):
    """The retention task runs while the server does (after the store opens, before it closes)."""
    app.cleanup_ctx.append(_retention_context)


# ---------------------------------------------------------------------------- backup and check

def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e5 else f"{nbytes:,} bytes"


def cmd_backup(args) -> int:
    path = _database(args)
    target = Path(args.path)
    if target.is_dir():
        raise AuditdError(f"{target} is a directory: give the backup file's path, "
                          f"e.g. {target / 'auditd-backup.db'}")
    if target.exists() and not args.force:
        raise AuditdError(f"{target} already exists: choose another path, or add --force to "
                          "replace it")
    if target.resolve() == Path(path).resolve():
        raise AuditdError("the backup path is the database itself: choose another path")
    _say(f"backing up {path} ({_size(Path(path).stat().st_size)}) to {target} ...")
    try:
        summary = lifecycle.backup(path, str(target))
    except sqlite3.Error as err:
        raise AuditdError(f"backup failed: {err}; nothing was written to {target}. "
                          f"Run 'auditd check --db {path}' to look at the database") from None
    except OSError as err:
        raise AuditdError(f"backup failed: {err}; nothing was written to {target}: "
                          "check the directory exists and has space") from None
    counts = summary["counts"]
    print(f"wrote {target}: {_size(target.stat().st_size)}, schema version "
          f"{summary['schema_version']}, {counts['actions']:,} actions, "
          f"{counts['action_logs']:,} log lines, {counts['users']:,} users")
    return 0


def cmd_check(args) -> int:
    path = _database(args)
    try:
        report = lifecycle.check(path)
    except sqlite3.Error as err:
        report = {"problems": [f"the database cannot be read: {err}"], "schema_version": None,
                  "counts": {}, "states": {}}
    print(f"database: {path} ({_size(Path(path).stat().st_size)})")
    print(f"schema version: {report['schema_version']} (this auditd: {lifecycle.SCHEMA_VERSION})")
    counts = report["counts"]
    if counts.get("actions") is not None:
        states = ", ".join(f"{n:,} {s}" for s, n in report["states"].items() if n)
        print(f"actions: {counts['actions']:,}" + (f" ({states})" if states else ""))
        print(f"log lines: {counts['action_logs']:,}")
        print(f"users: {counts['users']:,}, organizations: {counts['orgs']:,}, "
              f"objects: {counts['objects']:,}")
    if not report["problems"]:
        print("ok: integrity, foreign keys and counts check out")
        return 0
    for problem in report["problems"]:
        print(f"problem: {problem}")
    print("the database is damaged: stop the server, restore the latest backup (README: Backup and "
          "restore), or save what is readable with 'auditd export' into a new database with "
          "'auditd import'")
    return 1


# ---------------------------------------------------------------------------- the commands

def register_commands(commands):
    """export, import, purge, backup and check."""
    from .cli import add_db_options as _add_db

    export_cmd = commands.add_parser(
        "export", help="write actions and their log lines as NDJSON or CSV",
        description="Stream actions, oldest first, to stdout or a file. NDJSON carries everything "
                    "(log lines, namespace, object graph) and is what 'auditd import' reads; CSV "
                    "has one row per action. Dates: " + dates.ACCEPTED_FORMATS + ".")
    export_cmd.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    export_cmd.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export_cmd.add_argument("--state", action="append", choices=STATES,
                            help="only actions in this state (repeat for several)")
    export_cmd.add_argument("--namespace", action="append", metavar="NAME",
                            help="only this namespace's actions (repeat for several)")
    export_cmd.add_argument("--since", type=_date, metavar="DATE",
                            help="only actions that started at or after DATE")
    export_cmd.add_argument("--until", type=_date, metavar="DATE",
                            help="only actions that started before DATE")
    _add_db(export_cmd)
    export_cmd.set_defaults(func=cmd_export)

    import_cmd = commands.add_parser(
        "import", help="load an NDJSON export (actions already present are skipped)",
        description="Load a file written by 'auditd export' (NDJSON; '-' reads stdin). Actions "
                    "are matched by uuid, so importing the same file twice adds nothing. Works "
                    "while the server runs.")
    import_cmd.add_argument("file", metavar="FILE")
    _add_db(import_cmd)
    import_cmd.set_defaults(func=cmd_import)

    purge_cmd = commands.add_parser(
        "purge", help="remove final actions that ended before a date, with their log lines",
        description="Remove Success, Failed and Canceled actions whose end date is before DATE, "
                    "with their log lines. Pending, In progress and Canceling actions are never "
                    "removed. Dates: " + dates.ACCEPTED_FORMATS + ".")
    purge_cmd.add_argument("--before", type=_date, required=True, metavar="DATE")
    purge_cmd.add_argument("--dry-run", action="store_true",
                           help="only count what would be removed")
    _add_db(purge_cmd)
    purge_cmd.set_defaults(func=cmd_purge)

    backup_cmd = commands.add_parser(
        "backup", help="copy the database consistently, even while the server runs",
        description="Write a consistent copy of the database to PATH (SQLite online backup: "
                    "the server keeps serving). The copy is one self-contained file.")
    backup_cmd.add_argument("path", metavar="PATH")
    backup_cmd.add_argument("--force", action="store_true", help="replace PATH if it exists")
    _add_db(backup_cmd)
    backup_cmd.set_defaults(func=cmd_backup)

    check_cmd = commands.add_parser(
        "check", help="check the database's integrity and show its schema version and counts",
        description="Run SQLite's integrity and foreign key checks and auditd's own count checks; "
                    "exit 1 when anything is wrong.")
    _add_db(check_cmd)
    check_cmd.set_defaults(func=cmd_check)
