"""The writer in a process of its own: the write connection's Python work off the event loop.

A record costs the writer about as much Python as its HTTP request costs aiohttp: the action's
JSON, its leaf and hash, its tallies, the object graph, the statements. On the event loop (or on
a thread: one GIL) that work and the requests' take turns on one core. Here the write connection
lives in a child process (`writerchild.py`), and `ProcessWriter` sends it batches of jobs
(`[(fn, args, heavy)]`, pickled: jobs are module-level functions) and gets back, once they
committed, each job's `(ok, result)` and the notes; the loop only pickles and unpickles. The
child runs the same `BatchCore` as the in-process `Writer`, so the transaction, bulk records,
tree sealing and failures are the same (only the transaction's first run goes without a
savepoint there: `BatchCore._undoable`); and a heavy job (a purge, a big import) stalls no
request.

A child that dies (killed, out of memory) fails the batches it held with Unavailable, as a crash
of the whole server would (a transaction whose COMMIT completed stays committed, as after any
crash); the next write starts a new child. The server stops it after the last answer.
"""
import asyncio
import collections
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import time

from ...model.errors import Unavailable
from .writer import MAX_BATCH, short_switch_interval
from .writerchild import NICENESS, has_slices, joined, packed_batch, returned_actions, serve

log = logging.getLogger("auditd.store")

IN_FLIGHT = 16      # batches sent and not answered yet: the child commits those that wait together
STOP_WAIT = 30.0     # seconds a stopping child gets to finish its batch and close the database


class ProcessWriter:
    """`Writer`'s interface (submit, commits, failure), the connection in a child process.

    What one turn of the event loop submits goes to the child as one batch, at once: up to
    IN_FLIGHT batches may be unanswered. The child runs every batch that queued in its pipe
    while it committed the last transaction in the next one (group commit, the waiting done by
    the child), and answers each batch in order. The pipe is read and written by the event loop
    itself (an asyncio protocol): a thread in between would have to win the GIL from a busy
    loop for every batch, which costs milliseconds."""

    def __init__(self, path: str, synchronous: str, group_commit: bool, deliver,
                 transparency: bool = True):
        self.path, self.synchronous, self.transparency = path, synchronous, transparency
        self.max_batch = MAX_BATCH if group_commit else 1
        self.in_flight_limit = IN_FLIGHT if group_commit else 1
        self.deliver = deliver
        self.loop = asyncio.get_running_loop()
        self.child: _Child | None = None
        self.starting: asyncio.Task | None = None
        self.pending: list = []
        self.in_flight: collections.deque = collections.deque()   # [(child, futures)]
        self.packing = False            # a big batch is being pickled off the loop
        self.sending = False            # a _pump is scheduled
        self.arrived: collections.deque = collections.deque()   # answers not yet delivered
        self.unfolding: asyncio.Task | None = None   # a big answer being unpickled
        self.commits = 0
        self.failure: Unavailable | None = None
        self.failed_at = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self):
        """Start the child, without waiting for it: a new interpreter importing the writer takes
        ~0.1-0.4 s, which the server spends opening its readers and its port instead. Writes
        submitted meanwhile wait in `pending` and go to the child once it is ready; a child
        that cannot start fails them with the reason, and the next write tries again."""
        self.starting = self.loop.create_task(self._restart())
        self._idle_check()

    def submit(self, fn, args, heavy: bool) -> asyncio.Future:
        future = self.loop.create_future()
        self.pending.append((fn, args, heavy, future))
        if not self.sending:       # what this turn of the loop submits goes in one batch
            self.sending = True
            self.loop.call_soon(self._pump)
        return future

    async def close(self):
        while not self._idle.is_set():
            await self._idle.wait()
        child, self.child = self.child, None
        if child is not None:
            await child.stop()

    def _pump(self):
        """Send what waits, while fewer than IN_FLIGHT batches are in the child."""
        self.sending = False
        if self.child is None or self.child.gone:
            self.child = None
            if self.pending and self.starting is None:
                self.starting = self.loop.create_task(self._restart())
        while (self.pending and self.child is not None and not self.packing
               and len(self.in_flight) < self.in_flight_limit):
            batch = self.pending[:self.max_batch]
            del self.pending[:self.max_batch]
            self.in_flight.append((self.child, [future for *_, future in batch]))
            jobs = [(fn, args, heavy) for fn, args, heavy, _ in batch]
            if any(heavy for *_, heavy in jobs):
                # its arguments may be megabytes: pickled on a thread, the loop goes on
                self.packing = True
                self.loop.create_task(self._send_packed(self.child, jobs))
            else:
                self.child.write(packed_batch(jobs))
        self._idle_check()

    def _idle_check(self):
        if self.in_flight or self.pending or self.starting is not None or self.arrived \
                or self.sending:
            self._idle.clear()
        else:
            self._idle.set()

    async def _send_packed(self, child, jobs):
        try:
            with short_switch_interval():      # the loop takes the GIL back between slices
                data = await asyncio.to_thread(packed_batch, jobs)
            child.write(data)
        finally:
            self.packing = False
            self._pump()

    async def _restart(self):
        try:
            self.child = await _Child.start(self)
        except (OSError, EOFError, Unavailable) as err:
            failure = err if isinstance(err, Unavailable) else Unavailable(
                f"the writer process could not start ({err}): nothing was saved; retry")
            log.error("%s", failure.message)
            self.failure, self.failed_at = failure, time.monotonic()
            pending, self.pending = self.pending, []
            self.deliver([(future, False, failure) for *_, future in pending], [])
        finally:
            self.starting = None
            self._pump()

    def answered(self, answer):
        """The oldest batch in flight is done (answer: results, notes, failure, and whether
        its transaction began with it: a transaction may hold several batches). A big answer
        (a seed's 30,000 documents) comes in slices, unpickled one per turn of the loop; the
        answers after it wait for it."""
        self.arrived.append(answer)
        self._drain()

    def _drain(self):
        while self.arrived and self.unfolding is None:
            answer = self.arrived.popleft()
            if has_slices(answer):
                self.unfolding = self.loop.create_task(self._unfold(answer))
            else:
                self._finish(answer)

    async def _unfold(self, answer):
        results, notes, failure, began = answer
        results = [(ok, await joined(value)) for ok, value in results]
        notes = await joined(notes, returned_actions(results))
        self.unfolding = None
        self._finish((results, notes, failure, began))
        self._drain()

    def _finish(self, answer):
        _, futures = self.in_flight.popleft()
        results, notes, failure, began = answer
        if failure is not None:
            self.failure, self.failed_at = failure, time.monotonic()
            answers = [(future, False, failure) for future in futures]
        else:
            self.commits += began
            self.failure = None
            answers = [(future, ok, result) for future, (ok, result) in zip(futures, results)]
        self.deliver(answers, notes)
        self._pump()

    def lost(self, child):
        """The child is gone: what was in it failed (a COMMIT it completed stays committed)."""
        if self.child is child:
            self.child = None
        failure = Unavailable("the writer process stopped (killed, or out of memory?) while "
                              "writing; what it was writing may not be saved: retry")
        self.failure, self.failed_at = failure, time.monotonic()
        answered = len(self.arrived) + (self.unfolding is not None)   # they keep their answers
        kept = list(self.in_flight)[:answered]
        for sent_to, futures in list(self.in_flight)[answered:]:
            if sent_to is child:
                self.deliver([(future, False, failure) for future in futures], [])
            else:
                kept.append((sent_to, futures))
        self.in_flight = collections.deque(kept)
        self._pump()


class _Child(asyncio.Protocol):
    """The child process, and the event loop's end of the pipe to it."""

    def __init__(self, writer: ProcessWriter, process):
        self.writer, self.process = writer, process
        self.transport = None
        self.buffer = bytearray()
        self.gone = False
        self.closed = writer.loop.create_future()

    @classmethod
    async def start(cls, writer: ProcessWriter) -> "_Child":
        loop = writer.loop
        process, pipe = await loop.run_in_executor(
            None, _spawn, writer.path, writer.synchronous, writer.transparency,
            writer.in_flight_limit > 1)
        sock = socket.socket(fileno=os.dup(pipe.fileno()))
        pipe.close()
        child = cls(writer, process)
        await loop.connect_accepted_socket(lambda: child, sock=sock)
        log.info("the writer process runs (pid %d)", process.pid)
        return child

    def connection_made(self, transport):
        self.transport = transport

    def write(self, data: bytes):
        self.transport.write(data)

    def data_received(self, data: bytes):
        self.buffer += data
        while len(self.buffer) >= 4:
            size, start = struct.unpack_from("!i", self.buffer)[0], 4
            if size == -1:
                if len(self.buffer) < 12:
                    return
                size, start = struct.unpack_from("!Q", self.buffer, 4)[0], 12
            if len(self.buffer) < start + size:
                return
            try:
                # a seed's answer is tens of MB: read where it lies, not copied
                with memoryview(self.buffer) as view, view[start:start + size] as frame:
                    answer = pickle.loads(frame)
            except Exception as err:    # that batch fails, the others go on
                log.exception("could not read the writer process's answer")
                answer = [], [], Unavailable(f"the writer's answer could not be read ({err}); "
                                             "the write may or may not be saved"), False
            del self.buffer[:start + size]
            try:
                self.writer.answered(answer)
            except Exception:   # a bug here must not close the pipe
                log.exception("delivering the writer process's answer failed")

    def connection_lost(self, exc):
        self.gone = True
        if not self.closed.done():
            self.closed.set_result(None)
        if self.writer.child is self or any(c is self for c, _ in self.writer.in_flight):
            log.error("the writer process (pid %d) stopped%s", self.process.pid,
                      f" ({exc!r})" if exc else "")
            self.writer.lost(self)
            self.writer.loop.run_in_executor(None, _reap, self.process)

    async def stop(self):
        self.gone = True
        self.transport.close()        # it finishes its batch, closes the database and leaves
        await self.closed
        await self.writer.loop.run_in_executor(None, _reap, self.process)


def _spawn(path: str, synchronous: str, transparency: bool, merge: bool):
    # Not fork: this process has threads. A fork server (one small process, started with the
    # first writer, this module imported) forks each child in a few milliseconds where a spawn
    # takes ~130 ms: a store opened again and again (tests, restarts) does not wait for it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([serve.__module__])
    ours, theirs = context.Pipe()
    process = context.Process(target=serve, daemon=True, name="auditd writer",
                              args=(theirs, path, synchronous, transparency, merge))
    process.start()
    theirs.close()
    try:
        kind, value = ours.recv()
    except EOFError:
        _reap(process)
        raise Unavailable(f"the writer process exited at start (code {process.exitcode}): "
                          "see the log above") from None
    if kind != "ready":
        ours.close()
        _reap(process)
        raise value
    if value:
        log.warning("the writer process could not lower its priority (niceness +%d: %s); it "
                    "runs at the server's, so under load a read may wait behind a write "
                    "(allow setpriority, e.g. SystemCallFilter=setpriority under systemd)",
                    NICENESS, value)
    return process, ours


def _reap(process):
    process.join(STOP_WAIT)
    if process.exitcode is None:
        process.kill()
        process.join()
