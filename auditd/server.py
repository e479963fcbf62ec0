"""Running the application: listening, the first admin key, signals and a graceful stop."""
import asyncio
import logging
import signal
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from . import keys
from .app import create_app
from .config import Config

log = logging.getLogger("auditd")


class AccessLogger(AbstractAccessLogger):
    """One key=value line per request; the path only, so no `token=` ever reaches the log."""

    def log(self, request, response, time):
        self.logger.info('access method=%s path="%s" status=%s ms=%.1f remote=%s',
                         request.method, request.path, response.status, time * 1000,
                         request.remote)


def banner(config: Config, key: str) -> str:
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
    base = f"{host}:{config.port}"
    return (
        "auditd: created the first user 'admin' (role admin). Its API key is shown only this once:\n"
        f"\n    {key}\n\n"
        "Point the docker-cloud CLI (or the python-dockercloud SDK) at this server with:\n\n"
        f"    export DOCKERCLOUD_REST_HOST=http://{base}\n"
        f"    export DOCKERCLOUD_STREAM_HOST=ws://{base}\n"
        "    export DOCKERCLOUD_USER=admin\n"
        f"    export DOCKERCLOUD_APIKEY={key}\n\n"
        "then try:  docker-cloud action ls\n")


async def ensure_first_admin(app: web.Application, config: Config):
    store = app[keys.STORE]
    if await store.count_users() == 0:
        key = await store.add_user("admin", "admin")
        print(banner(config, key), flush=True)


async def serve(config: Config, sockets=None, ready=None) -> int:
    """Serve until SIGTERM or SIGINT; then stop accepting, finish in-flight requests, close the
    streams with 1001, commit what is pending and return 0."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=AccessLogger,
                           access_log=logging.getLogger("auditd.access") if config.access_log
                           else None, shutdown_timeout=config.shutdown_timeout,
                           handle_signals=False)
    await runner.setup()
    try:
        await ensure_first_admin(app, config)
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        else:
            await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        addresses = ", ".join(str(a) for a in runner.addresses)
        log.info("listening on %s (database %s)", addresses, config.db)
        if ready is not None:
            ready(runner)
        await stop.wait()
        log.info("stopping: finishing requests in flight and closing streams")
    finally:
        await runner.cleanup()
    log.info("stopped")
    return 0


def setup_logging(level: str):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "time=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
