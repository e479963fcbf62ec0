"""The application factory: `create_app(config)` builds everything the server runs."""
import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, web

from ..config import Config
from ..geo import Locator
from ..model.errors import Unavailable
from ..store import open_store
from ..streams import Streams
from ..tasks.checkpoints import Checkpointer
from ..tasks.demo import Demo
from ..tasks.forward import Forwarder
from ..tasks.retention import Retention
from .appkeys import (BODY_PARSER, CHECKPOINTER, CONFIG, DEMO, FORWARDER, LIMITS, LOCATOR,
                      METRICS, RETENTION, STORE, STREAMS, TICKETS)
from .bodyparser import BodyParser
from .limits import Limits
from .metrics import Metrics
from .middleware import request_middleware
from .routes import setup_routes
from .standin import stand_in_context
from .streams import watch_access

log = logging.getLogger("auditd.app")

GOING_AWAY = WSCloseCode.GOING_AWAY   # 1001


async def _store_context(app: web.Application):
    store = open_store(app[CONFIG], serving=True)
    await store.open()
    store.on_commit = app[STREAMS].committed
    app[STORE] = store
    yield
    await store.close()


async def _checkpoint_context(app: web.Application):
    """Signed checkpoints while the server runs, when the store keeps a tree (no signing key is
    made for a backend that keeps none)."""
    config = app[CONFIG]
    try:
        await app[STORE].tree_head()
    except Unavailable:
        yield
        return
    checkpointer = app[CHECKPOINTER] = Checkpointer(app[STORE], config.db,
                                                    config.checkpoint_interval)
    task = asyncio.create_task(checkpointer.run(), name="auditd-checkpoints") \
        if config.transparency else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _forward_context(app: web.Application):
    """Forwarding to the [[forward]] sinks while the server runs (tasks/forward)."""
    forwarder = app[FORWARDER] = Forwarder(app[STORE], app[CONFIG].forward)
    await forwarder.start()
    yield
    await forwarder.stop()


async def _retention_context(app: web.Application):
    """The retention task runs while the server does (after the store opens, before it closes)."""
    days = app[CONFIG].retention_days
    if not days or days <= 0:
        yield
        return
    retention = app[RETENTION] = Retention(app[STORE], days)
    task = asyncio.create_task(retention.run(), name="auditd-retention")
    log.info("retention: final actions are removed %d days after they end", days)
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _access_watch_context(app: web.Application):
    task = asyncio.create_task(watch_access(app), name="auditd-stream-access")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application):
    """Ask every open stream to close with 1001, without waiting here: each stream is a request
    in flight, so the runner's drain waits for them and for every other request together, all
    within shutdown_timeout (a stalled follower and a slow upload cost that once, not twice)."""
    for stream in list(app[STREAMS].sockets):
        stream.end(GOING_AWAY, "server shutting down")


async def _stop_body_parser(app: web.Application):
    """After the requests in flight (the drain), so none of them loses its parser."""
    await asyncio.to_thread(app[BODY_PARSER].close)


def create_app(config: Config | None = None) -> web.Application:
    config = config or Config()
    app = web.Application(middlewares=[request_middleware],
                          client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[STREAMS] = Streams()
    app[LOCATOR] = Locator(config.geoip_db or None)
    app[METRICS] = Metrics()
    app[LIMITS] = Limits(config)
    app[BODY_PARSER] = BodyParser()
    app[DEMO] = Demo()
    app[TICKETS] = {}
    app.cleanup_ctx.append(_store_context)
    app.cleanup_ctx.append(_checkpoint_context)
    app.cleanup_ctx.append(_forward_context)
    app.cleanup_ctx.append(_retention_context)
    app.cleanup_ctx.append(_access_watch_context)
    if config.demo or config.fixtures:
        app.cleanup_ctx.append(stand_in_context)
    app.on_shutdown.append(_close_sockets)
    app.on_cleanup.append(_stop_body_parser)
    setup_routes(app)
    return app
