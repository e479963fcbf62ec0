"""Request bodies into what a handler needs, and where that work runs.

Each parser is a pure function of the body's bytes (and plain arguments) that returns what the
handler uses, checked and bounded (a record's fields, at most MAX_LOG_LINES log lines), or
raises InvalidRequest naming the field.

A body above OFF_LOOP_BYTES is parsed in a separate process (`BodyParser`). In this one it would
stall every other request: json's C decoder, `bytes.count` and `str.split` hold the GIL for as
long as they run (tens of milliseconds for 8 MB; far more for 8 MB of tiny JSON values), and a
Python-level loop on a worker thread still makes the event loop wait up to the 5 ms switch
interval each time it wants the GIL back. In a separate process they stall nobody, and what
comes back is the parser's bounded answer, not the decoded body. This module imports nothing of
aiohttp, so that process stays small.
"""
import asyncio
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from marshmallow import ValidationError

from ..model.errors import InvalidRequest, Unavailable
from ..schemas import (MAX_LOG_LINES, STATE_CHANGE_SCHEMA, describe_errors, load_log_lines,
                       load_record_action)

log = logging.getLogger("auditd.app")

OFF_LOOP_BYTES = 64 * 1024   # bodies above this are parsed in the parser process
PARENT_CHECK = 0.5           # seconds between the parser process's looks for its server


class BodyParser:
    """Runs `parser(raw, *args)`: here for a small body, in a worker process for a big one.

    The process starts with the first big body (a server that never gets one never has it), and
    again after it died; it stops with the server. Big bodies take their turn in it one at a
    time; how many bytes of them there are at once is bounded by the body budget (limits.py)."""

    def __init__(self):
        self._starting: asyncio.Future | None = None   # -> (ProcessPoolExecutor, its pid)

    @property
    def pid(self) -> int | None:
        """The worker process's pid, once it runs."""
        started = self._starting
        if started is None or not started.done() or started.exception() is not None:
            return None
        return started.result()[1]

    async def parse(self, parser, raw: bytes, *args):
        if len(raw) <= OFF_LOOP_BYTES:
            return parser(raw, *args)
        # Twice: the process may have died since the last big body (the pool may not know it
        # yet when this one is handed over); a parser is a pure function, so a retry is safe.
        for _ in range(2):
            pool = await self._pool()
            try:
                return await asyncio.wrap_future(pool.submit(parser, raw, *args))
            except BrokenProcessPool:
                self._forget(pool)
        raise Unavailable("the process that parses large request bodies stopped while parsing "
                          "this one (killed, or out of memory?); nothing was saved: retry")

    async def _pool(self) -> ProcessPoolExecutor:
        if self._starting is None:
            # Starting it (fork, exec, pickling what it needs) costs this process a few
            # milliseconds: on a thread, not on the event loop.
            self._starting = asyncio.ensure_future(asyncio.to_thread(_start_worker))
        starting = self._starting
        try:
            return (await asyncio.shield(starting))[0]
        except Exception as err:   # noqa: BLE001 - the next big body tries again
            if self._starting is starting:
                self._starting = None
            log.error("could not start the process that parses large request bodies: %s", err)
            raise Unavailable("the server could not start the process that parses large "
                              f"request bodies ({err}); nothing was saved: retry") from None

    def _forget(self, pool: ProcessPoolExecutor):
        if self._starting is not None and self.pid is not None \
                and self._starting.result()[0] is pool:
            log.warning("the process that parses large request bodies (pid %d) stopped",
                        self.pid)
            self._starting = None
            pool.shutdown(wait=False)

    def close(self):
        """Stop the process (blocks until it has exited)."""
        starting, self._starting = self._starting, None
        if starting is not None and starting.done() and starting.exception() is None:
            starting.result()[0].shutdown(wait=True, cancel_futures=True)


def _start_worker() -> tuple[ProcessPoolExecutor, int]:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(os.getpid(),))
    try:
        pid = pool.submit(os.getpid).result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    log.info("started the process that parses large request bodies (pid %d)", pid)
    return pool, pid


def _worker_start(server: int):
    # Ctrl-C and a service stop reach the whole process group: the server stops this process
    # itself, after the requests in flight (a worker dying first would fail them). A server that
    # is killed cannot: then this process notices that and leaves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server,), name="auditd-parent-watch",
                     daemon=True).start()


def _exit_with(server: int):
    while os.getppid() == server:
        time.sleep(PARENT_CHECK)
    os._exit(0)


# ---------------------------------------------------------------------------- parsers

def decode_json(raw: bytes):
    """The JSON value of a body; 400 with where it is wrong."""
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as err:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte "
                             f"{err.object[err.start]:#04x} at offset {err.start}); send JSON in "
                             "UTF-8") from None
    try:
        # what json.loads(raw, parse_constant=...) does, without a new decoder per request
        payload = _DECODER.decode(text)
    except ValueError as err:
        raise InvalidRequest(f"the request body is not valid JSON ({err}); send a JSON object") \
            from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    if b"\\u" in raw and _has_lone_surrogate(payload):
        raise InvalidRequest("the request body is not valid JSON: a \\u escape is half of a "
                             "surrogate pair, which is no character")
    return payload


def record_fields(raw: bytes) -> dict:
    """A producer's new action (POST .../action/): its fields, checked."""
    payload = decode_json(raw)
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object with at least 'action'")
    try:
        return load_record_action(payload)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def new_state(raw: bytes) -> str:
    """A producer's state change (PATCH .../action/UUID/): the state."""
    payload = decode_json(raw)
    if not isinstance(payload, dict):
        raise InvalidRequest('the request body must be a JSON object: {"state": "..."}')
    try:
        return STATE_CHANGE_SCHEMA.load(payload)["state"]
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def json_log_lines(raw: bytes, now: int) -> list:
    """[(ts, stream_type, line)] from a JSON array of strings or of log objects."""
    try:
        return load_log_lines(decode_json(raw), now)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def text_log_lines(raw: bytes, now: int) -> list:
    """One line per line of a text/plain body (bytes that are not UTF-8 become U+FFFD); the
    line cap is checked before the body is split."""
    if raw.count(b"\n") > MAX_LOG_LINES:
        raise InvalidRequest(f"lines: at most {MAX_LOG_LINES} lines per request")
    payload = raw.decode("utf-8", errors="replace").split("\n")
    if payload and payload[-1] == "":
        payload.pop()
    try:
        return load_log_lines([line[:-1] if line.endswith("\r") else line for line in payload],
                              now)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)   # NaN and Infinity are not JSON


def _has_lone_surrogate(payload) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False
    return False
