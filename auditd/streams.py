"""What the live streams are fed from: committed log lines and action changes.

`LogHub` keeps, for each action somebody follows, a `LogFeed`: the highest committed line number,
whether the action is final, and a bounded window of recent lines already rendered as messages.
A follower is a cursor (the last line number it sent): it takes lines from the window when they
are there and from the store otherwise, so a slow follower costs the server nothing but its cursor.

`EventHub` fans action events out to subscribers, each with a bounded queue; a subscriber whose
queue fills up is dropped (closed 1013 by its handler) instead of growing memory.
"""
import asyncio
import json
import uuid as uuidlib
from collections import deque

from . import dates
from .schemas import FINAL_STATES
from .uris import action_uri, normalize_object_uri

LOG_WINDOW = 2048          # recent lines kept per followed action
EVENT_QUEUE = 1000         # events waiting for one subscriber before it is dropped


def log_message(ts: int, stream_type, line: str) -> str:
    message = {"type": "log", "log": line, "timestamp": ts}
    if stream_type:
        message["streamType"] = stream_type
    return json.dumps(message, ensure_ascii=False)


class LogFeed:
    def __init__(self, action_id: int):
        self.action_id = action_id
        self.latest = 0            # highest committed line number known
        self.final = False
        self.window: deque = deque(maxlen=LOG_WINDOW)    # (seq, message), consecutive seqs
        self.followers = 0
        self._waiters: list[asyncio.Future] = []

    def known(self, latest: int, final: bool):
        """What a fresh read of the store said; never moves backwards."""
        if latest > self.latest:
            self.latest = latest
        if final:
            self.final = True
        self._wake()

    def append(self, lines):
        for seq, ts, stream_type, line in lines:
            if self.window and self.window[-1][0] != seq - 1:
                self.window.clear()
            self.window.append((seq, log_message(ts, stream_type, line)))
            self.latest = max(self.latest, seq)
        self._wake()

    def window_after(self, cursor: int, limit: int) -> list[tuple[int, str]] | None:
        """The lines after `cursor` if the window still holds the next one, else None."""
        if not self.window or self.window[0][0] > cursor + 1:
            return None
        start = cursor + 1 - self.window[0][0]
        if start >= len(self.window):
            return []
        return [self.window[i] for i in range(start, min(len(self.window), start + limit))]

    async def wait_beyond(self, cursor: int):
        """Return once there is a line after `cursor`, or the action is final."""
        if self.latest > cursor or self.final:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        await future

    def _wake(self):
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)


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

    def lines_committed(self, action_id: int, lines):
        feed = self.feeds.get(action_id)
        if feed is not None:
            feed.append(lines)

    def action_committed(self, action: dict):
        feed = self.feeds.get(action["id"])
        if feed is not None:
            feed.known(action["log_count"], action["state"] in FINAL_STATES)


class Subscriber:
    """One events stream: what it may see, what it asked for, and its bounded queue."""

    def __init__(self, namespaces, type_=None, object_=None, parents=()):
        self.namespaces = namespaces
        self.type = type_
        self.object = object_
        self.parents = frozenset(normalize_object_uri(p) for p in parents)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=EVENT_QUEUE)
        self.overflowed = False

    def wants(self, namespace: str, event: dict) -> bool:
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        if self.type is not None and event["type"] != self.type:
            return False
        if self.object is not None and event["resource_uri"] != self.object:
            return False
        if self.parents and not self.parents.intersection(event["_normalized_parents"]):
            return False
        return True


class EventHub:
    def __init__(self):
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber):
        self.subscribers.discard(subscriber)

    def action_committed(self, kind: str, action: dict, parents: list[str]):
        if not self.subscribers:
            return
        event = {
            "type": "action", "action": kind, "parents": parents,
            "resource_uri": action_uri(action["uuid"]), "state": action["state"],
            "uuid": str(uuidlib.uuid4()), "datetime": dates.format_iso(dates.now()),
        }
        event["_normalized_parents"] = {normalize_object_uri(p) for p in parents}
        text = None
        for subscriber in list(self.subscribers):
            if subscriber.overflowed or not subscriber.wants(action["namespace"], event):
                continue
            if text is None:
                text = json.dumps({k: v for k, v in event.items() if not k.startswith("_")})
            try:
                subscriber.queue.put_nowait(text)
            except asyncio.QueueFull:
                # The handler sees `overflowed` and closes the socket with 1013.
                subscriber.overflowed = True


class Streams:
    """Both hubs, fed from the store's commits."""

    def __init__(self):
        self.logs = LogHub()
        self.events = EventHub()
        self.sockets: set = set()      # every open WebSocket, closed with 1001 at shutdown

    def committed(self, notes):
        for note in notes:
            if note[0] == "logs":
                self.logs.lines_committed(note[1], note[2])
            else:
                _, kind, action, parents = note
                self.logs.action_committed(action)
                self.events.action_committed(kind, action, parents)
