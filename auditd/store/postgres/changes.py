"""Several instances on one database: the change log, read back into notes.

Every write transaction with notes adds one row to `changes` (writer.py): the notes as pointers
(action id and the fields that changed, or a range of log line numbers), under an advisory lock so
that change ids are in commit order, and NOTIFY auditd_changes with the id. Each instance keeps
the last change id it delivered and reads the rows after it:

- right after its own commits (the writer holds `lock` from before the row is written until the
  notes are delivered; the notes of its own commit come from memory, and only rows in between,
  other instances', are read);
- when a NOTIFY arrives on its listening connection;
- every POLL_SECONDS anyway, so a lost NOTIFY, a dropped listener connection (it reconnects) or a
  payload limit can never lose a change: NOTIFY only says "look", the rows are the truth.

Rows of other instances become the same notes (`ActionChanged`, `LinesAppended`,
`ActionsRemoved`) by reading the rows they point at, and go to `on_commit` in change-id order, so
a log follower gets every line once and in order whichever instance appended it. An instance
starts at the newest change: it has no followers yet, and everything before is in the tables.
Rows older than KEEP_CHANGES are deleted now and then.
"""
import asyncio
import json
import logging

import asyncpg

from ...model.notes import ActionChanged, ActionsRemoved, LinesAppended
from ...model.document import render_action
from .database import DB_ERRORS
from .jobs import ACTION_COLUMNS, SELECT_ACTION, lineage, row_dict

log = logging.getLogger("auditd.store")

POLL_SECONDS = 1.0
READ_ROWS = 500
KEEP_CHANGES = "1 hour"
PRUNE_EVERY = 300          # polls between two prunes of old change rows


class ChangeFeed:
    def __init__(self, store):
        self.store = store
        self.lock = asyncio.Lock()
        self.last = 0
        self.skip: set[int] = set()      # own changes delivered from memory but not yet passed
        self.delivered_rows = 0          # other instances' change rows turned into notes
        self._tasks: list[asyncio.Task] = []
        self._wake = asyncio.Event()
        self.listener: asyncpg.Connection | None = None
        self.listening = asyncio.Event()  # set while the listening connection is up

    async def start(self):
        self.last = await self.store._pool.fetchval("SELECT coalesce(max(id), 0) FROM changes")
        self._tasks = [asyncio.create_task(self._listen(), name="auditd-pg-listen"),
                       asyncio.create_task(self._poll(), name="auditd-pg-changes")]

    async def stop(self):
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.listener is not None and not self.listener.is_closed():
            await self.listener.close()

    # -- delivery

    def _deliver(self, notes):
        if notes and self.store.on_commit is not None:
            try:
                self.store.on_commit(notes)
            except Exception:   # noqa: BLE001 - a stream bug must not stop the feed
                log.exception("delivering committed changes to the streams failed")

    async def committed(self, change_id: int, notes: list, credentials: bool):
        """This store's own commit, which wrote change `change_id` (called holding `lock`)."""
        if credentials:
            self.store._forget_credentials()
        try:
            if change_id != self.last + 1:
                await self._read(until=change_id)   # other instances' commits before this one
            self.last = change_id
        except DB_ERRORS as err:   # the write is committed: answer it; read the rest later
            log.warning("reading the change log failed (will retry): %s", err)
            self.skip.add(change_id)
        self._deliver(notes)

    async def catch_up(self):
        async with self.lock:
            await self._read()

    async def _read(self, until: int | None = None):
        """Deliver the change rows after `last` (before `until` when given), in order."""
        while True:
            if until is None:
                rows = await self.store._pool.fetch(
                    "SELECT id, items FROM changes WHERE id > $1 ORDER BY id LIMIT $2",
                    self.last, READ_ROWS)
            else:
                rows = await self.store._pool.fetch(
                    "SELECT id, items FROM changes WHERE id > $1 AND id < $2 ORDER BY id "
                    "LIMIT $3", self.last, until, READ_ROWS)
            if not rows:
                return
            notes = await self._notes([json.loads(r["items"]) for r in rows
                                       if r["id"] not in self.skip])
            self.skip.difference_update(r["id"] for r in rows)
            self.last = rows[-1]["id"]
            self.delivered_rows += len(rows)
            self._deliver(notes)
            if len(rows) < READ_ROWS:
                return

    async def _notes(self, commits: list[list]) -> list:
        """The notes of other instances' commits, from the rows their pointers name."""
        items = [item for commit in commits for item in commit]
        if any(item[0] == "c" for item in items):
            self.store._forget_credentials()
        pool = self.store._pool
        if any(item[0] == "a" and item[1] == "create" for item in items):
            self.store._graph_changed()   # another instance may have added edges
        ids = sorted({item[2] for item in items if item[0] == "a"})
        actions = {}
        if ids:
            rows = await pool.fetch(SELECT_ACTION + " WHERE id = ANY($1::bigint[])", ids)
            actions = {r["id"]: row_dict(r, ACTION_COLUMNS) for r in rows}
        ranges = [item[1:] for item in items if item[0] == "l"]
        lines = {}
        if ranges:
            rows = await pool.fetch(
                "SELECT l.action_id, l.seq, l.ts, l.stream_type, l.line FROM "
                "unnest($1::bigint[], $2::int[], $3::int[]) AS r(a, f, t) "
                "JOIN action_keys k ON k.id = r.a JOIN action_logs l ON l.action_id = r.a "
                "AND l.start_ts = k.start_ts AND l.seq BETWEEN r.f AND r.t "
                "ORDER BY l.action_id, l.seq", *zip(*ranges))
            for action_id, *line in rows:
                lines.setdefault(action_id, []).append(tuple(line))
        notes, lineages = [], {}
        for item in items:
            if item[0] == "a":
                _, kind, action_id, _, state, end_ts, log_count = item
                if action_id not in actions:
                    continue   # removed since
                action = dict(actions[action_id], state=state, end_ts=end_ts,
                              log_count=log_count)
                action["doc"] = render_action(action)
                key = (action["object"], action["object_id"])
                if key not in lineages:
                    async with pool.acquire() as conn:
                        lineages[key] = await lineage(conn, action)
                notes.append(ActionChanged(kind, action, lineages[key]))
            elif item[0] == "l":
                _, action_id, first, last = item
                chunk = [line for line in lines.get(action_id, ()) if first <= line[0] <= last]
                if chunk:
                    notes.append(LinesAppended(action_id, chunk))
            elif item[0] == "r":
                notes.append(ActionsRemoved(None if item[1] is None else frozenset(item[1])))
        return notes

    # -- waking up

    async def _poll(self):
        polls = 0
        while True:
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.catch_up()
                polls += 1
                if polls % PRUNE_EVERY == 0:
                    await self.store._pool.execute(
                        f"DELETE FROM changes WHERE at < now() - interval '{KEEP_CHANGES}'")
            except (*DB_ERRORS, Exception) as err:   # noqa: BLE001 - keep polling
                log.warning("reading the change log failed (will retry): %s", err)
                await asyncio.sleep(POLL_SECONDS)

    def _notified(self, conn, pid, channel, payload):
        if channel == "auditd_credentials":
            self.store._forget_credentials()
        self._wake.set()

    async def _listen(self):
        """Keep a connection LISTENing; after it drops, reconnect and read what was missed."""
        while True:
            try:
                conn = self.listener = await asyncpg.connect(
                    self.store.url, timeout=10, server_settings={"application_name": "auditd-listen"})
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn: closed.set())
                await conn.add_listener("auditd_changes", self._notified)
                await conn.add_listener("auditd_credentials", self._notified)
                self.listening.set()
                # Anything committed while no one listened is read now.
                self.store._forget_credentials()
                self._wake.set()
                while not closed.is_set():
                    try:
                        async with asyncio.timeout(5):
                            await closed.wait()
                    except TimeoutError:   # a silently dead socket shows on a query
                        try:
                            await conn.execute("SELECT 1", timeout=5)
                        except (*DB_ERRORS, Exception):   # noqa: BLE001
                            break
                log.warning("the PostgreSQL listening connection dropped: reconnecting")
            except DB_ERRORS as err:
                log.warning("cannot LISTEN on PostgreSQL (retrying): %s", err)
            finally:
                self.listening.clear()
            if self.listener is not None and not self.listener.is_closed():
                self.listener.terminate()
            self.store._forget_credentials()
            self._wake.set()
            await asyncio.sleep(0.2)
