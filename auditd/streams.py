"""What the live streams are fed from: committed log lines and action changes.

Every message is rendered once, as a complete WebSocket text frame (a server's frames are not
masked, so the same bytes serve every client), and shared by all the sockets it goes to.

`LogHub` keeps, for each action somebody follows, a `LogFeed`: the highest committed line number,
the line count at which the action became final, and a bounded window of recent lines as frames.
A follower is a cursor (the last line number it sent): it takes lines from the window when the
window still holds them and from the store otherwise, so a slow follower costs the server its
cursor and its socket's bounded write buffer, nothing else.

`EventHub` fans action events out to subscribers, each with a bounded backlog; a subscriber whose
backlog overflows is told to stop (its handler closes the socket with 1013) instead of growing
memory.
"""
import asyncio
import json
import struct
import uuid as uuidlib
from bisect import bisect_right
from collections import Counter, deque

from . import dates
from .schemas import FINAL_STATES
from .uris import action_uri, normalize_object_uri

WINDOW_LINES = 2048            # recent lines kept per followed action (followers that keep
WINDOW_BYTES = 512 * 1024      # up need only the last few batches), and at most these bytes
BATCH_BYTES = 64 * 1024        # one write to one socket takes at most this (or one line)
EVENT_BACKLOG = 1000           # events waiting for one subscriber before it is dropped...
EVENT_BACKLOG_BYTES = 1024 * 1024   # ...or this many bytes of them


def text_frame(text: str) -> bytes:
    """`text` as one unmasked WebSocket text frame (RFC 6455 section 5.2)."""
    try:
        payload = text.encode("utf-8")
    except UnicodeEncodeError:   # a lone surrogate: send it \u-escaped, as valid UTF-8
        payload = json.dumps(json.loads(text)).encode("ascii")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def log_frame(ts: int, stream_type, line: str) -> bytes:
    message = {"type": "log", "log": line, "timestamp": ts}
    if stream_type:
        message["streamType"] = stream_type
    return text_frame(json.dumps(message, ensure_ascii=False))


def _changed(waiter: asyncio.Future | None):
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class LogFeed:
    """One followed action: what is committed, and the recent lines as frames."""

    def __init__(self, action_id: int):
        self.action_id = action_id
        self.latest = 0             # highest committed line number known
        # The line count when the action became final: later lines are late, and followers
        # that were open then do not get them.
        self.final_seq = None
        self.followers = 0
        self._frames: list[bytes] = []      # lines _first, _first + 1, ... (consecutive)
        self._ends: list[int] = []          # running byte total after each frame
        self._first = 1
        self._bytes = 0
        self._joined = (0, 0, b"")          # the last batch handed out: (first, last, bytes)
        self._waiter: asyncio.Future | None = None   # one future shared by every waiting follower

    def known(self, latest: int):
        """A line count read from the store; never moves backwards."""
        if latest > self.latest:
            self.latest = latest
            self._wake()

    def lines_committed(self, lines):
        frames, ends = self._frames, self._ends
        for seq, ts, stream_type, line in lines:
            if frames and seq != self._first + len(frames):
                frames.clear()
                ends.clear()
            if not frames:
                self._first = seq
            frame = log_frame(ts, stream_type, line)
            self._bytes += len(frame)
            frames.append(frame)
            ends.append(self._bytes)
            if seq > self.latest:
                self.latest = seq
        if len(frames) > WINDOW_LINES * 3 // 2 or (
                frames and ends[-1] - ends[0] > WINDOW_BYTES * 3 // 2):
            self._trim()
        self._wake()

    def state_committed(self, log_count: int, final: bool):
        # Only a commit sets final_seq: a read may already see lines appended after the final
        # state, and those are late lines that open followers must not get.
        if final and self.final_seq is None:
            self.final_seq = log_count
        self.latest = max(self.latest, log_count)
        self._wake()

    def _trim(self):
        drop = max(0, len(self._frames) - WINDOW_LINES)
        limit = self._ends[-1] - WINDOW_BYTES
        drop = max(drop, min(bisect_right(self._ends, limit), len(self._frames) - 1))
        del self._frames[:drop]
        del self._ends[:drop]
        self._first += drop

    def batch_after(self, cursor: int, last: int) -> tuple[int, bytes] | None:
        """(last line number, frames) of the next lines after `cursor`, up to line `last` and
        about BATCH_BYTES; None when the window does not hold line `cursor + 1` (not any more,
        or not yet: a read of the store may see a commit before its lines reach the feed)."""
        first, frames = self._first, self._frames
        start = cursor + 1 - first
        stop = min(len(frames), last - first + 1)
        if start < 0 or start >= stop:
            return None
        ends = self._ends
        budget = ends[start] - len(frames[start]) + BATCH_BYTES
        stop = max(start + 1, bisect_right(ends, budget, start, stop))
        low, high, data = self._joined
        if low != cursor + 1 or high != first + stop - 1:
            # Followers that keep up ask for the same batch: join it once for all of them.
            data = frames[start] if stop == start + 1 else b"".join(frames[start:stop])
            self._joined = (cursor + 1, first + stop - 1, data)
        return first + stop - 1, data

    async def wait_beyond(self, cursor: int):
        """Return once there is a line after `cursor`, or the action is final."""
        if self.latest > cursor or self.final_seq is not None:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def _wake(self):
        waiter, self._waiter = self._waiter, None
        _changed(waiter)


class LogHub:
    def __init__(self):
        self.feeds: dict[int, LogFeed] = {}

    def attach(self, action_id: int) -> LogFeed:
        feed = self.feeds.get(action_id)
        if feed is None:
            feed = self.feeds[action_id] = LogFeed(action_id)
        feed.followers += 1
        return feed

    def detach(self, feed: LogFeed):
        feed.followers -= 1
        if feed.followers <= 0 and self.feeds.get(feed.action_id) is feed:
            del self.feeds[feed.action_id]

    def end_all(self):
        """End every followed log where it is, for when the actions are deleted: followers
        close normally, and the feeds are forgotten (new actions may reuse the ids)."""
        feeds = list(self.feeds.values())
        self.feeds.clear()
        for feed in feeds:
            feed.state_committed(feed.latest, True)

    def lines_committed(self, action_id: int, lines):
        feed = self.feeds.get(action_id)
        if feed is not None:
            feed.lines_committed(lines)

    def action_committed(self, action: dict):
        feed = self.feeds.get(action["id"])
        if feed is not None:
            feed.state_committed(action["log_count"], action["state"] in FINAL_STATES)


class Subscriber:
    """One events stream: what it may see, what it asked for, and its bounded backlog."""

    def __init__(self, namespaces, type_=None, object_=None, parents=(), backlog=EVENT_BACKLOG):
        self.namespaces = namespaces
        self.type = type_
        self.object = normalize_object_uri(object_).lower() if object_ else None
        self.parents = frozenset(normalize_object_uri(p) for p in parents)
        self.backlog_limit = backlog
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.overflowed = False
        self.on_overflow = None         # called once when the backlog overflows
        self._waiter: asyncio.Future | None = None

    def wants(self, namespace: str, event: dict, parents: frozenset) -> bool:
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        if self.type is not None and event["type"] != self.type:
            return False
        if self.object is not None and event["resource_uri"] != self.object:
            return False
        if self.parents and self.parents.isdisjoint(parents):
            return False
        return True

    def push(self, frame: bytes):
        if len(self.backlog) >= self.backlog_limit or (
                self.backlog and self.backlog_bytes + len(frame) > EVENT_BACKLOG_BYTES):
            self.overflowed = True
            self.backlog.clear()
            self.backlog_bytes = 0
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self.backlog.append(frame)
            self.backlog_bytes += len(frame)
        waiter, self._waiter = self._waiter, None
        _changed(waiter)

    async def wait(self):
        """Return once there are events to send, or the subscriber overflowed."""
        if self.backlog or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def take(self) -> bytes:
        data = b"".join(self.backlog)
        self.backlog.clear()
        self.backlog_bytes = 0
        return data


class EventHub:
    def __init__(self):
        self.subscribers: set[Subscriber] = set()
        self.backlog_limit = EVENT_BACKLOG

    def subscribe(self, namespaces, type_=None, object_=None, parents=()) -> Subscriber:
        subscriber = Subscriber(namespaces, type_, object_, parents, self.backlog_limit)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber):
        self.subscribers.discard(subscriber)

    def action_committed(self, kind: str, action: dict, lineage):
        """`lineage(action)` gives the event's parents: the object, then its ancestors."""
        if not self.subscribers:
            return
        parents = lineage(action)
        event = {
            "type": "action", "action": kind, "parents": parents,
            "resource_uri": action_uri(action["uuid"]), "state": action["state"],
            "uuid": str(uuidlib.uuid4()), "datetime": dates.format_iso(dates.now()),
        }
        normalized = frozenset(normalize_object_uri(p) for p in parents)
        frame = None
        for subscriber in self.subscribers:
            if subscriber.overflowed or not subscriber.wants(action["namespace"], event,
                                                             normalized):
                continue
            if frame is None:
                frame = text_frame(json.dumps(event, ensure_ascii=False))
            subscriber.push(frame)


class Streams:
    """Both hubs, fed from the store's commits, and what is open now."""

    def __init__(self):
        self.logs = LogHub()
        self.events = EventHub()
        # Every open stream, as an object with `async close(code=, message=)` that closes its
        # socket without waiting on a client that stopped reading; the shutdown closes each
        # with 1001.
        self.sockets: set = set()
        self.lineage = lambda action: [action["object"]] if action["object"] else []  # the store's
        self.counts: Counter = Counter()          # streams opened and closed, by how they ended
        self._changed = asyncio.Event()

    def committed(self, notes):
        for note in notes:
            if note[0] == "logs":
                self.logs.lines_committed(note[1], note[2])
            else:
                _, kind, action = note
                self.logs.action_committed(action)
                self.events.action_committed(kind, action, self.lineage)

    def count(self, what: str):
        self.counts[what] += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate):
        """Wait until `predicate()` holds; it is checked each time a stream opens or ends."""
        while not predicate():
            await self._changed.wait()
