"""The WebSocket handlers: an action's log lines, and the events stream (CONTRACT.md section 7).

Each stream runs two tasks: a sender that writes shared, pre-rendered frames (`auditd.streams`)
straight to the socket's transport, and a reader that answers the client's pings and notices
when it leaves. The sender waits for the client to take what it was sent (the transport's flow
control); one that takes nothing for `config.stream_stall_seconds` is closed with 1013, so a
stalled client holds at most one batch and the transport's write buffer.
"""
import asyncio
import contextlib
import json
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from ..model.actions import FINAL_STATES
from ..model.errors import InvalidRequest
from ..schemas import ascii_int, query_bool
from ..streams.frames import as_array, log_frame, text_frame
from ..streams.logs import BATCH_BYTES
from .appkeys import CONFIG, CREDENTIALS, PRINCIPAL, STORE, STREAMS
from .console.origin import check_origin
from .requests import namespaces, single_query

log = logging.getLogger("auditd.streams")

DEFAULT_TAIL = 300
READ_CHUNK = 256          # lines read from the store at a time by a follower behind the window
CLOSE_TIMEOUT = 5.0       # how long a close waits for the client's answering close frame
TRY_AGAIN_LATER = 1013

STALLED = "client too slow: it took nothing for {:g} s; reconnect"
OVERFLOWED = "subscriber too slow: its backlog of events overflowed; reconnect"


class Stalled(Exception):
    """The client took nothing for stall_seconds."""


class Gone(Exception):
    """The socket is closed or closing: nothing more can be sent."""


def _parse_tail(value: str | None) -> int | None:
    if value is None:
        return DEFAULT_TAIL
    if value.lower() == "all":
        return None
    lines = ascii_int(value)
    if lines is not None:
        return lines
    raise InvalidRequest(f"tail must be a number of lines (digits 0-9) or 'all', not {value!r}")


def _parse_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    try:
        return query_bool(value)
    except ValueError as err:
        raise InvalidRequest(f"{name} {err}, not {value!r}") from None


class Stream:
    """One open WebSocket: writing frames with flow control, and closing it once, with a proper
    close handshake. It is what `Streams.sockets` holds: the shutdown calls its `close()`."""

    def __init__(self, request: web.Request, kind: str):
        self.request = request
        self.kind = kind
        self.streams = request.app[STREAMS]
        self.stall_seconds = request.app[CONFIG].stream_stall_seconds
        self.ws = web.WebSocketResponse(autoping=True, compress=False, timeout=CLOSE_TIMEOUT,
                                        max_msg_size=64 * 1024)
        # who is reading, checked again while the stream is open (see watch_access)
        self.principal = request[PRINCIPAL]
        self.credentials = request.get(CREDENTIALS)

    async def open(self):
        check_origin(self.request)   # a browser page of another origin is refused (403)
        if not self.ws.can_prepare(self.request).ok:
            raise InvalidRequest("this endpoint is a WebSocket: send an Upgrade: websocket "
                                 "handshake")
        self.writer = await self.ws.prepare(self.request)
        self.transport = self.request.transport
        loop = asyncio.get_running_loop()
        self.stop = loop.create_future()      # resolved with (code, reason) to end the stream
        self.ended = loop.create_future()     # resolved once the socket is closed
        self.streams.sockets.add(self)
        self.streams.count(f"{self.kind}_opened")

    async def write(self, data: bytes):
        """Send frames; return once the client has taken enough that more may be written."""
        transport = self.transport
        if self.ws.closed or transport is None or transport.is_closing():
            raise Gone()
        transport.write(data)
        if not transport.get_write_buffer_size():
            return      # all of it went to the socket: nothing to wait for (and no timer to set)
        try:
            async with asyncio.timeout(self.stall_seconds):
                await self.writer.drain()
        except TimeoutError:
            raise Stalled() from None

    def end(self, code: int, reason: str):
        """Ask the stream to close with `code` and `reason`."""
        if not self.stop.done():
            self.stop.set_result((code, reason))

    async def close(self, *, code: int, message: bytes = b""):
        """End the stream and wait (briefly) until its socket is closed."""
        self.end(code, message.decode("utf-8", "replace"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ended), CLOSE_TIMEOUT + 1)

    async def serve(self, sender) -> web.WebSocketResponse:
        """Run `sender` (it returns the close code and reason) until it ends, the client leaves
        or `end()` is called; then close the socket."""
        send = asyncio.create_task(self._send(sender))
        read = asyncio.create_task(self._read())
        try:
            done, _ = await asyncio.wait({send, read, self.stop},
                                         return_when=asyncio.FIRST_COMPLETED)
            code, reason = None, ""
            if send in done:
                code, reason = send.result()
            elif self.stop in done:
                code, reason = self.stop.result()
            # Stop reading before closing: aiohttp's close() would otherwise drop the connection
            # right after its close frame instead of waiting for the client's answer.
            await _cancel(send, read)
            if code is not None and not self.ws.closed:
                if code == TRY_AGAIN_LATER:
                    self.streams.count(f"{self.kind}_closed_slow")
                # The close frame goes after what is buffered; the client's answering close is
                # waited for at most CLOSE_TIMEOUT.
                await self.ws.close(code=code, message=reason.encode()[:123], drain=False)
        finally:
            await _cancel(send, read)
            self.streams.sockets.discard(self)
            self.streams.count(f"{self.kind}_closed")
            if not self.ended.done():
                self.ended.set_result(None)
        return self.ws

    async def _send(self, sender):
        try:
            return await sender
        except Stalled:
            log.info("closing a %s stream whose client took nothing for %g s",
                     self.kind, self.stall_seconds)
            return TRY_AGAIN_LATER, STALLED.format(self.stall_seconds)
        except (Gone, ConnectionError):
            return None, ""
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a %s stream failed", self.kind)
            return WSCloseCode.INTERNAL_ERROR, "internal error: the server log has the details"

    async def _read(self):
        """Read (and so answer pings) until the client closes or goes away."""
        async for message in self.ws:
            if message.type == WSMsgType.ERROR:
                break


async def _cancel(*tasks):
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# ---------------------------------------------------------------------------- revoked access

ACCESS_CHECK_INTERVAL = 0.5
REVOKED = ("access changed: the credentials or memberships this stream was opened with no "
           "longer hold")


async def watch_access(app: web.Application):
    """While the server runs: every ACCESS_CHECK_INTERVAL, check each open stream's credentials
    again, and close with 1008 (policy violation) a stream whose user, key, role or memberships
    changed: a removed member or a rotated key stops reading within a second, as REST access
    does at once."""
    store, streams = app[STORE], app[STREAMS]
    while True:
        await asyncio.sleep(ACCESS_CHECK_INTERVAL)
        checked: dict[tuple, object] = {}
        for stream in list(streams.sockets):
            if stream.credentials is None:
                continue
            if stream.credentials not in checked:
                try:
                    checked[stream.credentials] = await store.authenticate(*stream.credentials)
                except Exception:   # noqa: BLE001 - the store failing is not a revocation
                    checked[stream.credentials] = stream.principal
            if checked[stream.credentials] != stream.principal:
                stream.end(WSCloseCode.POLICY_VIOLATION, REVOKED)


# ---------------------------------------------------------------------------- action logs

async def action_logs(request: web.Request) -> web.StreamResponse:
    params = single_query(request, allowed={"tail", "follow", "batch", "user", "token", "ticket"})
    tail = _parse_tail(params.get("tail"))
    follow = _parse_bool("follow", params.get("follow"), True)
    arrays = _parse_bool("batch", params.get("batch"), False)
    store = request.app[STORE]
    action = await store.get_action(request.match_info["uuid"], namespaces(request))   # 404 first
    stream = Stream(request, "logs")
    await stream.open()
    hub = request.app[STREAMS].logs
    feed = hub.attach(action["id"])
    try:
        return await stream.serve(
            _follow(stream, store, feed, action["uuid"], tail, follow, arrays))
    finally:
        hub.detach(feed)


async def _follow(stream: Stream, store, feed, uuid: str, tail: int | None, follow: bool,
                  arrays: bool = False):
    """Send the last `tail` lines, then (following) every new line up to the line count at
    which the action became final; then close normally. With `arrays`, each message is the JSON
    array of the lines of one write instead of one line."""
    # Read the action again now that the feed is attached. Commits reach the feed on this loop
    # after they are durable: one this read does not see reaches the feed after it, one that
    # reached the feed before the attach is in what this read sees. No line falls in between.
    action = await store.get_action(uuid, None)
    count = action["log_count"]
    feed.known(count)
    cursor = 0 if tail is None else max(0, count - tail)
    # Without follow, or on an action that is final already, the lines committed by now are
    # the whole stream (late lines on a final action included).
    stop_at = count if (action["state"] in FINAL_STATES or not follow) else None
    while True:
        last = stop_at if stop_at is not None else feed.final_seq
        if last is not None and cursor >= last:
            return WSCloseCode.OK, "end of the log"
        upto = feed.latest if last is None else last
        if cursor < upto:
            batch = feed.batch_after(cursor, upto)
            if batch is None:
                batch = await _read_batch(store, feed.action_id, cursor, upto)
                if batch[0] == cursor:
                    return WSCloseCode.OK, "the action's log is no longer stored"
            cursor, data = batch
            await stream.write(as_array(data) if arrays else data)
            continue
        await feed.wait_beyond(cursor)


async def _read_batch(store, action_id: int, cursor: int, last: int) -> tuple[int, bytes]:
    """The next lines from the store, for a follower behind the window."""
    rows = await store.read_logs(action_id, cursor, min(READ_CHUNK, last - cursor))
    frames, size = [], 0
    for seq, ts, stream_type, line in rows:
        frame = log_frame(ts, stream_type, line)
        frames.append(frame)
        cursor = seq
        size += len(frame)
        if size >= BATCH_BYTES:
            break
    return cursor, b"".join(frames)


# ---------------------------------------------------------------------------- events

async def events(request: web.Request) -> web.StreamResponse:
    params = single_query(request, allowed={"type", "object", "parent", "parents", "user", "token",
                                            "ticket"})
    principal = request[PRINCIPAL]
    visible = namespaces(request)
    parents = [p for key in ("parent", "parents") if key in params
               for p in params[key].split(",") if p]
    stream = Stream(request, "events")
    await stream.open()
    hub = request.app[STREAMS].events
    subscriber = hub.subscribe(visible, params.get("type") or None,
                               params.get("object") or None, parents)
    # A subscriber blocked on a full socket would notice its overflow only at the stall timeout.
    subscriber.on_overflow = lambda: stream.end(TRY_AGAIN_LATER, OVERFLOWED)
    try:
        auth = text_frame(json.dumps({"type": "auth", "user": principal.name}))
        return await stream.serve(_publish(stream, subscriber, auth))
    finally:
        hub.unsubscribe(subscriber)


async def _publish(stream: Stream, subscriber, auth: bytes):
    await stream.write(auth)
    while True:
        await subscriber.wait()
        if subscriber.overflowed:
            return TRY_AGAIN_LATER, OVERFLOWED
        await stream.write(subscriber.take())
