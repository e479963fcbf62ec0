"""The server's logs: one `key=value` line per event on stderr, journald priorities under systemd,
credentials redacted, and an access log that never shows credentials or query strings."""
import asyncio
import json
import logging
import os
import re
import sys
import time

from aiohttp.abc import AbstractAccessLogger

from ..http.appkeys import PRINCIPAL

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
        try:
            resource = request.match_info.route.resource
        except (AssertionError, AttributeError):   # refused by the parser: no route was matched
            resource = None
        principal = request.get(PRINCIPAL)
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
