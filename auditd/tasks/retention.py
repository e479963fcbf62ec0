"""Retention: removes final actions `retention_days` after they ended, every hour while the
server runs (the first pass at start)."""
import asyncio
import logging

from ..model import dates
from ..model.errors import AuditdError

log = logging.getLogger("auditd.retention")

RETENTION_INTERVAL = 3600.0        # seconds between two retention passes
DAY = 86400


class Retention:
    """Applies `retention_days` every `interval` seconds, the first time at start; `run_now()`
    asks for a pass and returns once a pass that started after the request has finished."""

    def __init__(self, store, days: int, interval: float = RETENTION_INTERVAL):
        self.store, self.days, self.interval = store, days, interval
        self.started = self.finished = 0
        self.removed = 0
        self._wake = asyncio.Event()
        self._finished = asyncio.Condition()

    async def run_now(self) -> int:
        """Runs a pass soon and waits for it; returns how many actions retention removed so far."""
        target = self.started + 1
        self._wake.set()
        async with self._finished:
            await self._finished.wait_for(lambda: self.finished >= target)
        return self.removed

    async def run_once(self) -> tuple[int, int]:
        cut = dates.now() - self.days * DAY
        actions, lines = await self.store.purge(cut)
        if actions or lines:
            log.info("retention: removed %d final actions ended before %s and %d log lines",
                     actions, dates.format_iso(cut), lines)
        self.removed += actions
        return actions, lines

    async def run(self):
        while True:
            self._wake.clear()
            self.started += 1
            try:
                await self.run_once()
            except AuditdError as err:   # e.g. the database refused the write: try next time
                log.error("retention pass failed: %s", err.message)
            async with self._finished:
                self.finished += 1
                self._finished.notify_all()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass


