"""The live streams, fed from the store's commit notes (`auditd.model.notes`) and nothing else.

Every message is rendered once, as a complete WebSocket text frame, and shared by all the sockets
it goes to. `logs.LogHub` serves log followers, `events.EventHub` the events stream; `Streams`
holds both and what is open now.
"""
import asyncio
import logging
from collections import Counter, deque

from ..model.notes import ActionChanged, ActionsRemoved, LinesAppended
from .events import EventHub
from .logs import LogHub

__all__ = ["Streams"]

log = logging.getLogger("auditd.streams")

NOTES_AT_ONCE = 500      # a commit's notes handled in one turn of the loop


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
        self._queued: deque = deque()              # a big commit's notes not handled yet

    def committed(self, notes):
        """A commit's notes, in order (the store's `on_commit`). At most NOTES_AT_ONCE now; the
        rest of a big commit's (a seed of 30,000 actions) in later turns of the loop, and any
        later commit's after them: all at once, 30,000 held the loop ~10 ms, ~140 ms while an
        events stream was open."""
        if self._queued:
            self._queued.extend(notes)
            return
        self._apply(notes[:NOTES_AT_ONCE])
        if len(notes) > NOTES_AT_ONCE:
            self._queued.extend(notes[NOTES_AT_ONCE:])
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self):
        queued = self._queued
        notes = [queued.popleft() for _ in range(min(NOTES_AT_ONCE, len(queued)))]
        if queued:
            asyncio.get_running_loop().call_soon(self._drain)
        try:
            self._apply(notes)
        except Exception:   # noqa: BLE001 - as the store does: a stream bug must not stop them
            log.exception("delivering committed changes to the streams failed")

    def _apply(self, notes):
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
