"""The one write connection and its group commit."""
import asyncio
import logging
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ...model.errors import Unavailable
from . import tallies, tree
from .database import connect_writer, savepoint, unavailable

log = logging.getLogger("auditd.store")

MAX_BATCH = 512
WAL_LIMIT = 64 * 1024 * 1024
HEAVY_SWITCH_INTERVAL = 0.001   # seconds; Python's default is 0.005


class BatchCore:
    """What runs a batch of jobs on the write connection, with no I/O of its own: the event
    loop's `Writer` and the writer process (`process.py`) both use it."""

    conn: sqlite3.Connection
    temp_store: str

    @contextmanager
    def _undoable(self, name: str, first: bool):
        """Undo what the block writes when it raises. A savepoint does that, but it copies each
        page the block changes first (measured: ~9% of the writer's CPU per record in a batch of
        32), so the transaction's first block goes without one: when it raises, the transaction
        holds nothing else, and is rolled back and begun again. What the connection remembered
        is forgotten either way."""
        if not first:
            with savepoint(self.conn, name):
                yield
            return
        try:
            yield
        except BaseException:
            self.conn.forget()
            if self.conn.in_transaction:   # not when SQLite rolled it back itself (disk full)
                self.conn.execute("ROLLBACK")
                self.conn.execute("BEGIN IMMEDIATE")
            raise

    def _still_in_transaction(self, err: Exception):
        """After a job raised `err`: raise when SQLite undid the whole transaction (a full
        disk), so that run_batch fails every job of the batch; the jobs after it would otherwise
        run outside any transaction, each statement committing on its own."""
        if not self.conn.in_transaction:
            if isinstance(err, sqlite3.Error):
                raise err
            raise sqlite3.OperationalError(f"the write transaction was lost: {err}") from err

    def _run_job(self, fn, args, first: bool = False):
        try:
            with self._undoable("job", first):
                result, job_notes = fn(self.conn, *args)
        except Exception as err:   # noqa: BLE001 - handed to the caller
            self._still_in_transaction(err)
            if isinstance(err, sqlite3.IntegrityError):
                return False, err, ()     # a job's own (jobs turn the expected ones into errors)
            if isinstance(err, sqlite3.Error):
                return False, unavailable(err, "take the write; nothing was saved"), ()
            return False, err, ()
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

    def _run_bulk(self, run, notes, first: bool = False) -> list | None:
        """Run a run of the same job (`[(fn, args, heavy, ...)]`) in its bulk form, undone as one
        when it raises (`_undoable`; `first`: nothing else is in the transaction): each job's
        result, its notes added to `notes`. None when it raised: nothing of it is left, and the
        jobs are then run one by one, each meeting its own error. Raises when the transaction
        itself is gone (SQLite rolled it back): every job of the batch fails."""
        try:
            with self._undoable("bulk", first):
                done = run[0][0].bulk(self.conn, [job[1] for job in run])
        except Exception as err:   # noqa: BLE001 - the jobs run again one at a time
            self._still_in_transaction(err)
            return None
        for _, job_notes in done:
            notes.extend(job_notes)
        return [result for result, _ in done]

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

    def _commit(self):
        if self.conn.frontier is not None:
            tree.seal(self.conn, self.conn.frontier)   # the batch's leaves, into the tree
        self.conn.execute("COMMIT")

    def _recover(self):
        """After a failed transaction: roll back what is left, and give the WAL's space back
        (after a full disk it would otherwise keep its size, and writes might not resume once
        space is freed)."""
        self.conn.forget()
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if self.conn.frontier is not None:   # it may have taken leaves that were not kept
                self.conn.frontier = tree.load(self.conn)
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            log.warning("could not truncate the write-ahead log after the failure: %s", err)

    def fold_journal(self):
        """On closing: add the uuid-prefix tallies' journal into them (tallies.fold), so that a
        stopped server leaves it empty. Left as it is when that fails (it is read either way)."""
        try:
            if self.conn.execute("SELECT 1 FROM prefix_journal LIMIT 1").fetchone():
                self.conn.execute("BEGIN IMMEDIATE")
                tallies.fold(self.conn)
                self.conn.execute("COMMIT")
        except sqlite3.Error as err:
            log.warning("could not fold the uuid-prefix tallies' journal on closing: %s", err)
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def run_batch(self, batch) -> tuple[list, list, object]:
        """Run `[(fn, args, heavy), ...]` in one transaction, here and now: `([(ok, result)],
        notes, failure)`; failure is the Unavailable that failed every job, or None."""
        results, notes = [], []
        try:
            self._begin(not any(heavy for _, _, heavy in batch))
            first = True       # nothing is in the transaction yet: no savepoint needed
            at = 0
            while at < len(batch):
                run = batch[at:at + self._bulk_run(batch, at)]
                at += len(run)
                bulk = self._run_bulk(run, notes, first) if len(run) > 1 else None
                if bulk is not None:
                    results.extend((True, result) for result in bulk)
                    first = False
                    continue
                for fn, args, heavy in run:
                    ok, result, job_notes = self._run_job(fn, args, first)
                    first = first and not ok    # a failed first job left nothing
                    if heavy:
                        self.conn.forget()
                    results.append((ok, result))
                    notes.extend(job_notes)
            self._commit()
        except sqlite3.Error as err:
            log.error("write transaction failed: %s", err)
            failure = unavailable(err, "take the write; nothing was saved")
            self._recover()
            return [], [], failure
        return results, notes, None


class Writer(BatchCore):
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

    def __init__(self, path: str, synchronous: str, group_commit: bool, deliver,
                 transparency: bool = True):
        self.transparency = transparency
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
        self.failure: Unavailable | None = None   # the last write's failure, until one commits
        self.failed_at = 0.0

    async def _in_thread(self, fn, *args):
        return await self.loop.run_in_executor(self.thread, fn, *args)

    async def open(self):
        self.conn = await self._in_thread(connect_writer, self.path, self.synchronous)
        # A checkpoint leaves the WAL at most this long, so disk space comes back after a burst.
        await self._in_thread(self.conn.execute, f"PRAGMA journal_size_limit = {WAL_LIMIT}")
        self.conn.frontier = await self._in_thread(tree.load, self.conn) \
            if self.transparency else None

    def submit(self, fn, args, heavy: bool) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((fn, args, heavy, future))
        if self.flushing is None:
            self.flushing = self.loop.create_task(self._flush())
        return future

    async def close(self):
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        await self._in_thread(self.fold_journal)
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

    async def _run_batch(self, batch):
        answers, notes = [], []
        try:
            await self._in_thread(self._begin, not any(heavy for _, _, heavy, _ in batch))
            at = 0
            while at < len(batch):
                run = batch[at:at + self._bulk_run(batch, at)]
                at += len(run)
                bulk = self._run_bulk(run, notes) if len(run) > 1 else None
                if bulk is not None:
                    answers.extend((future, True, result)
                                   for (*_, future), result in zip(run, bulk))
                    continue
                for fn, args, heavy, future in run:
                    if heavy:
                        with short_switch_interval():
                            ok, result, job_notes = await self._in_thread(self._run_job, fn,
                                                                          args)
                        self.conn.forget()   # a reset removes objects; an import is rare
                    else:
                        ok, result, job_notes = self._run_job(fn, args)
                    answers.append((future, ok, result))
                    notes.extend(job_notes)
            if any(heavy for _, _, heavy, _ in batch):
                with short_switch_interval():   # sealing a big job's leaves is Python too
                    await self._in_thread(self._commit)
            else:
                await self._in_thread(self._commit)
            self.commits += 1
            self.failure = None
        except sqlite3.Error as err:
            log.error("write transaction failed: %s", err)
            self.failure = unavailable(err, "take the write; nothing was saved")
            self.failed_at = time.monotonic()
            await self._in_thread(self._recover)
            return [(future, False, self.failure) for *_, future in batch], []
        return answers, notes


_switching = threading.Lock()
_heavy_running = 0
_usual_interval = sys.getswitchinterval()


@contextmanager
def short_switch_interval():
    """While a heavy job runs on the writer's thread, the event loop gets the GIL back within
    HEAVY_SWITCH_INTERVAL rather than the usual 5 ms each time it wants it: a big append is
    thousands of Python-level steps, and a health check needs the GIL a few times over."""
    global _heavy_running, _usual_interval
    with _switching:
        if _heavy_running == 0:
            _usual_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_usual_interval, HEAVY_SWITCH_INTERVAL))
        _heavy_running += 1
    try:
        yield
    finally:
        with _switching:
            _heavy_running -= 1
            if _heavy_running == 0:
                sys.setswitchinterval(_usual_interval)


def heavy_job(fn):
    """Mark a writer job that may touch many rows: it runs on the writer's thread."""
    fn.heavy = True
    return fn


def deliver_answers(answers):
    for future, ok, result in answers:
        if future.done():
            continue
        if ok:
            future.set_result(result)
        else:
            future.set_exception(result)

