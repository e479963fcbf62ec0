"""The transports: HTTP POST of NDJSON, and syslog (RFC 5424) to a local socket, UDP or TCP.

`send(events)` returns once the sink has taken the whole batch, or raises SinkError saying why
(never with the sink's headers in it: they hold tokens).

- HTTP: one POST per batch, `Content-Type: application/x-ndjson`, one event per line; taken
  means a 2xx answer. Redirects are not followed (a 3xx is a failure to fix in the url).
- syslog: one RFC 5424 message per event,
  `<PRI>1 TIMESTAMP HOSTNAME auditd PROCID TYPE - JSON` (severity info, the sink's facility,
  TIMESTAMP the event's time, TYPE the event type, no structured data, the JSON without a BOM).
  unix: and udp:// send one datagram each (over MAX_DATAGRAM bytes, the event goes without the
  call's body and its details, marked "truncated"); tcp:// frames them by octet counting (RFC
  6587 3.4.1: `LENGTH SP MESSAGE`). Taken means the socket accepted them: syslog has no
  acknowledgement, so a receiver that drops a datagram or dies with a TCP buffer full loses those.
"""
import asyncio
import os
import socket

import aiohttp

from ... import __version__
from ...config.forward import SYSLOG_FACILITIES
from ...model.dates import format_iso

HTTP_TIMEOUT = 30.0
MAX_DATAGRAM = 60_000
INFO = 6


class SinkError(Exception):
    """A batch was not taken; the message says why."""


class HttpSink:
    def __init__(self, sink):
        self.sink = sink
        self.session: aiohttp.ClientSession | None = None

    async def send(self, events):
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                headers={"User-Agent": f"auditd/{__version__}"})
        body = b"".join(event.line() + b"\n" for event in events)
        headers = {"Content-Type": "application/x-ndjson", **dict(self.sink.headers)}
        try:
            async with self.session.post(self.sink.url, data=body, headers=headers,
                                         allow_redirects=False) as resp:
                if 200 <= resp.status < 300:
                    await resp.read()
                    return
                text = (await resp.content.read(200)).decode("utf-8", "replace").strip()
                raise SinkError(f"HTTP {resp.status} {resp.reason or ''}".strip()
                                + (f": {text}" if text else ""))
        except asyncio.TimeoutError:
            raise SinkError(f"no answer within {HTTP_TIMEOUT:g} s") from None
        except aiohttp.ClientError as err:
            raise SinkError(f"{type(err).__name__}: {err}") from None

    async def close(self):
        if self.session is not None:
            await self.session.close()
            self.session = None


class SyslogSink:
    def __init__(self, sink):
        self.sink = sink
        self.prefix = SYSLOG_FACILITIES.index(sink.facility) * 8 + INFO
        host = socket.gethostname() or "-"
        self.host = "".join(c for c in host if "!" <= c <= "~")[:255] or "-"
        self.sock: socket.socket | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def message(self, event, short: bool = False) -> bytes:
        head = (f"<{self.prefix}>1 {format_iso(event.time)} {self.host} auditd {os.getpid()} "
                f"{event.type} - ")
        return head.encode("ascii") + event.line(short)

    async def send(self, events):
        kind = self.sink.syslog[0]
        try:
            if kind == "tcp":
                await self._send_stream(events)
            else:
                messages = [self.message(e) for e in events]
                messages = [m if len(m) <= MAX_DATAGRAM else self.message(e, short=True)
                            for m, e in zip(messages, events)]
                await asyncio.to_thread(self._send_datagrams, messages)
        except (OSError, asyncio.TimeoutError) as err:
            await self.close()
            reason = err.strerror if isinstance(err, OSError) and err.strerror else repr(err)
            raise SinkError(f"syslog {self.sink.target.split(' ', 1)[1]}: {reason}") from None

    def _send_datagrams(self, messages):
        if self.sock is None:
            kind, *where = self.sink.syslog
            family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
            if kind == "udp":
                family = socket.getaddrinfo(where[0], where[1], type=socket.SOCK_DGRAM)[0][0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.settimeout(HTTP_TIMEOUT)
            try:
                sock.connect(where[0] if kind == "unix" else tuple(where))
            except OSError:
                sock.close()
                raise
            self.sock = sock
        for message in messages:
            self.sock.send(message)

    async def _send_stream(self, events):
        if self.writer is not None and self.reader.at_eof():   # the receiver hung up
            await self.close()
        if self.writer is None:
            _, host, port = self.sink.syslog
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                    HTTP_TIMEOUT)
        for event in events:
            message = self.message(event)
            self.writer.write(b"%d " % len(message) + message)
        await asyncio.wait_for(self.writer.drain(), HTTP_TIMEOUT)

    async def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None


def transport_for(sink):
    return HttpSink(sink) if sink.url else SyslogSink(sink)
