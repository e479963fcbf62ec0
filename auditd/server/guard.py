"""Connection hygiene: no client can hold the server by opening connections and saying nothing.

- **Deadlines.** A connection must complete a request head within `head_timeout` seconds of
  opening, or of starting the next head after a response; a keep-alive connection that sends
  nothing more is closed after `idle_timeout`. A connection inside a request (its handler runs, or
  it is a WebSocket) is never closed by these.
- **A cap.** At most `max_connections` are open, kept well under the process's descriptor limit.
  At the cap a new connection takes the place of the oldest one that is not inside a request; when
  every connection is inside a request, the new one is answered 503 with Retry-After and closed.
- **Descriptors.** `raise_descriptor_limit()` lifts the soft RLIMIT_NOFILE to the hard one at start
  (under systemd, LimitNOFILE= sets both; the unit's seccomp filter forbids setrlimit).
- **Accept errors.** asyncio logs an accept failure (EMFILE) every time it retries, with a traceback;
  `quiet_accept_errors` lets one line a second through, with a count.

It works by giving aiohttp's server a request handler class that reports its state to a
`ConnectionGuard`; `tests/test_hostile.py` holds that to what it promises.
"""
import asyncio
import json
import logging
import resource
import time
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("auditd.server")

SWEEP_INTERVAL = 0.5
# Descriptors kept free under the limit: the database, log files and listening sockets (64), and
# the sockets accepted before the guard hears of them: asyncio accepts up to the listen backlog
# (128) per readiness event and makes their connections a loop turn or two later, so under load
# several bursts can be in flight (measured: two were not always enough).
RESERVED_DESCRIPTORS = 64 + 4 * 128
_REFUSAL_BODY = (b'{"error": "too many open connections: retry in a second, or reuse '
                 b'your connection"}')
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
           + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY)


def raise_descriptor_limit() -> int:
    """Lift the soft descriptor limit to the hard one where allowed; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:
            log.warning("could not raise the open-file limit from %d to %d (%s); set "
                        "LimitNOFILE= in the unit", soft, hard, err)
    return soft


def effective_cap(configured: int, soft_limit: int) -> int:
    """The connection cap: what is configured, but never so close to the descriptor limit that an
    accept could fail."""
    return max(16, min(configured, soft_limit - RESERVED_DESCRIPTORS))


class ConnectionGuard:
    def __init__(self, max_connections: int, head_timeout: float, idle_timeout: float):
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.open: dict["GuardedHandler", None] = {}    # insertion order: oldest first
        self.refused = self.evicted = self.timed_out = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, handler: "GuardedHandler") -> bool:
        """Make room for a new connection; False when there is none to make."""
        if len(self.open) >= self.max_connections:
            victim = next((h for h in self.open if h.waiting()), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            victim.drop()
        self.open[handler] = None
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        return True

    def closed(self, handler: "GuardedHandler"):
        self.open.pop(handler, None)

    def _sweep(self):
        self._sweeper = None
        now = time.monotonic()
        for handler in list(self.open):
            limit = self.idle_timeout if handler.idle_between_requests() else self.head_timeout
            if handler.waiting() and now - handler.waiting_since > limit:
                self.timed_out += 1
                handler.drop()
        if self.open:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def stop(self):
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class GuardedHandler(RequestHandler):
    """aiohttp's request handler, telling its guard what it is doing.

    "Waiting" means not inside a request: no handler running, nothing parsed and queued, not a
    WebSocket. `waiting_since` is when it last started waiting; `heard` whether any byte of the
    next head has arrived since."""

    guard: ConnectionGuard      # set on the subclass made for each server

    def connection_made(self, transport):
        self.refused = False
        self.waiting_since = time.monotonic()
        self.heard = False
        self.requests_done = 0
        if not self.guard.admit(self):
            self.refused = True
            transport.write(REFUSAL)
            transport.close()
            return
        super().connection_made(transport)

    def connection_lost(self, exc):
        self.guard.closed(self)
        if not self.refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes):
        if not self.heard and self.waiting():
            self.heard = True
        super().data_received(data)

    async def _handle_request(self, request, start_time, request_handler):
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self.requests_done += 1
            self.waiting_since = time.monotonic()
            self.heard = False

    def handle_error(self, request, status: int = 500, exc=None, message=None):
        """A request the parser refused (or one that failed outside every handler): a JSON error
        and one log line, never a traceback nor text/plain."""
        reason = (getattr(exc, "message", None) or message or str(exc or "")
                  or HTTPStatus(status).phrase)
        reason = str(reason).splitlines()[0][:200] if str(reason) else HTTPStatus(status).phrase
        log.info("refused a malformed request from %s: %s %s", request.remote or "-", status,
                 reason, extra={"fields": {"status": status}})
        if request.writer.output_size > 0:
            raise ConnectionError("the response was under way; the connection is closed")
        if status >= 500:
            text = ("Internal error: the server log has the details; retry, and report it if it "
                    "persists")
        else:
            text = (f"malformed HTTP request ({reason}): send a valid HTTP/1.1 request with UTF-8 "
                    "headers")
        response = web.Response(status=status, text=json.dumps({"error": text}),
                                content_type="application/json")
        response.force_close()
        return response

    def waiting(self) -> bool:
        return not (self._request_in_progress or self._messages or self._upgraded
                    or self.refused)

    def idle_between_requests(self) -> bool:
        """A kept-alive connection that has said nothing since its last answer."""
        return self.requests_done > 0 and not self.heard

    def drop(self):
        self.guard.closed(self)
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class GuardedServer(web.Server):
    """aiohttp's server, making guarded request handlers."""

    handler_class: type

    def __call__(self) -> RequestHandler:
        return self.handler_class(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server guards its connections (see the module docstring)."""

    def __init__(self, app, *, guard: ConnectionGuard, **kwargs):
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer   # the same server, with the handler class below
        server.handler_class = type("GuardedHandler", (GuardedHandler,), {"guard": self.guard})
        return server

    async def cleanup(self):
        self.guard.stop()
        await super().cleanup()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, every: float = 1.0):
    """Let at most one accept-failure report a second reach the log, without its traceback."""
    previous = loop.get_exception_handler()
    state = {"last": float("-inf"), "dropped": 0}

    def handler(loop, context):
        message = str(context.get("message", ""))
        if "accept" not in message.lower():
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - state["last"] < every:
            state["dropped"] += 1
            return
        log.error("%s: %r (%d more like it since the last report)", message,
                  context.get("exception"), state["dropped"])
        state["last"], state["dropped"] = now, 0

    loop.set_exception_handler(handler)
