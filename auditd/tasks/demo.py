"""`serve --demo`: the simulated producer. It plays `demo_world.live_operations` one at a time,
line by line, through the store, and honours cancels of its own actions."""
import asyncio
import contextlib
import logging
import random

from ..model import dates
from ..model.actions import new_action
from ..model.errors import InvalidRequest, NotFound
from .demo_world import World, live_operations

log = logging.getLogger("auditd.demo")

LIVE_TICK = 0.5          # seconds between two lines of the simulated operation


class Demo:
    """The simulated producer: runs one operation at a time, line by line, through the store."""

    def __init__(self):
        self.task: asyncio.Task | None = None
        self.current: str | None = None        # uuid of the live action while it runs
        self.watched: set[str] = set()         # other demo actions whose cancel it honours

    def start(self, store, world: World, namespace: str):
        self._store = store
        self.task = asyncio.create_task(self._run(store, world, namespace), name="auditd-demo")

    async def stop(self):
        """Stop simulating; an operation cut short ends Failed, with a line saying why."""
        task, self.task = self.task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("the demo operation failed: %r", task.exception())
        if self.current is not None:
            store, uuid, self.current = self._store, self.current, None
            with contextlib.suppress(NotFound, InvalidRequest):
                await store.append_logs(uuid, [(dates.now(), "stderr",
                                                "Interrupted: auditd is stopping")], None)
                await store.change_state(uuid, "Failed", None)

    async def _run(self, store, world: World, namespace: str):
        for fields_, lines in live_operations(world, random.Random()):
            user, ip, agent, location = fields_.pop("person")
            action = await store.record_action(new_action(
                namespace=namespace, user=user, ip=ip, user_agent=agent, location=location,
                state="In progress", **fields_))
            uuid = self.current = action["uuid"]
            for line in lines:
                await asyncio.sleep(LIVE_TICK)
                if await self._honour_cancels(store):
                    break
                await store.append_logs(uuid, [(dates.now(), "stdout", line)], None)
            else:
                await asyncio.sleep(LIVE_TICK)
                if not await self._honour_cancels(store):
                    await store.change_state(uuid, "Success", None)
            self.current = None

    async def _honour_cancels(self, store) -> bool:
        """Move each demo action whose cancel was requested to Canceled; True if the live one was."""
        live_canceled = False
        for uuid in [*self.watched, self.current]:
            try:
                action = await store.get_action(uuid, None)
            except NotFound:          # removed by a reset
                self.watched.discard(uuid)
                live_canceled |= uuid == self.current
                continue
            if action["state"] == "Canceling":
                await store.append_logs(uuid, [(dates.now(), "stdout",
                                                "Cancel requested: operation stopped")], None)
                await store.change_state(uuid, "Canceled", None)
                self.watched.discard(uuid)
                live_canceled |= uuid == self.current
        return live_canceled


async def demo_namespace(store) -> str:
    """The demo's actions belong to 'admin', or to the first admin when there is none of that
    name."""
    admins = [u["name"] for u in await store.list_users() if u["role"] == "admin"]
    return "admin" if not admins or "admin" in admins else admins[0]
