"""Log followers: for each action somebody follows, a `LogFeed` with the highest committed line
number, the line count at which the action became final, and a bounded window of recent lines as
frames.

A follower is a cursor (the last line number it sent): it takes lines from the window when the
window still holds them and from the store otherwise, so a slow follower costs the server its
cursor and its socket's bounded write buffer, nothing else.
"""
import asyncio
from bisect import bisect_right

from ..model.actions import FINAL_STATES
from .frames import log_frame

WINDOW_LINES = 2048            # recent lines kept per followed action (followers that keep
WINDOW_BYTES = 512 * 1024      # up need only the last few batches), and at most these bytes
BATCH_BYTES = 64 * 1024        # one write to one socket takes at most this (or one line)


def wake(waiter: asyncio.Future | None):
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
        self._waiters: dict = {}            # each waiting follower's future (a dict: ordered)

    def known(self, latest: int):
        """A line count read from the store; never moves backwards."""
        if latest > self.latest:
            self.latest = latest
            self._wake()

    def lines_committed(self, lines):
        frames, ends = self._frames, self._ends
        for seq, ts, stream_type, line in _window_tail(lines):
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
        # One future per follower, woken directly: a future shared through asyncio.shield cost
        # a wake-up callback more per follower, one loop turn later (100 followers of a batch:
        # 200 callbacks in two turns where these are 100 in one).
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        try:
            await waiter
        finally:
            self._waiters.pop(waiter, None)    # cancelled: not left for the next wake

    def _wake(self):
        if self._waiters:
            waiters, self._waiters = self._waiters, {}
            for waiter in waiters:
                wake(waiter)


def _window_tail(lines):
    """The lines at the end of a commit that can stay in a window: rendering all of a big append
    (10,000 lines, or 8 MB) cost the event loop ~30-90 ms for frames the trim then dropped.
    Followers behind the window read the others from the store, as they would after a trim."""
    keep = size = 0
    for _, _, _, line in reversed(lines):
        if keep == WINDOW_LINES or (keep and size + len(line) > WINDOW_BYTES):
            return lines[len(lines) - keep:]
        keep += 1
        size += len(line)
    return lines


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

    def end(self, ids=None):
        """End the followed logs of these actions (None: all) where they are, for when the
        actions are deleted: followers close normally, and the feeds are forgotten (new actions
        may reuse the ids)."""
        ended = [feed for action_id, feed in self.feeds.items() if ids is None or action_id in ids]
        for feed in ended:
            del self.feeds[feed.action_id]
            feed.state_committed(feed.latest, True)

    def lines_committed(self, action_id: int, lines):
        feed = self.feeds.get(action_id)
        if feed is not None:
            feed.lines_committed(lines)

    def action_committed(self, action: dict):
        feed = self.feeds.get(action["id"])
        if feed is not None:
            feed.state_committed(action["log_count"], action["state"] in FINAL_STATES)
