"""Reads before writes: a reader's request waits behind a few records, not behind dozens.

Every request takes its turns on one event loop, first come first served, and one turn of the
loop runs every callback that is ready. Producers recording flat out keep one request in flight
per connection (64 in the benchmark's mixed load), each costing the loop about what a list does;
a reader's request then waits behind dozens of records' work in every turn, and its latency grows
with the number of producers, not with the work asked of it (measured: readers at 11.5x their
idle p99 with 64 producers beside 8 readers).

`WriteShare` bounds that. While reads are about (one is being answered, or one was answered
within the last `READ_WINDOW` seconds: a reader's next request follows its last at once), at most
`per_turn` writes start in one turn of the loop; the others wait, in order of arrival, before any
of their work is done (a waiting write costs the loop nothing), and go on in the next turns. So a
turn holds the reads that are ready and a few writes' work, and writes get a share that grows as
the reads get cheaper: when the reads are few or slow (a big query on a worker thread), turns are
short and many writes start each second. With no read about, writes are not held at all: a server
that only records, records as fast as ever. A read never waits for a write.
"""
import asyncio
import collections

READ_WINDOW = 0.1     # seconds after a read's answer during which reads still count as about
PER_TURN = 4          # writes that start in one turn of the loop while reads are about


class WriteShare:
    """Counts the reads in progress and, while reads are about, lets `per_turn` writes start in
    each turn of the loop."""

    def __init__(self, per_turn: int = PER_TURN, window: float = READ_WINDOW):
        self.per_turn, self.window = per_turn, window
        self.reads = 0                     # reads being answered
        self.read_ended = float("-inf")    # loop time the last read was answered
        self.started = 0                   # writes started in this turn
        self.turn_ends = False             # a callback that ends the turn is scheduled
        self.waiting: collections.deque = collections.deque()   # futures of held writes
        self.held = 0                      # writes that waited, since the start (a metric)

    def reads_about(self, now: float) -> bool:
        return self.reads > 0 or now - self.read_ended < self.window

    def read_started(self):
        self.reads += 1

    def read_done(self, now: float):
        self.reads -= 1
        self.read_ended = now

    async def write_started(self, loop: asyncio.AbstractEventLoop):
        """Returns once the write may go on; raises CancelledError when the client went away
        while it waited."""
        if not self.waiting and (self.started < self.per_turn
                                 or not self.reads_about(loop.time())):
            self.started += 1
            self._end_turn_later(loop)
            return
        turn = loop.create_future()
        self.waiting.append(turn)
        self.held += 1
        self._end_turn_later(loop)
        await turn

    def _end_turn_later(self, loop):
        """Callbacks scheduled now run in the loop's next turn: that one resets the count."""
        if not self.turn_ends:
            self.turn_ends = True
            loop.call_soon(self._next_turn, loop)

    def _next_turn(self, loop):
        self.turn_ends = False
        self.started = 0
        free = not self.reads_about(loop.time())
        while self.waiting and (free or self.started < self.per_turn):
            turn = self.waiting.popleft()
            if not turn.done():     # a cancelled one (its client went away) takes no place
                turn.set_result(None)
                self.started += 1
        if self.waiting or self.started:
            self._end_turn_later(loop)
