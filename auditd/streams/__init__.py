"""The live streams, fed from the store's commit notes (`auditd.model.notes`) and nothing else.

Every message is rendered once, as a complete WebSocket text frame, and shared by all the sockets
it goes to. `logs.LogHub` serves log followers, `events.EventHub` the events stream; `Streams`
holds both and what is open now.
"""
import asyncio
from collections import Counter

from ..model.notes import ActionChanged, ActionsRemoved, LinesAppended
from .events import EventHub
from .logs import LogHub

__all__ = ["Streams"]


class Streams:
    """Both hubs, fed from the store's commits, and what is open now."""

    def __init__(self):
        self.logs = LogHub()
        self.events = EventHub()
        # Every open stream, as an object with `async close(code=, message=)` that closes its
        # socket without waiting on a client that stopped reading; the shutdown closes each
        # with 1001.
        self.sockets: set = set()
        self.counts: Counter = Counter()          # streams opened and closed, by how they ended
        self._changed = asyncio.Event()

    def committed(self, notes):
        """A commit's notes, in order (the store's `on_commit`)."""
        for note in notes:
            if type(note) is LinesAppended:
                self.logs.lines_committed(note.action_id, note.lines)
            elif type(note) is ActionChanged:
                self.logs.action_committed(note.action)
                self.events.action_committed(note.kind, note.action, note.lineage)
            elif type(note) is ActionsRemoved:
                self.logs.end(note.ids)

    def count(self, what: str):
        self.counts[what] += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate):
        """Wait until `predicate()` holds; it is checked each time a stream opens or ends."""
        while not predicate():
            await self._changed.wait()
