"""Forwarding: every event of the tamper-evident log, in order, to each `[[forward]]` sink (HTTP
POST of NDJSON, or syslog), at least once (README "Forwarding to a SIEM").

Each sink has its own task and its own position in the store (`Store.forward_positions`): the
position of the last event it has handled. The task reads the events after it (batch_size at a
time, on reader connections), renders them (`events.py`), sends those its filters let through,
and only once the sink has taken them (a 2xx) stores the new position; a batch with nothing for
the sink advances it without sending. A failure is stored as the sink's last error and the same
batch is sent again after a pause that doubles from 1 s up to `backoff_max` (60 s). So a restart,
a crash or a long outage loses nothing: whatever was not acknowledged is sent again, in order,
from the stored position (which may repeat the last batch: receivers deduplicate by `id`).

A sink never slows recording or the API: it reads committed events, holds one batch at a time,
and writes only its position (once per batch) and its errors (once per attempt).
"""
import asyncio
import contextlib
import json
import logging
import time

from ...model.errors import AuditdError
from .events import Renderer, matches
from .sinks import SinkError, transport_for

log = logging.getLogger("auditd.forward")

IDLE_POLL = 1.0      # seconds: also look for new events this often (another process's commits)
FIRST_PAUSE = 1.0    # seconds before the first retry; doubled up to the sink's backoff_max


class SinkRunner:
    """One sink's loop, and what it knows of its progress (for the metrics)."""

    def __init__(self, store, sink):
        self.store, self.sink = store, sink
        self.transport = transport_for(sink)
        self.renderer = Renderer(store)
        self.wakeup = asyncio.Event()
        self.position = 0
        self.delivered = self.errors = 0
        self.last_success = self.last_error_at = None
        self.last_error = None

    async def begin(self, head: int):
        row = await self.store.start_forward(
            self.sink.name, 0 if self.sink.start == "beginning" else head)
        self.position = row["position"]
        self.delivered, self.errors = row["delivered"], row["errors"]
        self.last_success, self.last_error = row["last_success"], row["last_error"]
        self.last_error_at = row["last_error_at"]
        log.info("forward %s: to %s from event %d", self.sink.name, self.sink.target,
                 self.position)

    async def run(self):
        pause = min(FIRST_PAUSE, self.sink.backoff_max)
        while True:
            try:
                await self.step()
                pause = min(FIRST_PAUSE, self.sink.backoff_max)
            except asyncio.CancelledError:
                raise
            except Exception as err:   # noqa: BLE001 - the store failed (or a bug): try again
                self.renderer.forget()
                log.error("forward %s: %s; trying again in %.1f s", self.sink.name,
                          getattr(err, "message", None) or repr(err), pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.sink.backoff_max)

    async def step(self):
        """Handle the next batch of events, or wait for one."""
        self.wakeup.clear()
        rows = await self.store.read_events(self.position, self.sink.batch_size)
        if not rows:
            size, _ = await self.store.tree_head()
            if size < self.position:   # a stand-in reset emptied the log: start again
                self.renderer.forget()
                self.position = (await self.store.start_forward(self.sink.name, 0))["position"]
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), IDLE_POLL)
            return
        events, missing = await self.renderer.render(rows)
        if missing:
            log.warning("forward %s: %d events before leaf %d were purged before this sink got "
                        "them", self.sink.name, missing, rows[-1][0])
        chosen = [event for event in events if matches(self.sink, event)]
        if chosen:
            await self.deliver(chosen)
        end = rows[-1][0]
        await self.store.advance_forward(self.sink.name, end, len(chosen), time.time())
        self.position = end
        self.delivered += len(chosen)
        if chosen:
            self.last_success = time.time()

    async def deliver(self, events):
        """Send the batch until the sink takes it, pausing longer after each failure."""
        pause = min(FIRST_PAUSE, self.sink.backoff_max)
        while True:
            try:
                await self.transport.send(events)
                return
            except SinkError as err:
                self.errors += 1
                self.last_error, self.last_error_at = str(err), time.time()
                log.warning("forward %s: %s; sending again in %.1f s", self.sink.name, err,
                            pause)
                try:
                    await self.store.forward_failed(self.sink.name, str(err), time.time())
                except AuditdError as failure:
                    log.error("forward %s: could not store the error: %s", self.sink.name,
                              failure.message)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.sink.backoff_max)


class Forwarder:
    """Every configured sink's task, started and stopped with the server."""

    def __init__(self, store, sinks):
        self.store = store
        self.runners = [SinkRunner(store, sink) for sink in sinks]
        self.tasks: list[asyncio.Task] = []

    async def start(self):
        """Store each new sink's starting position, then start the tasks. An AuditdError when
        the store cannot forward (a backend without an event log): the server does not start."""
        if not self.runners:
            return
        await self.store.forward_positions()     # Unavailable where there is no event log
        head, _ = await self.store.tree_head()
        for runner in self.runners:
            await runner.begin(head)
        previous = self.store.on_commit

        def committed(notes):
            if previous is not None:
                previous(notes)
            self.wake()

        self.store.on_commit = committed
        self.tasks = [asyncio.create_task(r.run(), name=f"auditd-forward-{r.sink.name}")
                      for r in self.runners]

    def wake(self):
        for runner in self.runners:
            runner.wakeup.set()

    async def stop(self):
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for runner in self.runners:
            await runner.transport.close()

    async def metric_lines(self) -> list[str]:
        """Prometheus lines: each sink's lag, last success, delivered events and errors."""
        if not self.runners:
            return []
        try:
            head, _ = await self.store.tree_head()
        except AuditdError:
            head = None
        out = []
        for metric, kind, text, value in (
                ("lag", "gauge", "Events in the log the sink has not handled yet.",
                 lambda r: None if head is None else max(head - r.position, 0)),
                ("last_success_timestamp_seconds", "gauge",
                 "When the sink last took a batch, in Unix time (0: never).",
                 lambda r: round(r.last_success or 0, 3)),
                ("delivered_total", "counter", "Events the sink has taken.",
                 lambda r: r.delivered),
                ("errors_total", "counter", "Delivery attempts that failed.",
                 lambda r: r.errors)):
            values = [(r.sink.name, value(r)) for r in self.runners]
            if all(v is None for _, v in values):
                continue
            out += [f"# HELP auditd_forward_{metric} {text}",
                    f"# TYPE auditd_forward_{metric} {kind}"]
            out += [f"auditd_forward_{metric}{{sink={json.dumps(name)}}} {v}"
                    for name, v in values if v is not None]
        return out
