"""The events stream's fan-out: each subscriber has a bounded backlog; a subscriber whose backlog
overflows is told to stop (its handler closes the socket with 1013) instead of growing memory."""
import asyncio
import json
import uuid as uuidlib
from collections import deque

from ..model import dates
from ..model.uris import action_uri, normalize_object_uri
from .frames import text_frame
from .logs import wake

EVENT_BACKLOG = 1000           # events waiting for one subscriber before it is dropped...
EVENT_BACKLOG_BYTES = 1024 * 1024   # ...or this many bytes of them


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
        wake(waiter)

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
        """`lineage` is the event's parents: the object, then its ancestors."""
        if not self.subscribers:
            return
        parents = list(lineage)
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
