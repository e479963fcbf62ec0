"""The stand-in for the cloud API in tests: the admin-only `POST /_auditd/reset` and
`POST /_auditd/seed` that other projects' tests use to start each test from known data, and at
start a fixture file (`serve --fixtures FILE`) or the demo (`serve --demo`)."""
import logging
import random
from pathlib import Path

from aiohttp import web

from ..formats.fixtures import parse_fixtures, prepare_fixtures
from ..model import dates
from ..model.access import require_role
from ..model.errors import InvalidRequest
from ..tasks.demo import demo_namespace
from ..tasks.demo_world import build_world, demo_history
from .appkeys import CONFIG, DEMO, LOCATOR, STORE
from .auth import authenticate
from .responses import json_response, json_text

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


async def seed(request: web.Request) -> web.Response:
    principal = await _admin(request)
    if request.content_type not in SEED_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type {request.content_type} is not accepted: send application/json "
                 "(an array of actions) or application/x-ndjson")
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not UTF-8 text") from None
    source = "seed"
    items = prepare_fixtures(parse_fixtures(text, source), source, principal.name,
                             request.app[LOCATOR].locate)
    actions = await request.app[STORE].load(items)
    lines = sum(a["log_count"] for a in actions)
    return json_text(f'{{"loaded": {len(actions)}, "log_lines": {lines}, "objects": ['
                     + ", ".join(a["doc"] for a in actions) + "]}", 201)


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
