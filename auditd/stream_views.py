"""The WebSocket handlers: an action's log lines, and the events stream (CONTRACT.md section 7)."""
import asyncio
import contextlib
import json
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from . import keys
from .auth import visible_namespaces
from .errors import InvalidRequest
from .schemas import FINAL_STATES
from .streams import Subscriber, log_message
from .views import single_query

log = logging.getLogger("auditd.streams")

DEFAULT_TAIL = 300
READ_CHUNK = 500          # lines read from the store at a time by a follower behind the window
TRY_AGAIN_LATER = 1013


def _parse_tail(value: str | None) -> int | None:
    if value is None:
        return DEFAULT_TAIL
    if value.lower() == "all":
        return None
    if value.isdigit():
        return int(value)
    raise InvalidRequest(f"tail must be a number of lines >= 0 or 'all', not {value!r}")


def _parse_bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidRequest(f"{name} must be 'true' or 'false', not {value!r}")


async def _open_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(autoping=True, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        raise InvalidRequest("this endpoint is a WebSocket: send an Upgrade: websocket handshake")
    await ws.prepare(request)
    request.app[keys.STREAMS].sockets.add(ws)
    return ws


async def _drain_client(ws: web.WebSocketResponse):
    """Read (and so answer pings) until the client closes or goes away."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            break


async def _serve(request, ws, pump):
    """Run `pump` until it ends or the client leaves; then close the socket."""
    streams = request.app[keys.STREAMS]
    sender = asyncio.create_task(pump)
    reader = asyncio.create_task(_drain_client(ws))
    try:
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader):
            if not task.done():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            log.warning("stream ended with an error: %r", sender.exception())
        streams.sockets.discard(ws)
        if not ws.closed:
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"stream ended unexpectedly")
    return ws


async def _send_all(ws, messages, stall_seconds: float):
    """Send in order; a reader that takes no line for `stall_seconds` is closed with 1013."""
    try:
        async with asyncio.timeout(stall_seconds):
            for message in messages:
                await ws.send_str(message)
    except TimeoutError:
        log.info("closing a stream whose reader stopped reading")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await ws.close(code=TRY_AGAIN_LATER,
                               message=b"reader too slow: reconnect and resume with tail")
        raise ConnectionResetError("reader stalled") from None


# ---------------------------------------------------------------------------- action logs

async def action_logs(request: web.Request) -> web.StreamResponse:
    params = single_query(request, allowed={"tail", "follow", "user", "token"})
    tail = _parse_tail(params.get("tail"))
    follow = _parse_bool("follow", params.get("follow"), True)
    namespaces = visible_namespaces(request[keys.PRINCIPAL], request.match_info.get("namespace"))
    store = request.app[keys.STORE]
    action = await store.get_action(request.match_info["uuid"], namespaces)   # 404 before upgrade
    ws = await _open_socket(request)
    hub = request.app[keys.STREAMS].logs
    feed = hub.attach(action["id"])
    try:
        # Read the action again now that the feed is attached: a line committed after this read
        # reaches the feed, one committed before it is in the store. Nothing falls in between.
        action = await store.get_action(action["uuid"], None)
        feed.known(action["log_count"], action["state"] in FINAL_STATES)
        start = 0 if tail is None else max(0, action["log_count"] - tail)
        stop_at = None if follow else action["log_count"]
        stall = request.app[keys.CONFIG].stream_stall_seconds
        return await _serve(request, ws, _follow(ws, store, feed, start, stop_at, stall))
    finally:
        hub.detach(feed)


async def _follow(ws, store, feed, cursor: int, stop_at: int | None, stall: float):
    while True:
        limit = READ_CHUNK if stop_at is None else min(READ_CHUNK, stop_at - cursor)
        if limit > 0 and cursor < feed.latest:
            batch = feed.window_after(cursor, limit)
            if batch is None:
                rows = await store.read_logs(feed.action_id, cursor, limit)
                batch = [(seq, log_message(ts, stream, line)) for seq, ts, stream, line in rows]
            if batch:
                await _send_all(ws, [message for _, message in batch], stall)
                cursor = batch[-1][0]
                continue
        if stop_at is not None and cursor >= stop_at:
            break
        if feed.final and cursor >= feed.latest:
            break
        await feed.wait_beyond(cursor)
    await ws.close(code=WSCloseCode.OK)


# ---------------------------------------------------------------------------- events

async def events(request: web.Request) -> web.StreamResponse:
    params = single_query(request, allowed={"type", "object", "parent", "parents", "user", "token"})
    principal = request[keys.PRINCIPAL]
    namespaces = visible_namespaces(principal, request.match_info.get("namespace"))
    parents = [p for key in ("parent", "parents") if key in params
               for p in params[key].split(",") if p]
    subscriber = Subscriber(namespaces, params.get("type"), params.get("object"), parents)
    ws = await _open_socket(request)
    hub = request.app[keys.STREAMS].events
    hub.subscribe(subscriber)
    try:
        await ws.send_str(json.dumps({"type": "auth", "user": principal.name}))
        stall = request.app[keys.CONFIG].stream_stall_seconds
        return await _serve(request, ws, _publish(ws, subscriber, stall))
    finally:
        hub.unsubscribe(subscriber)


async def _publish(ws, subscriber: Subscriber, stall: float):
    while True:
        message = await subscriber.queue.get()
        if subscriber.overflowed:
            await ws.close(code=TRY_AGAIN_LATER,
                           message=b"subscriber too slow: events were dropped; reconnect")
            return
        await _send_all(ws, [message], stall)
