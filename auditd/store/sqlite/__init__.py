"""The SQLite backend: one database file, one write connection with group commit, and readers.

- Writes go through the one write connection, on the event loop (`writer.Writer`) or, for
  `serve`, in a process of its own (`process.ProcessWriter`, running the same batches). Every
  write waiting when a transaction starts joins it, each undone alone if it fails (consecutive
  records go in together, and are retried one by one if any of them fails); the transaction
  commits once (group commit) and only then is each caller answered. A write that fails
  changes nothing (a savepoint undoes it; in the writer process, the transaction's first run
  is undone by rolling the transaction back and beginning again); the others in the batch still
  commit. The jobs are in
  `jobs.py`; the rules they apply are `auditd.model`'s.
- Reads that touch a bounded number of rows run on a connection used inline on the event loop;
  reads whose cost depends on the data use a small pool of aiosqlite connections. Both are in
  autocommit mode: a read never waits for the writer, and no read transaction stays open between
  statements (WAL checkpoints are not held up).
- Each action's wire JSON is rendered once per write (`actions.doc`), so a page of actions is a
  join of stored fragments. A list's `total_count` comes from the tallies the writer keeps
  (`tallies.py`), its page through the index the planner picks (`planner.py`); shapes the
  tallies do not count are one statement (`listing.py`). `reads.py` runs them.
- After each commit the writer hands the batch's notes to `on_commit` on the event loop.
- Export, import, purge, reset and fixture loads are in `lifecycle.py`; backup and check, which
  work on the file without opening it as a store, in `files.py`.
"""
import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import aiosqlite

from ...model.access import (Principal, check_name, check_role, check_visible, hash_key,
                             key_matches, new_key, principal_for)
from ...model.actions import STATES
from ...model.errors import Unavailable
from ..interface import Store
from ..pagecache import BUDGET as PAGE_BUDGET, PageCache
from . import jobs, lifecycle
from .database import SCHEMA_VERSION, connect, prepare_database, unavailable
from .audit import Damage, verify
from .files import backup, check, claim, quick_check
from .forwarding import ForwardReads
from .proofs import TreeReads
from .reads import ListReads
from .process import ProcessWriter
from .writer import Writer, deliver_answers

__all__ = ["Damage", "SQLiteStore", "SCHEMA_VERSION", "backup", "check", "claim", "create",
           "describe", "exists", "verify"]

log = logging.getLogger("auditd.store")

# What health reads: credentials, the counts, and the newest actions' rows and index pages.
HEALTH_READS = ("SELECT (SELECT count(*) FROM users), (SELECT sum(n) FROM action_counts), "
                "(SELECT group_concat(length(doc)) FROM (SELECT doc FROM actions "
                "ORDER BY start_ts DESC, id DESC LIMIT 25))")
WRITE_PROBE_AFTER = 10.0   # seconds after a failed write before health tries a write itself
CACHE_ENTRIES = 4096
HEAVY_APPEND_LINES = 1000
HEAVY_APPEND_TEXT = 256 * 1024   # characters
CACHE_RECHECK = 0.005   # seconds between two looks at data_version (see SQLiteStore._cached)


def create(config, serving: bool = False) -> "SQLiteStore":
    return SQLiteStore(config.db, synchronous=config.synchronous, group_commit=config.group_commit,
                       check_on_start=config.check_on_start, transparency=config.transparency,
                       writer_process=serving and config.writer_process,
                       list_cache_bytes=config.list_cache_bytes)


def exists(db: str) -> bool:
    """Whether the database file is there (commands that only read refuse a missing one)."""
    return Path(db).is_file()


def describe(db: str) -> str:
    return f"SQLite database {db}"


class SQLiteStore(ListReads, TreeReads, ForwardReads, Store):
    def __init__(self, path: str, synchronous: str = "FULL", group_commit: bool = True,
                 readers: int = 3, check_on_start: bool = False, transparency: bool = True,
                 writer_process: bool = False, list_cache_bytes: int = PAGE_BUDGET):
        self.check_on_start = check_on_start
        self.writer_process = writer_process   # the writer in a child process (process.py)
        self.transparency = transparency
        self.path = str(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be OFF, NORMAL, FULL or EXTRA")
        self.group_commit = group_commit
        self.reader_count = readers
        self.on_commit = None           # callable(notes) run on the loop after each commit
        self.schema_version = None
        self._writer: Writer | None = None
        self._readers: asyncio.Queue | None = None
        self._reader_conns: list = []
        self._inline: sqlite3.Connection | None = None
        self._cache: dict = {}
        self._cache_version = None
        self._cache_checked = float("-inf")
        self._splitting: dict = {}      # tallies buckets being split: their tasks (reads.py)
        self._busy_objects: set = set()   # object filters too costly for the loop (reads.py)
        self._walks: dict = {}          # walks of the object graph, by its version (reads.py)
        self._pages = PageCache(list_cache_bytes)   # list pages until a change (reads.py)

    # -- lifecycle

    async def open(self):
        self.schema_version = await asyncio.to_thread(prepare_database, self.path)
        if self.check_on_start:
            await asyncio.to_thread(quick_check, self.path)
        kind = ProcessWriter if self.writer_process else Writer
        self._writer = kind(self.path, self.synchronous, self.group_commit, self._delivered,
                            self.transparency)
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
        self._inline = connect(self.path)
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
        self._close_proofs()

    def _delivered(self, answers, notes):
        self._cache_checked = float("-inf")   # what was cached may have changed: look again
        if notes and self.on_commit is not None:
            try:
                self.on_commit(notes)
            except Exception:   # noqa: BLE001 - a stream bug must not lose the answers
                log.exception("delivering committed changes to the streams failed")
        deliver_answers(answers)

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
        self._cache_check()
        try:
            return self._cache[key]
        except KeyError:
            return self._remember(key, compute())

    def _cache_check(self, now: bool = False):
        """SQLite's data_version as the cache last saw it, looked at again (and the cache cleared
        if it moved) when CACHE_RECHECK has passed, or `now`."""
        at = time.monotonic()
        if now or at - self._cache_checked >= CACHE_RECHECK:
            try:
                version = self._inline.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as err:   # the WAL index unreadable (an I/O error, a recovery)
                log.error("read failed: %s", err)
                raise unavailable(err, "be read") from None
            self._cache_checked = at
            if version != self._cache_version:
                self._cache.clear()
                self._cache_version = version
        return self._cache_version

    def _remember(self, key, value):
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = value
        return value

    def _read_inline(self, sql: str, params=()):
        """For statements that seek an index and return a bounded number of rows."""
        try:
            return self._inline.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            log.error("read failed: %s", err)
            raise unavailable(err, "be read") from None

    async def _read(self, sql: str, params=()):
        """For statements whose cost depends on the data: off the loop, on the reader pool."""
        conn = await self._readers.get()
        try:
            return await conn.execute_fetchall(sql, params)
        except sqlite3.Error as err:
            log.error("read failed: %s", err)
            raise unavailable(err, "be read") from None
        finally:
            self._readers.put_nowait(conn)

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # -- users, organizations, credentials

    async def authenticate(self, name: str, key: str) -> Principal | None:
        known = self._cached(("user", name), lambda: self._load_principal(name))
        if not key_matches(key, known[0] if known else None):
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
        return key_hash, principal_for(name, role, orgs.split("\x1f") if orgs else ())

    async def add_user(self, name: str, role: str = "user", key: str | None = None) -> str:
        check_name(name, "user")
        check_role(role)
        key = key or new_key()
        await self._write(jobs.add_user, name, role, hash_key(key))
        return key

    async def rotate_key(self, name: str) -> str:
        key = new_key()
        await self._write(jobs.rotate_key, name, hash_key(key))
        return key

    async def remove_user(self, name: str):
        await self._write(jobs.remove_user, name)

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
        check_name(name, "organization")
        await self._write(jobs.add_org, name)

    async def add_member(self, org: str, user: str):
        await self._write(jobs.set_member, org, user, True)

    async def remove_member(self, org: str, user: str):
        await self._write(jobs.set_member, org, user, False)

    async def list_orgs(self) -> list[dict]:
        rows = await self._read(
            "SELECT o.name, group_concat(u.name, ',') FROM orgs o "
            "LEFT JOIN org_members m ON m.org_id = o.id LEFT JOIN users u ON u.id = m.user_id "
            "GROUP BY o.id ORDER BY o.name")
        return [{"name": r[0], "members": sorted(r[1].split(",")) if r[1] else []} for r in rows]

    async def export_accounts(self) -> dict:
        users = await self._read(
            "SELECT u.name, u.role, u.key_hash, u.created_at, group_concat(o.name, char(31)) "
            "FROM users u LEFT JOIN org_members m ON m.user_id = u.id "
            "LEFT JOIN orgs o ON o.id = m.org_id GROUP BY u.id ORDER BY u.name")
        orgs = await self._read("SELECT name, created_at FROM orgs ORDER BY name")
        return {"users": [{"name": r[0], "role": r[1], "key_hash": r[2], "created_at": r[3],
                           "orgs": sorted(r[4].split("\x1f")) if r[4] else []} for r in users],
                "orgs": [{"name": r[0], "created_at": r[1]} for r in orgs]}

    async def import_accounts(self, accounts: dict) -> dict:
        return await self._write(jobs.import_accounts, accounts)

    # -- actions: writes

    async def record_action(self, record) -> dict:
        return await self._write(jobs.insert_action, record)

    async def change_state(self, uuid: str, state: str, namespaces) -> dict:
        return await self._write(jobs.change_state, uuid.lower(), state, namespaces)

    async def cancel(self, uuid: str, namespaces) -> dict:
        return await self._write(jobs.cancel, uuid.lower(), namespaces)

    async def retry(self, uuid: str, namespaces, caller: dict) -> dict:
        return await self._write(jobs.retry, uuid.lower(), namespaces, caller)

    async def append_logs(self, uuid: str, lines: list, namespaces) -> int:
        # A big append (many lines, or much text) runs on the writer's thread, not the loop.
        heavy = len(lines) > HEAVY_APPEND_LINES or \
            sum(len(line) for _, _, line in lines) > HEAVY_APPEND_TEXT
        return await self._write(jobs.append_logs, uuid.lower(), lines, namespaces, heavy=heavy)

    # -- actions: reads

    async def get_action_doc(self, uuid: str, namespaces) -> str:
        rows = self._read_inline("SELECT doc, namespace FROM actions WHERE uuid = ?",
                                 (uuid.lower(),))
        check_visible(uuid, rows[0][1] if rows else None, namespaces)
        return rows[0][0]

    async def get_action(self, uuid: str, namespaces) -> dict:
        rows = self._read_inline(jobs.SELECT_STORED + " WHERE uuid = ?", (uuid.lower(),))
        check_visible(uuid, rows[0][2] if rows else None, namespaces)
        return jobs.stored(rows[0])

    async def read_logs(self, action_id: int, after_seq: int, limit: int) -> list[tuple]:
        return self._read_inline(
            "SELECT seq, ts, stream_type, line FROM action_logs "
            "WHERE action_id = ? AND seq > ? ORDER BY seq LIMIT ?", (action_id, after_seq, limit))

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

    async def health(self) -> str | None:
        if self._writer is None:
            return "the database is closed: the server is stopping"
        try:
            await self._read(HEALTH_READS)
            failure = self._writer.failure
            if failure is not None:
                # A real write failed and none has committed since. A small write may pass
                # while a real one still fails (a nearly full disk): try one only a while later.
                if time.monotonic() - self._writer.failed_at < WRITE_PROBE_AFTER:
                    return failure.message
                await self._write(jobs.probe_write)
        except Unavailable as err:
            return err.message
        return None


    # -- the data lifecycle (lifecycle.py)

    async def count_actions(self, filters: dict) -> int:
        return await lifecycle.count_actions(self, filters)

    def export_actions(self, filters: dict, with_logs: bool = True, log_chunk: int = 1000):
        return lifecycle.export_actions(self, filters, with_logs=with_logs, log_chunk=log_chunk)

    async def import_batch(self, items: list) -> list[tuple]:
        return await self._write(lifecycle.import_batch, items)

    async def count_purgeable(self, cut: int) -> tuple[int, int]:
        return await lifecycle.count_purgeable(self, cut)

    async def purge(self, cut: int, on_progress=None) -> tuple[int, int]:
        return await lifecycle.purge(self, cut, on_progress=on_progress)

    async def reset(self) -> dict:
        return await self._write(lifecycle.reset)

    async def load(self, items: list) -> list[dict]:
        return await self._write(lifecycle.load, items)

    async def has_actions(self) -> bool:
        rows = await self._read("SELECT EXISTS (SELECT 1 FROM actions)")
        return bool(rows[0][0])
