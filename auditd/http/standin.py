"""The stand-in for the cloud API in tests: the admin-only `POST /_auditd/reset` and
`POST /_auditd/seed` that other projects' tests use to start each test from known data, and at
start a fixture file (`serve --fixtures FILE`) or the demo (`serve --demo`)."""
import asyncio
import gc
import logging
import random
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from ..formats.fixtures import parse_fixtures, prepare_fixtures
from ..model import dates
from ..model.access import require_role
from ..model.errors import InvalidRequest
from ..tasks.demo import demo_namespace
from ..tasks.demo_world import build_world, demo_history
from .appkeys import BODY_PARSER, CONFIG, DEMO, LOCATOR, STORE
from .auth import authenticate
from .bodies import seed_items
from .requests import body_chunks
from .responses import json_response

log = logging.getLogger("auditd.demo")


async def _admin(request: web.Request):
    principal = await authenticate(request.app[STORE], request.headers.get("Authorization"))
    require_role(principal, "admin")
    return principal


async def reset(request: web.Request) -> web.Response:
    """Delete every action, log line and object; users stay. The demo operation stops too, so
    what a test seeds next is all there is."""
    await _admin(request)
    await request.app[DEMO].stop()
    deleted = await request.app[STORE].reset()   # its note ends the deleted actions' followers
    return json_response({"deleted": deleted})



SEED_TYPES = ("", "application/json", "application/x-ndjson", "application/octet-stream",
              "text/plain")


async def seed(request: web.Request) -> web.StreamResponse:
    """Load the body's actions, all or none, without holding up other clients (parsed here, a
    7 MB seed of 30,000 actions held them up ~0.4 s): the items are checked in the body parser's
    process, stored on the writer's thread, then freed and rendered a slice at a time; the
    cyclic garbage collector waits meanwhile (one full collection over a big seed's objects held
    the GIL ~30 ms)."""
    principal = await _admin(request)
    if request.content_type not in SEED_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type {request.content_type} is not accepted: send application/json "
                 "(an array of actions) or application/x-ndjson")
    chunks, size = await body_chunks(request)
    with _collector_paused():
        items = await request.app[BODY_PARSER].parse(seed_items, chunks, size, principal.name,
                                                     request.app[LOCATOR])
        del chunks
        try:
            actions = await request.app[STORE].load(items)
        finally:
            if not asyncio.current_task().cancelling():   # else the load may still read them
                await _drop(items)
        parts = await _answer(actions)
    response = web.StreamResponse(status=201)
    response.content_type, response.charset = "application/json", "utf-8"
    response.content_length = sum(len(part) for part in parts)
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


SLICE = 500                 # actions freed at a time
PIECE_CHARS = 256 * 1024    # about this much of the answer is joined and encoded at a time


async def _answer(actions: list[dict]) -> list[bytes]:
    """{"loaded": n, "log_lines": n, "objects": [every document]} in parts, emptying `actions`:
    joined at once, 30,000 documents (12 MB) held the GIL 6-13 ms."""
    count, lines, pieces = len(actions), 0, []
    while actions:
        piece, size = [], 0
        for action in actions:
            lines += action["log_count"]
            piece.append(action["doc"])
            size += len(action["doc"])
            if size >= PIECE_CHARS:
                break
        pieces.append(", ".join(piece).encode())
        del actions[:len(piece)], piece
        await asyncio.sleep(0)
    head = f'{{"loaded": {count}, "log_lines": {lines}, "objects": ['.encode()
    return [head, *_separated(pieces), b"]}"]


def _separated(pieces: list[bytes]):
    for at, piece in enumerate(pieces):
        if at:
            yield b", "
        yield piece


async def _drop(items: list):
    """Empty a list a slice at a time: freeing 30,000 actions at once held the GIL ~25 ms."""
    while items:
        del items[-SLICE:]
        if items:
            await asyncio.sleep(0)


_pauses = 0
_collector_was_enabled = True


@contextmanager
def _collector_paused():
    """No automatic cyclic garbage collection while a seed's objects are alive (every seed on
    the loop: a counter, no lock). What they leave is freed by reference counting as usual."""
    global _pauses, _collector_was_enabled
    if _pauses == 0:
        _collector_was_enabled = gc.isenabled()
        gc.disable()
    _pauses += 1
    try:
        yield
    finally:
        _pauses -= 1
        if _pauses == 0 and _collector_was_enabled:
            gc.enable()


async def _load_fixture_file(app, path: str):
    source = f"--fixtures {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidRequest(f"{source}: cannot read it ({err})") from None
    items = prepare_fixtures(parse_fixtures(text, source), source, "admin", app[LOCATOR].locate)
    loaded = await app[STORE].load(items)
    log.info("loaded %d actions from %s", len(loaded), path)


async def stand_in_context(app: web.Application):
    """At start: load the fixture file, or the demo's history, into an empty database; then run
    the demo's live operation while the server runs."""
    config, store, demo = app[CONFIG], app[STORE], app[DEMO]
    empty = not await store.has_actions()
    if config.fixtures:
        if empty:
            await _load_fixture_file(app, config.fixtures)
        else:
            log.warning("--fixtures %s: not loaded, the database already has actions (fixtures "
                        "load only into a database without any; that keeps a restart from "
                        "loading them twice). To load them anyway: 'auditd import %s --db %s' "
                        "(skips the uuids already there), or POST /_auditd/reset then "
                        "/_auditd/seed", config.fixtures, config.fixtures, config.db)
    if config.demo:
        world = build_world()
        namespace = await demo_namespace(store)
        if empty:
            items = demo_history(world, namespace, dates.now(), random.Random())
            loaded = await store.load(prepare_fixtures(
                [(f"demo {i}", item) for i, item in enumerate(items)], "demo", namespace,
                app[LOCATOR].locate))
            demo.watched = {a["uuid"] for a in loaded if a["state"] == "In progress"}
            log.info("loaded %d demo actions in namespace %s", len(loaded), namespace)
        demo.start(store, world, namespace)
    yield
    await demo.stop()
