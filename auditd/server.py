"""Running the application: listening, the first admin key, signals, systemd and a graceful stop."""
import asyncio
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from . import keys, systemd
from .app import create_app
from .config import Config
from .errors import AuditdError

log = logging.getLogger("auditd")

# How long past shutdown_timeout the stop may take (closing streams, the last commit) before the
# process gives up waiting and exits anyway. Acknowledged writes are committed already by then.
SHUTDOWN_GRACE = 5.0


class StartError(AuditdError):
    """The server cannot start: the address is taken, the database cannot be opened, ..."""


# ---------------------------------------------------------------------------- logging

_BARE = re.compile(r"[A-Za-z0-9_.:/@+{}\-]+")
_SECRETS = [
    (re.compile(r"(?i)\b(token|apikey|api_key|key|password|secret)=([^&\s\"']+)"),
     r"\1=<redacted>"),
    (re.compile(r"(?i)\b(Basic|Bearer|ApiKey)\s+[A-Za-z0-9+/=._~:-]+"), r"\1 <redacted>"),
]
_SYSLOG_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def logfmt_value(value) -> str:
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _stderr_is_journal() -> bool:
    """systemd sets $JOURNAL_STREAM to the device:inode of the stream it connected to the journal."""
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{stat.st_dev}:{stat.st_ino}"


class KeyValueFormatter(logging.Formatter):
    """One line per event: `level=info logger=auditd msg="..." key=value...`.

    Structured fields come from `extra={"fields": {...}}`. Tracebacks stay on the same line (as an
    escaped `exc=` value). Under journald the time is left to the journal and the line starts with
    a `<priority>` prefix, so `journalctl -p warning` works. Anything that looks like a credential
    is replaced by `<redacted>`, whatever logger wrote it."""

    def __init__(self, journald: bool = False):
        super().__init__()
        self.journald = journald
        self._second, self._stamp = None, ""

    def head(self, created: float, level: str, logger: str) -> str:
        """`time=... level=... logger=...`, or `<priority>level=...` under journald."""
        if self.journald:
            return f"<{_SYSLOG_PRIORITY.get(level, 6)}>level={level.lower()} logger={logger}"
        second = int(created)
        if second != self._second:   # strftime once a second, not once a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        millis = int((created - second) * 1000)
        return f"time={self._stamp}.{millis:03d}Z level={level.lower()} logger={logger}"

    def format(self, record: logging.LogRecord) -> str:
        parts = [self.head(record.created, record.levelname, record.name)]
        parts.append(f"msg={logfmt_value(record.getMessage())}")
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={logfmt_value(value)}")
        if record.exc_info:
            parts.append(f"exc={logfmt_value(self.formatException(record.exc_info))}")
        line = " ".join(parts)
        return line if getattr(record, "redacted", False) else redact(line)


class LogHandler(logging.StreamHandler):
    """The one log handler: key=value lines on stderr.

    Access-log lines skip the logging module's per-record machinery (which cost more than the rest
    of a small request) and are queued with `queue_access`; the queue is written in one go at the
    end of the event loop's turn, so a busy server makes one write for many requests. Any other
    record writes the queued lines first, so lines stay in order, and `flush` (at exit) writes
    whatever is queued."""

    def __init__(self, stream, journald: bool = False):
        super().__init__(stream)
        self.formatter = KeyValueFormatter(journald)
        self.setFormatter(self.formatter)
        self.queued: list[str] = []

    def queue_access(self, fields: str):
        """`fields`: the access line after its head, each value already logfmt-safe."""
        self.queued.append(f"{self.formatter.head(time.time(), 'INFO', ACCESS_LOGGER)} {fields}")
        if len(self.queued) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:    # no loop (never the case in the server): write it now
                self.flush()

    def _write_queued(self):
        if self.queued:
            lines, self.queued = self.queued, []
            self.stream.write("\n".join(lines) + "\n")

    def emit(self, record: logging.LogRecord):
        self.acquire()
        try:
            self._write_queued()
        finally:
            self.release()
        super().emit(record)

    def flush(self):
        self.acquire()
        try:
            self._write_queued()
            super().flush()
        except (OSError, ValueError):   # stderr closed: nothing more can be said
            pass
        finally:
            self.release()


ACCESS_LOGGER = "auditd.access"


def setup_logging(level: str):
    handler = LogHandler(sys.stderr, journald=_stderr_is_journal())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Who logged from which thread and process is never printed: do not collect it per record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


class AccessLogger(AbstractAccessLogger):
    """One line per request: the route template and the path, never the query string (the streams
    take `?user=&token=`) nor any header, so no credential reaches the log. Written through the
    `LogHandler` when there is one, else as an ordinary record."""

    def __init__(self, logger, log_format):
        super().__init__(logger, log_format)
        handlers = logging.getLogger().handlers
        self.handler = handlers[0] if len(handlers) == 1 and isinstance(handlers[0], LogHandler) \
            else None

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request, response, time):
        resource = request.match_info.route.resource
        principal = request.get(keys.PRINCIPAL)
        route = resource.canonical if resource is not None else "-"
        user = principal.name if principal else "-"
        if self.handler is None or not self.logger.isEnabledFor(logging.INFO):
            self.logger.info("request", extra={"redacted": True, "fields": {
                "method": request.method, "route": route, "path": _log_path(request.path),
                "status": response.status, "ms": f"{time * 1000:.1f}",
                "remote": request.remote or "-", "user": user}})
            return
        # Clients repeat the same few requests: their fixed fields are formatted once.
        key = (request.method, route, request.path, request.remote, user)
        parts = _ACCESS_PARTS.get(key)
        if parts is None:
            if len(_ACCESS_PARTS) >= 4096:
                _ACCESS_PARTS.clear()
            parts = _ACCESS_PARTS[key] = (
                f"msg=request method={logfmt_value(key[0])} route={logfmt_value(route)} "
                f"path={logfmt_value(_log_path(key[2]))} status=",
                f" remote={logfmt_value(key[3] or '-')} user={logfmt_value(user)}")
        self.handler.queue_access(f"{parts[0]}{response.status} ms={time * 1000:.1f}{parts[1]}")


_ACCESS_PARTS: dict[tuple, tuple[str, str]] = {}


def _log_path(path: str) -> str:
    return redact(path) if "=" in path or " " in path else path


# ---------------------------------------------------------------------------- serving

def public_address(config: Config, addresses) -> str:
    """host:port a client on this machine can use (the first TCP address actually listened on)."""
    for address in addresses:
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            break
    else:
        host, port = config.host, config.port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def banner(base: str, key: str) -> str:
    return (
        "auditd: created the first user 'admin' (role admin). Its API key is shown only this once:\n"
        f"\n    {key}\n\n"
        "Point the docker-cloud CLI (or the python-dockercloud SDK) at this server with:\n\n"
        f"    export DOCKERCLOUD_REST_HOST=http://{base}\n"
        f"    export DOCKERCLOUD_STREAM_HOST=ws://{base}\n"
        "    export DOCKERCLOUD_USER=admin\n"
        f"    export DOCKERCLOUD_APIKEY={key}\n\n"
        "then try:  docker-cloud action ls\n")


async def ensure_first_admin(app: web.Application, base: str):
    """On an empty database, create 'admin' and print its key (stdout, once)."""
    store = app[keys.STORE]
    if await store.count_users() == 0:
        key = await store.add_user("admin", "admin")
        print(banner(base, key), flush=True)


async def _watchdog(app: web.Application, interval: float):
    """Ping systemd's watchdog while the loop runs and the database answers a query."""
    store = app[keys.STORE]
    while True:
        try:
            await asyncio.wait_for(store.ping(), timeout=interval)
        except Exception as err:   # noqa: BLE001 - a missed ping is how systemd learns of it
            log.warning("watchdog: the database did not answer (%r); not pinging systemd", err)
        else:
            systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def _start_sites(runner: web.AppRunner, config: Config, sockets):
    try:
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        else:
            await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
    except OSError as err:
        raise StartError(f"cannot listen on {config.host}:{config.port}: "
                         f"{err.strerror or err}; choose another --port or --host") from None


async def serve(config: Config, sockets=None, ready=None) -> int:
    """Serve until SIGTERM or SIGINT; then stop accepting, finish in-flight requests, close the
    streams with 1001, commit what is pending and return 0.

    `sockets`: listening sockets to serve on; by default the ones systemd passed (socket
    activation), else a new one bound to config.host:config.port."""
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal(signum):
        # A second Ctrl-C means "now"; a repeated SIGTERM (process managers resend it) does not.
        if stop.is_set() and signum == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting")
            force.set()
        elif stop.is_set():
            log.info("already stopping (%s)", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if sockets is None:
        sockets = systemd.listen_sockets()

    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=AccessLogger,
                           access_log=logging.getLogger("auditd.access") if config.access_log
                           else None, shutdown_timeout=config.shutdown_timeout,
                           handle_signals=False)
    try:
        await runner.setup()
    except BaseException as err:
        # Undo what started (the store's threads would keep the process alive), then explain.
        await runner.cleanup()
        if isinstance(err, (OSError, sqlite3.Error)):
            raise StartError(f"cannot open the database {config.db}: {err}") from None
        raise
    watchdog = None
    try:
        await _start_sites(runner, config, sockets)
        # Printed before "listening on" is logged: whoever waits for that line has the key.
        await ensure_first_admin(app, public_address(config, runner.addresses))
        addresses = ", ".join(str(a) for a in runner.addresses)
        log.info("listening on %s (database %s)", addresses, config.db,
                 extra={"fields": {"socket_activated": bool(sockets)}})
        systemd.notify("READY=1", f"STATUS=listening on {addresses}")
        interval = systemd.watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(_watchdog(app, interval))
        if ready is not None:
            ready(runner)
        await stop.wait()
        log.info("stopping: finishing requests in flight and closing streams")
        systemd.notify("STOPPING=1", "STATUS=stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if not await _stop(runner, config, force):
            _exit_now(1)
    log.info("stopped")
    return 0


async def _stop(runner: web.AppRunner, config: Config, force: asyncio.Event) -> bool:
    """Run the graceful stop; False when it took too long or a second signal cut it short."""
    cleanup = asyncio.create_task(runner.cleanup())
    forced = asyncio.create_task(force.wait())
    done, _ = await asyncio.wait({cleanup, forced}, timeout=config.shutdown_timeout
                                 + SHUTDOWN_GRACE, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if cleanup in done:
        cleanup.result()
        return True
    log.error("the stop did not finish in time; exiting now (acknowledged writes are committed)")
    return False


def _exit_now(code: int):
    """Leave without waiting for threads (a stuck database thread must not hold the exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    os._exit(code)
