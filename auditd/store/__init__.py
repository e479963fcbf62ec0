"""The store: every SQL statement auditd runs, and the SQLite connections that run them.

The rest of auditd speaks in actions, users and log lines, never in rows. Moving to PostgreSQL means
writing another class with the same coroutines.

- Writes go through the one write connection (`_Writer`). Every write waiting when a transaction
  starts joins it, each in its own savepoint (consecutive records share one, and are retried one
  by one if any of them fails); the transaction commits once (group commit) and only then is each
  caller answered. A write that fails rolls back to its savepoint and changes nothing; the others
  in the batch still commit.
- Reads that touch a bounded number of rows run on a connection used inline on the event loop;
  reads whose cost depends on the data use a small pool of aiosqlite connections. Both are in
  autocommit mode: a read never waits for the writer, and no read transaction stays open between
  statements (WAL checkpoints are not held up).
- Each action's wire JSON is rendered once per write (`actions.doc`), so a page of actions is a
  join of stored fragments, and `action_counts`, kept by triggers, makes `total_count` cheap.
- After each commit the writer hands the batch's notes (actions created or changed, log lines
  appended) to `on_commit` on the event loop: the live streams are fed from there.
"""
import asyncio
import functools
import hashlib
import json
import logging
import operator
import os
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from .. import dates
from ..errors import Conflict, InvalidRequest, NotFound, SchemaVersionError, Unavailable
from ..schemas import (CANCELABLE_STATES, FINAL_STATES, STATES, TRANSITIONS, render_action)
from ..uris import normalize_object_uri

log = logging.getLogger("auditd.store")

SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
# MIGRATIONS[v] turns a version-v database into version v+1; schema.sql is always the newest.
MIGRATIONS: dict[int, str] = {
    # 2: object filters check the namespace from the index, not from each row
    1: "DROP INDEX actions_by_object; "
       "CREATE INDEX actions_by_object ON actions (object_id, namespace, start_ts, id)",
}

ROLES = ("user", "producer", "admin")
MAX_BATCH = 512

_ACTION_COLUMNS = ("id", "uuid", "namespace", "state", "action", "method", "path", "object",
                   "object_id", "user", "user_agent", "ip", "location", "body", "start_ts",
                   "end_ts", "is_user_action", "cancelable", "retriable", "log_count")
_SELECT_ACTION = "SELECT " + ", ".join(_ACTION_COLUMNS) + " FROM actions"


def hash_key(key: str) -> str:
    """API keys are 256-bit random strings, so a plain SHA-256 is a sound way to keep them."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """256 random bits in A-Z a-z 0-9 _ -, never starting with '-' (a command line would take
    `--apikey -abc...` for an option)."""
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and the namespaces it may see (None: every namespace)."""
    name: str
    role: str
    namespaces: frozenset | None


@dataclass
class ListQuery:
    """A validated list request; `namespaces` None means every namespace."""
    namespaces: frozenset | None
    limit: int
    offset: int = 0
    newest_first: bool = True
    filters: dict = field(default_factory=dict)
    cursor: tuple[int, int] | None = None   # (start_ts, id) of the row before this page


@dataclass
class Page:
    total: int
    docs: list[bytes]                 # each Action's JSON, UTF-8
    last: tuple[int, int] | None      # (start_ts, id) of the page's last row: the next cursor


# ---------------------------------------------------------------------------- opening a database

class WriterConnection(sqlite3.Connection):
    """The write connection, with what it has learned about the object graph: object URIs to ids
    and the child -> parent edges that exist. Objects and edges are only ever added (a reset
    removes them, and clears this), so what was seen committed stays true; `forget` is called
    whenever something the writer did is rolled back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.object_ids: dict[str, int] = {}
        self.object_edges: set[tuple[int, int]] = set()

    def forget(self):
        self.object_ids.clear()
        self.object_edges.clear()


OBJECT_CACHE_ENTRIES = 100_000


def _connect(path: str, synchronous: str = "FULL", factory=sqlite3.Connection) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10,
                           factory=factory)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def prepare_database(path: str) -> int:
    """Create or migrate the schema; refuse a database from a newer auditd. Returns the version."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise SchemaVersionError(f"{path} is not an SQLite database ({err})") from None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} has schema version {version}, but this auditd knows versions up to "
                f"{SCHEMA_VERSION}: run a newer auditd, or restore a backup made by this one")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise SchemaVersionError(
                    f"{path} is an SQLite database but not auditd's (no schema version): "
                    "point --db at a new file")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise SchemaVersionError(f"{path}: could not switch the database to WAL mode")
        if version == 0:
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA_FILE.read_text()
                               + f"; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            return SCHEMA_VERSION
        while version < SCHEMA_VERSION:
            log.info("migrating %s from schema version %d to %d", path, version, version + 1)
            conn.executescript("BEGIN IMMEDIATE;" + MIGRATIONS[version]
                               + f"; PRAGMA user_version = {version + 1}; COMMIT;")
            version += 1
        return version
    finally:
        conn.close()


# ---------------------------------------------------------------------------- the writer

class _Writer:
    """The one write connection and its group commit.

    Jobs are `fn(conn, *args)` returning `(result, notes)`. While one transaction commits, new
    jobs wait; the next transaction takes all of them, each in its own savepoint, and commits once.
    A job with a bulk form (`fn.bulk(conn, [args, ...])` returning one `(result, notes)` each) runs
    it for a run of consecutive calls, in one savepoint; if that raises, they run one by one.
    The waits (BEGIN IMMEDIATE for the write lock, COMMIT for the fsync) run on the writer's own
    thread; ordinary jobs run on the event loop between them, because handing the GIL back and
    forth between two threads for every statement cost more than the statements themselves
    (measured: about 25% more records/s this way). Heavy jobs (bulk imports, purges, resets) run
    on the writer's thread too, so they never stall the loop.
    """

    def __init__(self, path: str, synchronous: str, group_commit: bool, deliver):
        self.path, self.synchronous = path, synchronous
        self.max_batch = MAX_BATCH if group_commit else 1
        self.deliver = deliver          # called on the loop with [(future, ok, result)], notes
        self.loop = asyncio.get_running_loop()
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditd-writer")
        self.conn: sqlite3.Connection | None = None
        self.pending: list = []
        self.temp_store = "DEFAULT"
        self.flushing: asyncio.Task | None = None
        self.commits = 0

    async def _in_thread(self, fn, *args):
        return await self.loop.run_in_executor(self.thread, fn, *args)

    async def open(self):
        self.conn = await self._in_thread(_connect, self.path, self.synchronous, WriterConnection)

    def submit(self, fn, args, heavy: bool) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((fn, args, heavy, future))
        if self.flushing is None:
            self.flushing = self.loop.create_task(self._flush())
        return future

    async def close(self):
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        await self._in_thread(self.conn.close)
        self.thread.shutdown(wait=True)

    async def _flush(self):
        try:
            while self.pending:
                batch = self.pending[:self.max_batch]
                del self.pending[:self.max_batch]
                answers, notes = await self._run_batch(batch)
                self.deliver(answers, notes)
        finally:
            self.flushing = None

    def _run_job(self, fn, args):
        conn = self.conn
        conn.execute("SAVEPOINT job")
        try:
            result, job_notes = fn(conn, *args)
        except Exception as err:   # noqa: BLE001 - handed to the caller
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            conn.forget()
            return False, err, ()
        conn.execute("RELEASE job")
        return True, result, job_notes

    @staticmethod
    def _bulk_run(batch, at: int) -> int:
        """How many jobs from `at` on are the same light job with a bulk form (at least 1)."""
        fn = batch[at][0]
        if getattr(fn, "bulk", None) is None or batch[at][2]:
            return 1
        end = at + 1
        while end < len(batch) and batch[end][0] is fn and not batch[end][2]:
            end += 1
        return end - at

    def _run_bulk(self, bulk, group, answers, notes) -> bool:
        """Run a group of the same job in its bulk form, in one savepoint. False when it raised:
        nothing of it is left, and the jobs are then run one by one, each meeting its own error."""
        conn = self.conn
        conn.execute("SAVEPOINT bulk")
        try:
            results = bulk(conn, [args for _, args, _, _ in group])
        except Exception:   # noqa: BLE001 - the jobs run again one at a time
            conn.execute("ROLLBACK TO bulk")
            conn.execute("RELEASE bulk")
            conn.forget()
            return False
        conn.execute("RELEASE bulk")
        for (_, _, _, future), (result, job_notes) in zip(group, results):
            answers.append((future, True, result))
            notes.extend(job_notes)
        return True

    def _begin(self, journal_in_memory: bool):
        # Each job's SAVEPOINT keeps the pages it changes in a statement journal, which SQLite
        # spills to a temporary file past 64 KiB: two writes per page, more than the WAL itself
        # takes (measured). In memory it is a copy. A batch with a heavy job (a reset may touch
        # every page) keeps it in a file.
        mode = "MEMORY" if journal_in_memory else "DEFAULT"
        if mode != self.temp_store:
            self.conn.execute(f"PRAGMA temp_store = {mode}")
            self.temp_store = mode
        self.conn.execute("BEGIN IMMEDIATE")

    async def _run_batch(self, batch):
        answers, notes = [], []
        try:
            await self._in_thread(self._begin, not any(heavy for _, _, heavy, _ in batch))
            at = 0
            while at < len(batch):
                run = batch[at:at + self._bulk_run(batch, at)]
                at += len(run)
                if len(run) > 1 and self._run_bulk(run[0][0].bulk, run, answers, notes):
                    continue
                for fn, args, heavy, future in run:
                    if heavy:
                        ok, result, job_notes = await self._in_thread(self._run_job, fn, args)
                        self.conn.forget()   # a reset removes objects; an import is rare
                    else:
                        ok, result, job_notes = self._run_job(fn, args)
                    answers.append((future, ok, result))
                    notes.extend(job_notes)
            await self._in_thread(self.conn.execute, "COMMIT")
            self.commits += 1
        except sqlite3.Error as err:
            log.error("write transaction failed: %s", err)
            self.conn.forget()
            if self.conn.in_transaction:
                await self._in_thread(self.conn.execute, "ROLLBACK")
            failure = Unavailable(f"the database refused the write ({err}); nothing was saved: "
                                  "check the disk and the database file, then retry")
            return [(future, False, failure) for *_, future in batch], []
        return answers, notes


def heavy_job(fn):
    """Mark a writer job that may touch many rows: it runs on the writer's thread."""
    fn.heavy = True
    return fn


def _deliver_answers(answers):
    for future, ok, result in answers:
        if future.done():
            continue
        if ok:
            future.set_result(result)
        else:
            future.set_exception(result)


# ---------------------------------------------------------------------------- the store

class Store:
    def __init__(self, path: str, synchronous: str = "FULL", group_commit: bool = True,
                 readers: int = 3):
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.group_commit = group_commit
        self.reader_count = readers
        self.on_commit = None           # callable(notes) run on the loop after each commit
        self.schema_version = None
        self._writer: _Writer | None = None
        self._readers: asyncio.Queue | None = None
        self._reader_conns: list = []
        self._inline: sqlite3.Connection | None = None
        self._cache: dict = {}
        self._cache_version = None
        self._cache_checked = float("-inf")

    # -- lifecycle

    async def open(self):
        self.schema_version = await asyncio.to_thread(prepare_database, self.path)
        self._writer = _Writer(self.path, self.synchronous, self.group_commit, self._delivered)
        await self._writer.open()
        self._readers = asyncio.Queue()
        for _ in range(self.reader_count):
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            await conn.execute("PRAGMA query_only = 1")
            await conn.execute("PRAGMA busy_timeout = 10000")
            self._reader_conns.append(conn)
            self._readers.put_nowait(conn)
        # Short, bounded reads (credentials, one action, a first page, a chunk of log lines) run
        # on the loop itself: cheaper than a thread hop, and no GIL hand-over between threads.
        self._inline = _connect(self.path)
        self._inline.execute("PRAGMA query_only = 1")
        return self

    async def close(self):
        if self._writer is not None:
            writer, self._writer = self._writer, None   # no new writes from here on
            await writer.close()
        for conn in self._reader_conns:
            await conn.close()
        self._reader_conns = []
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    async def __aenter__(self):
        return await self.open()

    async def __aexit__(self, *exc):
        await self.close()

    def _delivered(self, answers, notes):
        self._cache_checked = float("-inf")   # what was cached may have changed: look again
        if notes and self.on_commit is not None:
            try:
                self.on_commit(notes)
            except Exception:   # noqa: BLE001 - a stream bug must not lose the answers
                log.exception("delivering committed changes to the streams failed")
        _deliver_answers(answers)

    async def _write(self, fn, *args, heavy: bool = False):
        """Run `fn(conn, *args)` in the next group commit; its result once committed. Heavy jobs
        (or functions marked with `heavy_job`) run off the event loop."""
        if self._writer is None:
            raise Unavailable("the store is closed: the server is shutting down")
        return await self._writer.submit(fn, args, heavy or getattr(fn, "heavy", False))

    def _cached(self, key, compute):
        """`compute()`, remembered until the database changes. For lookups that are read far more
        often than anything is written (credentials, related-object sets).

        This store's own commits clear it before their callers are answered. A commit by another
        process (the auditd CLI adding a user, rotating a key) moves SQLite's data_version, which
        is looked at at most once every CACHE_RECHECK seconds: such a change shows within that."""
        now = time.monotonic()
        if now - self._cache_checked >= CACHE_RECHECK:
            self._cache_checked = now
            version = self._inline.execute("PRAGMA data_version").fetchone()[0]
            if version != self._cache_version:
                self._cache.clear()
                self._cache_version = version
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = compute()
            return value

    def _read_inline(self, sql: str, params=()):
        """For statements that seek an index and return a bounded number of rows."""
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:
            log.error("read failed: %s", err)
            raise Unavailable(f"the database could not be read ({err}); retry shortly") from None

    async def _read(self, sql: str, params=()):
        """For statements whose cost depends on the data: off the loop, on the reader pool."""
        conn = await self._readers.get()
        try:
            return await conn.execute_fetchall(sql, params)
        except sqlite3.OperationalError as err:
            log.error("read failed: %s", err)
            raise Unavailable(f"the database could not be read ({err}); retry shortly") from None
        finally:
            self._readers.put_nowait(conn)

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # -- users, organizations, credentials

    def principal(self, name: str, key: str) -> Principal | None:
        """The user whose name and key these are, or None. Constant-time in the key."""
        known = self._cached(("user", name), lambda: self._load_principal(name))
        given = hash_key(key)
        stored = known[0] if known else "0" * 64
        if not secrets.compare_digest(given, stored) or not known:
            return None
        return known[1]

    def _load_principal(self, name: str) -> tuple[str, Principal] | None:
        """(key hash, Principal) of a user, or None."""
        rows = self._read_inline(
            "SELECT role, key_hash, (SELECT group_concat(o.name, char(31)) FROM org_members m "
            "JOIN orgs o ON o.id = m.org_id WHERE m.user_id = users.id) "
            "FROM users WHERE name = ?", (name,))
        if not rows:
            return None
        role, key_hash, orgs = rows[0]
        namespaces = None if role != "user" else \
            frozenset([name, *(orgs.split("\x1f") if orgs else ())])
        return key_hash, Principal(name, role, namespaces)

    async def add_user(self, name: str, role: str = "user") -> str:
        """Create a user; returns its API key, which is not kept anywhere."""
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of: {', '.join(ROLES)}")
        key = new_key()
        await self._write(_add_user, name, role, hash_key(key))
        return key

    async def rotate_key(self, name: str) -> str:
        key = new_key()
        await self._write(_rotate_key, name, hash_key(key))
        return key

    async def remove_user(self, name: str):
        await self._write(_remove_user, name)

    async def list_users(self) -> list[dict]:
        rows = await self._read(
            "SELECT u.name, u.role, u.created_at, group_concat(o.name, ',') FROM users u "
            "LEFT JOIN org_members m ON m.user_id = u.id LEFT JOIN orgs o ON o.id = m.org_id "
            "GROUP BY u.id ORDER BY u.name")
        return [{"name": r[0], "role": r[1], "created_at": r[2],
                 "orgs": sorted(r[3].split(",")) if r[3] else []} for r in rows]

    async def count_users(self) -> int:
        return (await self._read("SELECT count(*) FROM users"))[0][0]

    async def add_org(self, name: str):
        await self._write(_add_org, name)

    async def add_member(self, org: str, user: str):
        await self._write(_set_member, org, user, True)

    async def remove_member(self, org: str, user: str):
        await self._write(_set_member, org, user, False)

    async def list_orgs(self) -> list[dict]:
        rows = await self._read(
            "SELECT o.name, group_concat(u.name, ',') FROM orgs o "
            "LEFT JOIN org_members m ON m.org_id = o.id LEFT JOIN users u ON u.id = m.user_id "
            "GROUP BY o.id ORDER BY o.name")
        return [{"name": r[0], "members": sorted(r[1].split(",")) if r[1] else []} for r in rows]

    # -- actions: writes

    async def record_action(self, fields: dict) -> dict:
        """Record a new action; `fields` is a complete action (see `new_action`)."""
        return await self._write(_insert_action, fields)

    async def change_state(self, uuid: str, state: str, namespaces) -> dict:
        return await self._write(_change_state, uuid.lower(), state, namespaces)

    async def cancel(self, uuid: str, namespaces) -> dict:
        return await self._write(_cancel, uuid.lower(), namespaces)

    async def retry(self, uuid: str, namespaces, caller: dict) -> dict:
        return await self._write(_retry, uuid.lower(), namespaces, caller)

    async def append_logs(self, uuid: str, lines: list, namespaces) -> int:
        """Append [(ts, stream_type, line)] to an action's log, all or nothing."""
        return await self._write(_append_logs, uuid.lower(), lines, namespaces,
                                 heavy=len(lines) > 1000)

    # -- actions: reads

    async def get_action_doc(self, uuid: str, namespaces) -> str:
        rows = self._read_inline("SELECT doc, namespace FROM actions WHERE uuid = ?",
                                 (uuid.lower(),))
        if not rows or (namespaces is not None and rows[0][1] not in namespaces):
            raise NotFound(f"No action with uuid {uuid}")
        return rows[0][0]

    async def get_action(self, uuid: str, namespaces) -> dict:
        rows = self._read_inline(_SELECT_ACTION + " WHERE uuid = ?", (uuid.lower(),))
        if not rows or (namespaces is not None and rows[0][2] not in namespaces):
            raise NotFound(f"No action with uuid {uuid}")
        return dict(zip(_ACTION_COLUMNS, rows[0]))

    async def list_actions(self, query: ListQuery) -> Page:
        """One page of Action JSON and the total count, read in one statement (one snapshot)."""
        object_ids = None
        if "object" in query.filters:
            object_ids = self._object_ids(query.filters["object"],
                                          query.filters.get("include_related", False))
            if not object_ids:
                return Page(0, [], None)
        sql, params = _list_sql(query, object_ids)
        if _is_bounded(query, object_ids):
            rows = self._read_inline(sql, params)
        else:
            rows = await self._read(sql, params)
        total = next(r[1] for r in rows if r[0] is None)   # the count's row: docs are never NULL
        page = [r for r in rows if r[0] is not None]
        page.sort(key=_page_order, reverse=query.newest_first)
        return Page(total, [r[0] for r in page], page[-1][2:] if page else None)

    def _object_ids(self, uri: str, include_related: bool) -> list[int]:
        """The object's id, with its ancestors' and descendants' when related ones are wanted."""
        rows = self._read_inline("SELECT id FROM objects WHERE uri = ?",
                                 (normalize_object_uri(uri),))
        if not rows or not include_related:
            return [rows[0][0]] if rows else []
        return self._cached(("related", rows[0][0]), lambda: [
            r[0] for r in self._read_inline(_RELATED_SQL, (rows[0][0], rows[0][0]))])

    async def read_logs(self, action_id: int, after_seq: int, limit: int) -> list[tuple]:
        """[(seq, ts, stream_type, line)] after `after_seq`, oldest first."""
        return self._read_inline(
            "SELECT seq, ts, stream_type, line FROM action_logs "
            "WHERE action_id = ? AND seq > ? ORDER BY seq LIMIT ?", (action_id, after_seq, limit))

    def lineage(self, action: dict) -> list[str]:
        """The action's object, then that object's ancestors' URIs, nearest first."""
        if not action["object"]:
            return []
        if action["object_id"] is None:
            return [action["object"]]
        return [action["object"], *(r[0] for r in self._read_inline(_ANCESTORS_SQL,
                                                                   (action["object_id"],)))]

    async def counts_by_state(self) -> dict[str, int]:
        rows = await self._read("SELECT state, sum(n) FROM action_counts GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: n for state, n in rows})
        return counts

    async def database_size(self) -> int:
        rows = await self._read("SELECT page_count * page_size FROM pragma_page_count(), "
                                "pragma_page_size()")
        wal = Path(self.path + "-wal")
        return rows[0][0] + (wal.stat().st_size if wal.exists() else 0)

    async def ping(self):
        await self._read("SELECT 1 FROM users LIMIT 1")


# ---------------------------------------------------------------------------- building a new action

_RANDOM = bytearray()                             # urandom bytes not used yet
os.register_at_fork(after_in_child=_RANDOM.clear)   # a child never repeats its parent's uuids


def new_uuid() -> str:
    """A random (version 4) UUID as text: what str(uuid.uuid4()) gives, for a quarter of the cost
    (one urandom call per 256 uuids)."""
    if len(_RANDOM) < 16:
        _RANDOM[:] = os.urandom(4096)
    raw = _RANDOM[-16:]
    del _RANDOM[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40     # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80     # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_action(**fields) -> dict:
    """A complete action record from a producer's fields, with the defaults filled in."""
    now = dates.now()
    state = fields.get("state", "In progress")
    record = {
        "uuid": new_uuid(),
        "namespace": fields.get("namespace") or fields["user"],
        "state": state,
        "action": fields["action"],
        "method": fields.get("method", ""),
        "path": fields.get("path", ""),
        "object": fields.get("object", ""),
        "user": fields["user"],
        "user_agent": fields.get("user_agent", ""),
        "ip": fields.get("ip", ""),
        "location": fields.get("location", ""),
        "body": fields.get("body"),
        "start_ts": fields.get("start_date", now),
        "end_ts": fields.get("end_date", now) if state in FINAL_STATES else None,
        "is_user_action": fields.get("is_user_action", True),
        "cancelable": fields.get("can_be_canceled", True),
        "retriable": fields.get("can_be_retried", True),
        "parents": fields.get("parents", []),
    }
    if record["end_ts"] is not None and record["end_ts"] < record["start_ts"]:
        record["end_ts"] = record["start_ts"]
    return record


# ---------------------------------------------------------------------------- writer jobs
# Each runs on the writer thread inside a savepoint and returns (result, notes).

def _add_user(conn, name, role, key_hash):
    if conn.execute("SELECT 1 FROM orgs WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"'{name}' is already an organization: users and organizations share "
                       "namespace names")
    try:
        conn.execute("INSERT INTO users (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)",
                     (name, role, key_hash, dates.now()))
    except sqlite3.IntegrityError:
        raise Conflict(f"user '{name}' already exists: use 'auditd user rotate-key {name}' "
                       "for a new key") from None
    return None, []


def _rotate_key(conn, name, key_hash):
    if conn.execute("UPDATE users SET key_hash = ? WHERE name = ?", (key_hash, name)).rowcount == 0:
        raise NotFound(f"no user '{name}' ('auditd user list' shows them)")
    return None, []


def _remove_user(conn, name):
    if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no user '{name}' ('auditd user list' shows them)")
    return None, []


def _add_org(conn, name):
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"'{name}' is already a user: users and organizations share namespace names")
    try:
        conn.execute("INSERT INTO orgs (name, created_at) VALUES (?, ?)", (name, dates.now()))
    except sqlite3.IntegrityError:
        raise Conflict(f"organization '{name}' already exists") from None
    return None, []


def _set_member(conn, org, user, member: bool):
    org_row = conn.execute("SELECT id FROM orgs WHERE name = ?", (org,)).fetchone()
    if org_row is None:
        raise NotFound(f"no organization '{org}' (create it with 'auditd org add {org}')")
    user_row = conn.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()
    if user_row is None:
        raise NotFound(f"no user '{user}' (create it with 'auditd user add {user}')")
    if member:
        conn.execute("INSERT OR IGNORE INTO org_members (org_id, user_id) VALUES (?, ?)",
                     (org_row[0], user_row[0]))
    elif conn.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?",
                      (org_row[0], user_row[0])).rowcount == 0:
        raise NotFound(f"'{user}' is not a member of '{org}'")
    return None, []


def _object_id(conn, uri: str):
    """The id of the object a URI names (created when new), or None for no URI."""
    if not uri:
        return None
    known = getattr(conn, "object_ids", None)
    if known is not None and uri in known:
        return known[uri]
    normalized = normalize_object_uri(uri)
    if not normalized:
        return None
    row = conn.execute("SELECT id FROM objects WHERE uri = ?", (normalized,)).fetchone()
    object_id = row[0] if row else \
        conn.execute("INSERT INTO objects (uri) VALUES (?)", (normalized,)).lastrowid
    if known is not None:
        if len(known) >= OBJECT_CACHE_ENTRIES:
            conn.forget()
        known[uri] = object_id
    return object_id


def _add_parent(conn, child: int, parent: int):
    edges = getattr(conn, "object_edges", None)
    if edges is not None and (child, parent) in edges:
        return
    conn.execute("INSERT OR IGNORE INTO object_parents (child_id, parent_id) VALUES (?, ?)",
                 (child, parent))
    if edges is not None:
        edges.add((child, parent))


_ANCESTORS_SQL = (
    "WITH RECURSIVE up(id, depth) AS (SELECT ?, 0 UNION "
    "  SELECT p.parent_id, up.depth + 1 FROM object_parents p JOIN up ON p.child_id = up.id "
    "  WHERE up.depth < 32) "
    "SELECT o.uri FROM up JOIN objects o ON o.id = up.id WHERE up.depth > 0 "
    "GROUP BY up.id ORDER BY min(up.depth), up.id")


def _action_note(conn, kind: str, action: dict):
    # The event's parents are looked up when it is delivered, and only if somebody listens.
    return ("action", kind, action)


_INSERTED = [c for c in _ACTION_COLUMNS if c != "id"] + ["doc"]
_INSERT_ACTION = (f"INSERT INTO actions ({', '.join(_INSERTED)}) "
                  f"VALUES ({', '.join('?' * len(_INSERTED))})")
_INSERT_ACTIONS = (f"INSERT INTO actions (id, {', '.join(_INSERTED)}) "
                   f"VALUES (?, {', '.join('?' * len(_INSERTED))})")


def _prepared_action(conn, record: dict) -> dict:
    """The row for a new action, its object and parent edges recorded, its JSON rendered."""
    action = {k: v for k, v in record.items() if k != "parents"}
    action["object_id"] = _object_id(conn, action["object"])
    child = action["object_id"]
    for parent_uri in record.get("parents", ()):
        parent = _object_id(conn, parent_uri)
        if parent is None or parent == child:
            continue
        if child is not None:
            _add_parent(conn, child, parent)
        child = parent
    action["log_count"] = 0
    for flag in ("is_user_action", "cancelable", "retriable"):
        action[flag] = int(bool(action[flag]))
    action["doc"] = render_action(action)
    return action


def _insert_action(conn, record: dict):
    action = _prepared_action(conn, record)
    try:
        action["id"] = conn.execute(_INSERT_ACTION, [action[c] for c in _INSERTED]).lastrowid
    except sqlite3.IntegrityError:
        raise Conflict(f"an action with uuid {action['uuid']} already exists") from None
    return action, [_action_note(conn, "create", action)]


def _insert_actions(conn, jobs: list[tuple]) -> list:
    """`_insert_action` for many records in one statement run (the writer holds the write lock,
    so the ids after the highest are free). Raises on any conflict: the caller then runs the
    records one by one."""
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM actions").fetchone()[0]
    actions = [_prepared_action(conn, record) for (record,) in jobs]
    for offset, action in enumerate(actions):
        action["id"] = first + offset
    conn.executemany(_INSERT_ACTIONS, [[a["id"], *(a[c] for c in _INSERTED)] for a in actions])
    return [(action, [_action_note(conn, "create", action)]) for action in actions]


_insert_action.bulk = _insert_actions   # consecutive records in one batch go in together


def _load(conn, uuid: str, namespaces) -> dict:
    row = conn.execute(_SELECT_ACTION + " WHERE uuid = ?", (uuid,)).fetchone()
    if row is None or (namespaces is not None and row[2] not in namespaces):
        raise NotFound(f"No action with uuid {uuid}")
    return dict(zip(_ACTION_COLUMNS, row))


def _set_state(conn, action: dict, state: str):
    action["state"] = state
    if state in FINAL_STATES:
        action["end_ts"] = max(dates.now(), action["start_ts"])
    action["doc"] = render_action(action)
    conn.execute("UPDATE actions SET state = ?, end_ts = ?, doc = ? WHERE id = ?",
                 (state, action["end_ts"], action["doc"], action["id"]))
    return action, [_action_note(conn, "update", action)]


def _change_state(conn, uuid, state, namespaces):
    action = _load(conn, uuid, namespaces)
    if state not in TRANSITIONS[action["state"]]:
        allowed = TRANSITIONS[action["state"]]
        raise InvalidRequest(
            f"Action {uuid} cannot move from {action['state']} to {state}: "
            + (f"from {action['state']} it can move to {', '.join(allowed)}" if allowed
               else f"{action['state']} is final"))
    return _set_state(conn, action, state)


def _cancel(conn, uuid, namespaces):
    action = _load(conn, uuid, namespaces)
    if action["state"] not in CANCELABLE_STATES:
        raise InvalidRequest(f"Action {uuid} cannot be canceled: it is {action['state']}")
    if not action["cancelable"]:
        raise InvalidRequest(f"Action {uuid} cannot be canceled: its producer marked it "
                             "as not cancelable")
    return _set_state(conn, action, "Canceled" if action["state"] == "Pending" else "Canceling")


def _retry(conn, uuid, namespaces, caller):
    original = _load(conn, uuid, namespaces)
    if original["state"] not in FINAL_STATES:
        raise InvalidRequest(f"Action {uuid} cannot be retried: it is {original['state']} "
                             "(only Success, Failed or Canceled actions can be)")
    if not original["retriable"]:
        raise InvalidRequest(f"Action {uuid} cannot be retried: its producer marked it "
                             "as not retriable")
    record = new_action(
        action=original["action"], method=original["method"], path=original["path"],
        object=original["object"], body=original["body"], namespace=original["namespace"],
        user=caller["user"], ip=caller["ip"], user_agent=caller["user_agent"],
        location=caller["location"], state="Pending", is_user_action=True,
        can_be_canceled=bool(original["cancelable"]), can_be_retried=bool(original["retriable"]))
    return _insert_action(conn, record)


def _append_logs(conn, uuid, lines, namespaces):
    row = conn.execute("SELECT id, namespace, log_count FROM actions WHERE uuid = ?",
                       (uuid,)).fetchone()
    if row is None or (namespaces is not None and row[1] not in namespaces):
        raise NotFound(f"No action with uuid {uuid}")
    action_id, first = row[0], row[2] + 1
    stored = [(action_id, first + i, ts, stream, line) for i, (ts, stream, line) in enumerate(lines)]
    conn.executemany("INSERT INTO action_logs (action_id, seq, ts, stream_type, line) "
                     "VALUES (?, ?, ?, ?, ?)", stored)
    conn.execute("UPDATE actions SET log_count = ? WHERE id = ?", (row[2] + len(lines), action_id))
    return len(lines), [("logs", action_id, [s[1:] for s in stored])]


# ---------------------------------------------------------------------------- list queries

# The object itself, all its ancestors and all its descendants (never its siblings).
_RELATED_SQL = (
    "WITH RECURSIVE up(id) AS (SELECT ? UNION "
    "  SELECT p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id), "
    "down(id) AS (SELECT ? UNION "
    "  SELECT p.child_id FROM object_parents p JOIN down ON p.parent_id = down.id) "
    "SELECT id FROM up UNION SELECT id FROM down")

_COLUMN_FILTERS = {
    "uuid": "uuid = ?", "state": "state = ?", "action": "action = ?", "user": "user = ?",
    "is_user_action": "is_user_action = ?",
    "start_date__gte": "start_ts >= ?", "start_date__lte": "start_ts <= ?",
    "end_date__gte": "end_ts >= ?", "end_date__lte": "end_ts <= ?",
}


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    prefix = prefix.lower()
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


INLINE_MAX_OFFSET = 1000
CACHE_ENTRIES = 4096
CACHE_RECHECK = 0.005   # seconds between two looks at data_version (see Store._cached)
INLINE_MAX_OBJECTS = 256


def _is_bounded(query: ListQuery, object_ids) -> bool:
    """Whether a list query reads a bounded number of rows: the first offset+limit of one index
    range (one namespace or all, state at most, counted by action_counts), or the actions of a few
    objects."""
    if query.offset > INLINE_MAX_OFFSET and query.cursor is None:   # a cursor seeks, never skips
        return False
    if object_ids is not None:
        return len(object_ids) <= INLINE_MAX_OBJECTS
    return (set(query.filters) <= {"state"}
            and (query.namespaces is None or len(query.namespaces) == 1))


_page_order = operator.itemgetter(2, 3)   # (start_ts, id) of a page row


def _list_sql(query: ListQuery, object_ids=None):
    """One statement: a row (NULL, total_count), and one row per Action on the page (its JSON as
    bytes, sent as is, then its start_ts and id), in any order. `object_ids`: the objects whose actions are wanted, when the query
    filters by object. The statement's text depends only on the query's shape and is cached."""
    f = query.filters
    names = sorted(query.namespaces) if query.namespaces is not None else None
    filters = tuple(name for name in _COLUMN_FILTERS if name in f)
    counted = set(f) <= {"state"}   # counted by action_counts, not by scanning actions
    sql = _list_statement(None if names is None else len(names), filters, "uuid__startswith" in f,
                          object_ids is not None, counted, query.newest_first,
                          query.cursor is not None)
    params = [*(names or ()), *(_filter_value(name, f[name]) for name in filters)]
    if "uuid__startswith" in f:
        params.extend(_prefix_bounds(f["uuid__startswith"]))
    if object_ids is not None:
        params.append(json.dumps(object_ids))
    state = [f["state"]] if "state" in f else []
    count_params = [*(names or ()), *state] if counted else params
    page_params = [*params, *query.cursor] if query.cursor is not None else params
    offset = 0 if query.cursor is not None else query.offset
    return sql, [*count_params, *page_params, query.limit, offset]


def _filter_value(name: str, value):
    if name == "uuid":
        return value.lower()
    return int(value) if name == "is_user_action" else value


@functools.lru_cache(maxsize=512)
def _list_statement(namespaces: int | None, filters: tuple, prefix: bool, by_object: bool,
                    counted: bool, newest_first: bool, with_cursor: bool) -> str:
    # With an object filter the object index is the one to use: the others are kept out of the
    # planner's reach (a unary + on a column), or it may walk a whole namespace instead.
    col = (lambda c: "+" + c) if by_object else (lambda c: c)
    in_namespaces = f"IN ({', '.join('?' * namespaces)})" if namespaces is not None else ""
    where = [f"{col('namespace')} {in_namespaces}"] if namespaces is not None else []
    where += [col(_COLUMN_FILTERS[name]) for name in filters]
    if prefix:
        where.append(f"{col('uuid')} >= ? AND {col('uuid')} < ?")
    if by_object:
        where.append("object_id IN (SELECT value FROM json_each(?))")
    clause = (" WHERE " + " AND ".join(where)) if where else ""

    if counted:
        count_where = [f"namespace {in_namespaces}"] if namespaces is not None else []
        count_where += ["state = ?"] if "state" in filters else []
        count_clause = (" WHERE " + " AND ".join(count_where)) if count_where else ""
        count_sql = f"SELECT coalesce(sum(n), 0) FROM action_counts{count_clause}"
    else:
        count_sql = f"SELECT count(*) FROM actions{clause}"

    order = "DESC" if newest_first else "ASC"
    if with_cursor:   # keyset: a deep page costs what the first one does
        where.append(f"(start_ts, id) {'<' if newest_first else '>'} (?, ?)")
    page_clause = (" WHERE " + " AND ".join(where)) if where else ""
    # The page's keys are found first and only its rows are read whole: a sort never carries docs.
    # The page comes back in no particular order (sorting 25 rows again in SQL took a temporary
    # B-tree and a quarter of the statement's time): Store.list_actions puts it in order.
    return (f"SELECT NULL, ({count_sql}), NULL, NULL UNION ALL "
            f"SELECT CAST(a.doc AS BLOB), NULL, k.start_ts, k.id FROM ("
            f"SELECT id, start_ts FROM actions{page_clause} "
            f"ORDER BY start_ts {order}, id {order} LIMIT ? OFFSET ?) AS k "
            f"JOIN actions a ON a.id = k.id")
