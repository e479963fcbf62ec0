"""The write connection and its group commit, and the change log each commit writes."""
import asyncio
import contextlib
import json
import logging
import random

import asyncpg

from ...model.errors import AuditdError, InvalidRequest, Unavailable
from ...model.notes import ActionChanged, ActionsRemoved, LinesAppended
from .database import CHANGES_LOCK, DB_ERRORS, LINEAGE_LOCK, connect

log = logging.getLogger("auditd.store")

MAX_BATCH = 512
RETRIES = 10                # a batch that lost a deadlock to another instance runs again
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)

# The object graph's lock (lineage.py), taken by a batch before anything else: SHARED by one
# that records actions (their filing reads the graph), EXCLUSIVE by one that adds an edge (its
# filing reads the actions). Taken first and only once, it cannot close a cycle of waits.
SHARED, EXCLUSIVE = 1, 2
_TAKE_LINEAGE = {SHARED: "SELECT pg_advisory_xact_lock_shared($1)",
                 EXCLUSIVE: "SELECT pg_advisory_xact_lock($1)"}


_LOWEST_OBJECT = "SELECT min(id) FROM objects"   # the primary key's first entry


class LineageLockNeeded(Exception):
    """A job needs more of the graph's lock than its batch took (an edge the batch did not
    foresee): the batch is rolled back and runs again, taking `mode` first."""

    def __init__(self, mode: int):
        super().__init__(mode)
        self.mode = mode


def locks_tables(fn):
    """Mark a job that locks whole tables (TRUNCATE): see `Writer._try_batch`."""
    fn.locks_tables = True
    return fn


def require_lineage(ctx, mode: int):
    """Called by a job before it files actions (SHARED) or after it added an edge (EXCLUSIVE)."""
    if ctx.lineage < mode:
        raise LineageLockNeeded(mode)


def lineage_mode(mode_or_predict):
    """Mark a job that records actions or adds edges: with the mode its batch takes, or a
    function `(ctx, *args) -> mode` that foresees it (a record whose edges are known: SHARED)."""
    def mark(fn):
        fn.lineage = mode_or_predict
        return fn
    return mark


# The change row, written under the advisory lock (taken before the id is drawn, so ids follow
# commit order), and its NOTIFYs (sent at commit), in one statement.
_WRITE_CHANGE = (
    "WITH l AS (SELECT pg_advisory_xact_lock($1)), "
    "c AS (INSERT INTO changes (origin, items) SELECT $2, $3::jsonb FROM l RETURNING id) "
    "SELECT id, pg_notify('auditd_changes', id::text), "
    "CASE WHEN $4::bool THEN pg_notify('auditd_credentials', id::text) END FROM c")


class WriteContext:
    """What a job gets: the connection, and what the writer has learned about the object graph
    (URIs to ids, known edges). Objects and edges are only ever added (a reset removes them and
    calls `forget`), so what was seen committed stays true; whatever the writer did that is rolled
    back is forgotten too. A reset through another instance is noticed by `floor`: it removes
    every object, and new ones take ids above the old (a sequence), so the lowest id changes."""

    def __init__(self, conn):
        self.conn = conn
        self.object_ids: dict[str, int] = {}
        self.object_edges: set[tuple[int, int]] = set()
        # object id -> its ancestors' URIs; cleared when this writer adds an edge, and when the
        # change feed reads another instance's new action (which may have added edges)
        self.ancestors: dict[int, tuple[str, ...]] = {}
        self.lineage = 0            # the graph's lock the transaction holds: 0, SHARED, EXCLUSIVE
        self.floor = None           # the lowest object id when the graph was last looked at

    def forget(self):
        self.object_ids.clear()
        self.object_edges.clear()
        self.ancestors.clear()


def credentials_job(fn):
    """Mark a job that changes users, keys or memberships: every instance's cache must drop."""
    fn.credentials = True
    return fn


def locks_action(fn):
    """Mark a job whose first argument is the uuid of an existing action it changes: the batch
    locks all such actions first, in uuid order, so two instances' batches never wait on each
    other's action rows in opposite orders (a deadlock)."""
    fn.locks_action = True
    return fn


def pointer(note) -> list:
    """A note as the change log keeps it: pointers and the few fields that change."""
    if type(note) is LinesAppended:
        return ["l", note.action_id, note.lines[0][0], note.lines[-1][0]] if note.lines else None
    if type(note) is ActionChanged:
        a = note.action
        return ["a", note.kind, a["id"], a["start_ts"], a["state"], a["end_ts"], a["log_count"]]
    if type(note) is ActionsRemoved:
        return ["r", None if note.ids is None else sorted(note.ids)]
    raise TypeError(f"unknown note {note!r}")


class Writer:
    """One write connection; while a transaction runs, new jobs wait, and the next transaction
    takes all of them (up to MAX_BATCH), each in its own savepoint, and commits once: with
    synchronous_commit on, one WAL flush answers the whole batch.

    Jobs are `async fn(ctx, *args)` returning `(result, notes)`. A job that raises an
    AuditdError (or whose values PostgreSQL refuses) rolls back to its savepoint and gets the
    error; the others commit. A deadlock with another instance rolls the whole batch back and it
    runs again. The batch's notes go, as pointers, into one `changes` row written under an
    advisory lock (so change ids are in commit order across instances) with a NOTIFY carrying its
    id; `feed.committed` then hands the notes to `on_commit` before the callers are answered."""

    def __init__(self, url: str, origin: str, group_commit: bool, feed):
        self.url, self.origin, self.feed = url, origin, feed
        self.max_batch = MAX_BATCH if group_commit else 1
        self.loop = asyncio.get_running_loop()
        self.ctx: WriteContext | None = None
        self.pending: list = []
        self.flushing: asyncio.Task | None = None
        self.commits = 0

    async def open(self):
        self.ctx = WriteContext(await connect(self.url))

    def submit(self, fn, args) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((fn, args, future))
        if self.flushing is None:
            self.flushing = self.loop.create_task(self._flush())
        return future

    async def close(self):
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        if self.ctx is not None:
            await self.ctx.conn.close()

    async def _flush(self):
        try:
            while self.pending:
                batch = self.pending[:self.max_batch]
                del self.pending[:self.max_batch]
                for future, ok, result in await self._run_batch(batch):
                    if not future.done():
                        future.set_result(result) if ok else future.set_exception(result)
        finally:
            self.flushing = None

    async def _run_batch(self, batch):
        err, lineage = None, 0
        for _ in range(RETRIES):
            try:
                if self.ctx.conn.is_closed():
                    self.ctx = WriteContext(await connect(self.url))
                return await self._try_batch(batch, lineage)
            except LineageLockNeeded as needed:
                self.ctx.forget()         # what it learned may have been rolled back
                err, lineage = needed, max(lineage, needed.mode)
            except RETRYABLE as retry:
                self.ctx.forget()
                err = retry
                log.info("write transaction lost a deadlock, running it again: %s", retry)
                await asyncio.sleep(random.uniform(0, 0.02))
            except (*DB_ERRORS, Unavailable) as failed:
                self.ctx.forget()
                err = failed
                break
        log.error("write transaction failed: %s", err)
        failure = Unavailable(f"the database refused the write ({err}); nothing was saved: "
                              "check that PostgreSQL is up, then retry")
        return [(future, False, failure) for *_, future in batch]

    def _lineage_of(self, batch) -> int:
        """The graph's lock a batch takes (see SHARED): the most any of its jobs foresees."""
        mode = 0
        for fn, args, _ in batch:
            wanted = getattr(fn, "lineage", 0)
            mode = max(mode, wanted(self.ctx, *args) if callable(wanted) else wanted)
            if mode == EXCLUSIVE:
                break
        return mode

    async def _try_batch(self, batch, lineage: int = 0):
        if any(getattr(fn, "locks_tables", False) for fn, _, _ in batch):
            # Its whole-table locks would stop this instance's change-log reader, which holds
            # the feed's lock while it reads the actions, and the batch would then wait for that
            # lock to write its change row: each waiting for the other until a statement timed
            # out (60 s). The feed's lock comes first instead.
            async with self.feed.lock:
                return await self._batch(batch, lineage, feed_held=True)
        return await self._batch(batch, lineage, feed_held=False)

    async def _batch(self, batch, lineage: int, feed_held: bool):
        conn, answers, notes, credentials = self.ctx.conn, [], [], False
        tx = conn.transaction()
        await tx.start()
        try:
            self.ctx.lineage = max(lineage, self._lineage_of(batch))
            if self.ctx.lineage:
                await conn.execute(_TAKE_LINEAGE[self.ctx.lineage], LINEAGE_LOCK)
                # every job that uses what the writer remembers of the graph takes the lock;
                # a reset holds it exclusively, so this reads the graph as it left it
                floor = await conn.fetchval(_LOWEST_OBJECT)
                if floor is None or floor != self.ctx.floor:   # None: no object is left
                    self.ctx.forget()
                    self.ctx.floor = floor
            uuids = sorted({args[0] for fn, args, _ in batch if getattr(fn, "locks_action", 0)})
            if uuids:
                await conn.execute("SELECT FROM action_keys WHERE uuid = ANY($1::text[]) "
                                   "ORDER BY uuid FOR UPDATE", uuids)
            at = 0
            while at < len(batch):
                run = batch[at:at + self._bulk_run(batch, at)]
                at += len(run)
                if len(run) > 1:
                    results = await self._run_bulk(run[0][0].bulk, run)
                    if results is not None:
                        for (_, _, future), (result, job_notes) in zip(run, results):
                            answers.append((future, True, result))
                            notes.extend(job_notes)
                        continue
                for fn, args, future in run:
                    ok, result, job_notes = await self._run_job(fn, args)
                    answers.append((future, ok, result))
                    if ok:
                        notes.extend(job_notes)
                        credentials |= getattr(fn, "credentials", False)
            items = [p for p in map(pointer, notes) if p is not None]
            if credentials:
                items.append(["c"])
            if not items:
                await tx.commit()
                self.commits += 1
                return answers
            # The feed's lock is held from here to delivery: no reader reads this commit's row
            # before its notes are delivered from memory.
            async with contextlib.nullcontext() if feed_held else self.feed.lock:
                change_id = await conn.fetchval(_WRITE_CHANGE, CHANGES_LOCK, self.origin,
                                                json.dumps(items), credentials)
                await tx.commit()
                self.commits += 1
                await self.feed.committed(change_id, notes, credentials)
            return answers
        except BaseException:
            if not conn.is_closed():
                try:
                    await tx.rollback()
                except DB_ERRORS:
                    pass
            raise
        finally:
            self.ctx.lineage = 0

    @staticmethod
    def _bulk_run(batch, at: int) -> int:
        """How many jobs from `at` on are the same job with a bulk form (at least 1)."""
        fn, end = batch[at][0], at + 1
        if getattr(fn, "bulk", None) is not None:
            while end < len(batch) and batch[end][0] is fn:
                end += 1
        return end - at

    async def _run_bulk(self, bulk, run):
        """A run of one job in its bulk form, in one savepoint: [(result, notes)], or None when
        it raised (nothing of it is left; the jobs then run one by one, each meeting its own
        error)."""
        try:
            async with self.ctx.conn.transaction():
                return await bulk(self.ctx, [args for _, args, _ in run])
        except RETRYABLE:
            raise
        except (AuditdError, asyncpg.PostgresError):
            self.ctx.forget()
            return None

    async def _run_job(self, fn, args):
        try:
            async with self.ctx.conn.transaction():   # a savepoint
                result, job_notes = await fn(self.ctx, *args)
        except AuditdError as err:
            self.ctx.forget()
            return False, err, ()
        except (asyncpg.DataError, asyncpg.CharacterNotInRepertoireError) as err:
            self.ctx.forget()
            return False, InvalidRequest(f"PostgreSQL cannot store this value: {err}"), ()
        except RETRYABLE:
            raise
        except asyncpg.PostgresError as err:
            self.ctx.forget()
            return False, Unavailable(f"the database refused the write ({err}); retry"), ()
        return True, result, job_notes
