"""Running the application: listening, the first admin key, signals, systemd and a graceful stop."""
import asyncio
import ctypes
import gc
import ipaddress
import logging
import os
import signal
import sqlite3
import sys
import time

from aiohttp import web

from ..config import Config
from ..http.app import create_app
from ..http.appkeys import CONFIG, STORE
from ..model.errors import AuditdError
from ..store import claim_for_serving
from . import systemd
from .guard import (ConnectionGuard, GuardedRunner, effective_cap, quiet_accept_errors,
                    raise_descriptor_limit)
from .logs import AccessLogger

log = logging.getLogger("auditd")

# How long past shutdown_timeout the stop may take (closing streams, the last commit) before the
# process gives up waiting and exits anyway. Acknowledged writes are committed already by then.
SHUTDOWN_GRACE = 5.0


class StartError(AuditdError):
    """The server cannot start: the address is taken, the database cannot be opened, ..."""


# ---------------------------------------------------------------------------- serving

def public_address(config: Config, addresses) -> str:
    """host:port a client on this machine can use (the first TCP address actually listened on)."""
    for address in addresses:
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            break
    else:
        host, port = config.host, config.port
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def banner(base: str, key: str | None) -> str:
    """What the first start prints on stdout; `key` None: the operator gave it (not repeated)."""
    head = ("auditd: created the first user 'admin' (role admin) with the key given by "
            "--admin-key (AUDITD_ADMIN_KEY, admin_key).\n" if key is None else
            "auditd: created the first user 'admin' (role admin). Its API key is shown only this "
            f"once:\n\n    {key}\n")
    return (
        f"{head}\n"
        "Point the docker-cloud CLI (or the python-dockercloud SDK) at this server with:\n\n"
        f"    export DOCKERCLOUD_REST_HOST=http://{base}\n"
        f"    export DOCKERCLOUD_STREAM_HOST=ws://{base}\n"
        "    export DOCKERCLOUD_USER=admin\n"
        f"    export DOCKERCLOUD_APIKEY={key or '<the key given with --admin-key>'}\n\n"
        "then try:  docker-cloud action ls\n")


NO_ADMIN = ("this database has users but no admin, and 'auditd serve' creates 'admin' only on a "
            "database without users: nobody can reset or seed it. Add one with 'auditd user add "
            "NAME --role admin --db {db}', or restart with --admin-key KEY to create 'admin' with "
            "that key")


async def ensure_first_admin(app: web.Application, base: str):
    """On a database without users, create 'admin' with config.admin_key or a new key (printed
    once, on stdout). With admin_key on a database that has users: accepted silently when it is
    an admin's key; 'admin' is created with it when there is no admin at all; refused when the
    admins have other keys. Without it, a database with users but no admin is warned about."""
    store, given = app[STORE], app[CONFIG].admin_key or None
    users = await store.list_users()
    if not users:
        key = await store.add_user("admin", "admin", key=given)
        print(banner(base, None if given else key), flush=True)
        return
    admins = [u["name"] for u in users if u["role"] == "admin"]
    if given is None:
        if not admins:
            log.warning(NO_ADMIN.format(db=app[CONFIG].db))
        return
    for name in admins:
        if await store.authenticate(name, given) is not None:
            return
    if admins:
        raise StartError(
            f"--admin-key (AUDITD_ADMIN_KEY, admin_key) is not the key of this database's admin "
            f"({', '.join(admins)}): it only sets the key of a new database's first admin. Give "
            "that admin's key, leave --admin-key out, or give 'admin' a new key with 'auditd user "
            f"rotate-key {admins[0]} --db {app[CONFIG].db}'")
    if any(u["name"] == "admin" for u in users):
        raise StartError("--admin-key: this database has no admin, and its user 'admin' is not "
                         "one; add an admin with 'auditd user add NAME --role admin'")
    await store.add_user("admin", "admin", key=given)
    log.warning("this database had users but no admin: created 'admin' with the key given by "
                "--admin-key")


def plain_http_warning(addresses) -> str | None:
    """A warning when the server listens beyond this machine: HTTP carries the keys in clear."""
    exposed = []
    for address in addresses:
        host = address[0] if isinstance(address, tuple) else None
        try:
            if host is not None and not ipaddress.ip_address(host).is_loopback:
                exposed.append(host)
        except ValueError:
            exposed.append(host)
    if not exposed:
        return None
    return (f"listening on {', '.join(sorted(set(exposed)))}, beyond this machine, over plain "
            "HTTP: API keys travel in Basic auth headers anyone on the network path can read. "
            "Serve on 127.0.0.1 behind a TLS-terminating proxy (nginx, Caddy, a load balancer) "
            "and give clients its https:// address")


async def _watchdog(app: web.Application, interval: float):
    """Ping systemd's watchdog while the loop runs and the database answers a query."""
    store = app[STORE]
    while True:
        try:
            await asyncio.wait_for(store.ping(), timeout=interval)
        except Exception as err:   # noqa: BLE001 - a missed ping is how systemd learns of it
            log.warning("watchdog: the database did not answer (%r); not pinging systemd", err)
        else:
            systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


async def _start_sites(runner: web.AppRunner, config: Config, sockets):
    try:
        if sockets:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
        else:
            await web.TCPSite(runner, config.host, config.port, reuse_address=True).start()
    except OSError as err:
        raise StartError(f"cannot listen on {config.host}:{config.port}: "
                         f"{err.strerror or err}; choose another --port or --host") from None


async def serve(config: Config, sockets=None, ready=None) -> int:
    """Serve until SIGTERM or SIGINT; then stop accepting, finish in-flight requests, close the
    streams with 1001, commit what is pending and return 0.

    `sockets`: listening sockets to serve on; by default the ones systemd passed (socket
    activation), else a new one bound to config.host:config.port."""
    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal(signum):
        # A second Ctrl-C means "now"; a repeated SIGTERM (process managers resend it) does not.
        if stop.is_set() and signum == signal.SIGINT:
            log.warning("second SIGINT: exiting without waiting")
            force.set()
        elif stop.is_set():
            log.info("already stopping (%s)", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if sockets is None:
        sockets = systemd.listen_sockets()

    quiet_accept_errors(loop)
    keep_freed_heap()
    cap = effective_cap(config.max_connections, raise_descriptor_limit())
    guard = ConnectionGuard(cap, config.head_timeout, config.idle_timeout)
    claim = claim_for_serving(config.db, f"pid {os.getpid()}, started "
                                         f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, "
                                         f"address {config.host}:{config.port}")
    try:
        return await _serve(config, sockets, ready, guard, cap, stop, force)
    finally:
        claim.release()


async def _serve(config: Config, sockets, ready, guard, cap, stop, force) -> int:
    app = create_app(config)
    runner = GuardedRunner(app, guard=guard, access_log_class=AccessLogger,
                           access_log=logging.getLogger("auditd.access") if config.access_log
                           else None, shutdown_timeout=config.shutdown_timeout,
                           keepalive_timeout=config.idle_timeout, handle_signals=False)
    try:
        await runner.setup()
    except BaseException as err:
        # Undo what started (the store's threads would keep the process alive), then explain.
        await runner.cleanup()
        if isinstance(err, (OSError, sqlite3.Error)):
            raise StartError(f"cannot open the database {config.db}: {err}") from None
        raise
    freeze_startup_objects()
    watchdog = None
    try:
        await _start_sites(runner, config, sockets)
        # Printed before "listening on" is logged: whoever waits for that line has the key.
        await ensure_first_admin(app, public_address(config, runner.addresses))
        warning = plain_http_warning(runner.addresses)
        if warning:
            log.warning(warning)
        addresses = ", ".join(str(a) for a in runner.addresses)
        log.info("listening on %s (database %s)", addresses, config.db,
                 extra={"fields": {"socket_activated": bool(sockets), "max_connections": cap}})
        systemd.notify("READY=1", f"STATUS=listening on {addresses}")
        interval = systemd.watchdog_interval()
        if interval:
            watchdog = asyncio.create_task(_watchdog(app, interval))
        if ready is not None:
            ready(runner)
        await stop.wait()
        log.info("stopping: finishing requests in flight and closing streams")
        systemd.notify("STOPPING=1", "STATUS=stopping")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if not await _stop(runner, config, force):
            _exit_now(1)
    log.info("stopped")
    return 0


M_TRIM_THRESHOLD, M_TOP_PAD = -1, -2      # glibc's mallopt parameters (malloc.h)
HEAP_TRIM_THRESHOLD = 16 * 1024 * 1024
HEAP_TOP_PAD = 4 * 1024 * 1024


def keep_freed_heap() -> bool:
    """Ask glibc's malloc to keep freed memory at the top of the heap (up to 16 MiB) instead of
    handing it back to the kernel whenever a request frees what it took: a list over several
    namespaces took and gave back a few hundred KiB each time, four `brk` calls and fresh pages
    to fault in per request (measured: 3,200 -> 7,700 req/s). Left alone where the environment
    already sets it (MALLOC_TRIM_THRESHOLD_) or malloc is not glibc's. True when set."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") or os.environ.get("MALLOC_TOP_PAD_"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)) and \
        bool(mallopt(M_TOP_PAD, HEAP_TOP_PAD))


def freeze_startup_objects():
    """Keep what the start made (modules, the app, the store: ~45,000 objects) out of the
    garbage collector's full collections from now on. A full collection looks at every object
    and holds the GIL while it does: ~40 ms here with them, a request's own objects without."""
    gc.collect()
    gc.freeze()


async def _stop(runner: web.AppRunner, config: Config, force: asyncio.Event) -> bool:
    """Run the graceful stop; False when it took too long or a second signal cut it short."""
    cleanup = asyncio.create_task(runner.cleanup())
    forced = asyncio.create_task(force.wait())
    done, _ = await asyncio.wait({cleanup, forced}, timeout=config.shutdown_timeout
                                 + SHUTDOWN_GRACE, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if cleanup in done:
        cleanup.result()
        return True
    log.error("the stop did not finish in time; exiting now (acknowledged writes are committed)")
    return False


def _exit_now(code: int):
    """Leave without waiting for threads (a stuck database thread must not hold the exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    os._exit(code)
