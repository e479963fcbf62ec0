"""Where a request body is parsed: here when it is small, in a worker process when it is big.

A parser (`bodies.py`) run here on a big body would stall every other request: json's C
decoder, `bytes.count` and `str.split` hold the GIL for as long as they run (~10-25 ms for 8 MB
of strings, ~300 ms for 8 MB of tiny JSON values). In the worker process they stall nobody. Its
traffic is shaped so that no step here holds the GIL for long either: the body goes out as the
chunks it arrived in (written from memory as it is, no pickling, no 8 MB copy), and a list
result comes back in parts of about PART_BYTES, each unpickled on its own (one 8 MB unpickle
held the GIL ~5-10 ms on the benchmark machine). The exchanges run on one thread of their own,
one body at a time; how many bytes wait for it is bounded by the body budget (limits.py).

This module and `bodies.py` import nothing of aiohttp, so the worker process stays small.
"""
import asyncio
import atexit
import logging
import multiprocessing
import pickle
import signal
from concurrent.futures import ThreadPoolExecutor

from ..model.errors import Unavailable

log = logging.getLogger("auditd.app")

OFF_LOOP_BYTES = 64 * 1024   # bodies above this are parsed in the worker process (a parser
                             # that costs more per byte says less as its `off_loop_bytes`)
PART_BYTES = 256 * 1024      # about this much of a list result comes back at a time
STOP_WAIT = 5.0              # seconds a stopping worker gets before it is killed


class BodyParser:
    """Runs `parser(body, *args)` (body: the bytes of `chunks`) here for a small body, in the
    worker process for a big one. The worker starts with the first big body (a server that
    never gets one never has it), again after it died, and stops with the server."""

    def __init__(self):
        self._exchanges = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditd-parser")
        self._worker: _Worker | None = None     # used on the exchange thread only
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The worker process's pid, while it runs."""
        worker = self._worker
        return worker.process.pid if worker is not None else None

    async def parse(self, parser, chunks: list[bytes], size: int, *args):
        if size <= getattr(parser, "off_loop_bytes", OFF_LOOP_BYTES):
            return parser(b"".join(chunks), *args)
        return await asyncio.get_running_loop().run_in_executor(
            self._exchanges, self._exchange, parser, chunks, args)

    def close(self):
        """Stop the worker, after the exchange in progress (blocks: call it off the loop)."""
        if self._closed:
            return
        self._closed = True
        self._exchanges.submit(self._stop_worker).result()
        self._exchanges.shutdown()

    # -- on the exchange thread

    def _exchange(self, parser, chunks, args):
        # Twice: the worker may have died since the last big body (killed, out of memory); a
        # parser is a pure function, so asking again is safe.
        for _ in range(2):
            if self._worker is None:
                try:
                    self._worker = _Worker()
                except OSError as err:       # no memory, no processes left, ...
                    raise Unavailable("the server could not start the process that parses "
                                      f"large request bodies ({err}); retry") from None
            try:
                kind, value = self._worker.run(parser, chunks, args)
            except (EOFError, OSError):
                log.warning("the process that parses large request bodies (pid %d) stopped",
                            self._worker.process.pid)
                self._stop_worker()
                continue
            if kind == "error":
                raise value
            return value
        raise Unavailable("the process that parses large request bodies stopped while parsing "
                          "this one (killed, or out of memory?); nothing was saved: retry")

    def _stop_worker(self):
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()


class _Worker:
    """The worker process and its end of the pipe to it."""

    def __init__(self):
        context = multiprocessing.get_context("spawn")   # not fork: this process has threads
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs,), daemon=True,
                                       name="auditd body parser")
        self.process.start()
        theirs.close()
        # At exit multiprocessing joins its children: this one leaves once its pipe is closed.
        atexit.register(self.conn.close)
        log.info("started the process that parses large request bodies (pid %d)",
                 self.process.pid)

    def run(self, parser, chunks, args) -> tuple[str, object]:
        """("value", what the parser returned) or ("error", what it raised)."""
        # The call is pickled on its own, so that one the worker cannot rebuild (an argument
        # whose file went away) is an error it answers with, after reading the body as usual.
        self.conn.send((pickle.dumps((parser, args), pickle.HIGHEST_PROTOCOL), len(chunks)))
        for chunk in chunks:
            self.conn.send_bytes(chunk)
        kind, value = self.conn.recv()
        if kind != "parts":
            return kind, value
        result = []
        for _ in range(value):
            result.extend(pickle.loads(self.conn.recv_bytes()))
        return "value", result

    def stop(self):
        atexit.unregister(self.conn.close)
        self.conn.close()              # it reads the end of its input and leaves
        self.process.join(STOP_WAIT)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()


# ---------------------------------------------------------------------------- the worker

def _serve(conn):
    """The worker's loop: a body in, its parser's answer out, until the server closes the pipe
    (or is gone: a killed server closes it too)."""
    # Ctrl-C and a service stop reach the whole process group; the server stops this process
    # itself, after the requests in flight (a worker gone first would fail them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            call, count = conn.recv()
            body = b"".join([conn.recv_bytes() for _ in range(count)])
        except (EOFError, OSError):
            return
        try:
            parser, args = pickle.loads(call)
            result = parser(body, *args)
        except Exception as err:  # noqa: BLE001 - the server answers with it (a 400, mostly)
            _send(conn, ("error", err))
            continue
        finally:
            del body
        if type(result) is not list:
            _send(conn, ("value", result))
            continue
        parts = _parts(result)
        _send(conn, ("parts", len(parts)))
        for start, end in parts:
            conn.send_bytes(pickle.dumps(result[start:end], pickle.HIGHEST_PROTOCOL))


def _send(conn, message):
    try:
        conn.send(message)
    except (pickle.PicklingError, TypeError, AttributeError):   # an error that cannot travel
        conn.send(("error", RuntimeError(repr(message[1]))))


def _parts(items: list) -> list[tuple[int, int]]:
    """(start, end) of runs of about PART_BYTES of the items' text."""
    parts, start, size = [], 0, 0
    for at, item in enumerate(items):
        size += _size(item)
        if size >= PART_BYTES:
            parts.append((start, at + 1))
            start, size = at + 1, 0
    if start < len(items) or not parts:
        parts.append((start, len(items)))
    return parts


def _size(item) -> int:
    if isinstance(item, (str, bytes)):
        return len(item) + 16
    if isinstance(item, (tuple, list)):
        return sum(_size(value) for value in item) + 16
    if isinstance(item, dict):      # a seed's records
        return sum(_size(key) + _size(value) for key, value in item.items()) + 16
    return 16
