"""The application factory: `create_app(config)` builds everything the server runs."""
import asyncio
import json
import logging
import time

from aiohttp import WSCloseCode, web
from marshmallow import ValidationError

from . import console, data, demo, keys, ops, stream_views, views  # wiring: console
from .auth import authenticate
from .config import Config
from .errors import AuditdError
from .geo import Locator
from .ops import METRICS
from .schemas import describe_errors
from .store import Store
from .streams import Streams

log = logging.getLogger("auditd.app")

GOING_AWAY = WSCloseCode.GOING_AWAY   # 1001


def error_response(status: int, message: str, headers=None) -> web.Response:
    return web.Response(text=json.dumps({"error": message}), status=status, headers=headers,
                        content_type="application/json")


_HTTP_MESSAGES = {
    404: "No such endpoint: {method} {path}. The Actions API lives under /api/audit/v1/action/",
    413: "The request body is too large: at most {max_body} bytes are accepted",
}


def error_response_for(request: web.Request, err: Exception) -> web.Response:
    """The `{"error": ...}` answer for an exception a handler raised; never HTML, never a
    traceback. An HTTPException below 400 (a redirect) is not an error: it is raised again."""
    if isinstance(err, AuditdError):
        return error_response(err.status, err.message, getattr(err, "headers", None))
    if isinstance(err, ValidationError):
        return error_response(400, describe_errors(err.messages))
    if isinstance(err, web.HTTPException):
        if err.status < 400:
            raise err
        template = _HTTP_MESSAGES.get(err.status)
        if template:
            message = template.format(method=request.method, path=request.path,
                                      max_body=request.app[keys.CONFIG].max_body_bytes)
        elif err.status == 405:
            message = (f"Method {request.method} is not allowed on {request.path}; "
                       f"allowed: {err.headers.get('Allow', '')}")
        else:
            message = err.text if err.text and not err.text.startswith(f"{err.status}:") \
                else err.reason
        headers = {k: v for k, v in err.headers.items() if k.lower() in ("allow",)}
        return error_response(err.status, message, headers)
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=err)
    return error_response(500, "Internal error: the server log has the details; "
                               "retry, and report it if it persists")


STREAM_HANDLERS = frozenset({stream_views.action_logs, stream_views.events})


def authenticate_request(request: web.Request):
    """Every API route needs credentials; the streams also take them as ?user=&token=."""
    if request.match_info.http_exception is None and request.path.startswith(("/api/", "/audit/")):
        from_query = request.match_info.handler in STREAM_HANDLERS
        request[keys.PRINCIPAL] = authenticate(
            request.app[keys.STORE], request.headers.get("Authorization"),
            request.query.get("user") if from_query else None,
            request.query.get("token") if from_query else None)


@web.middleware
async def request_middleware(request: web.Request, handler):
    """Around every request: credentials, errors as JSON, and the request counted and timed for
    /_auditd/metrics with the status the client gets. One middleware rather than three, because
    every layer costs a coroutine and a call per request."""
    started = time.perf_counter()
    try:
        authenticate_request(request)
        response = await handler(request)
    except (asyncio.CancelledError, ConnectionResetError):
        raise     # the client went away: no status to count
    except Exception as err:  # noqa: BLE001 - every error becomes a JSON answer
        try:
            response = error_response_for(request, err)
        except web.HTTPException as redirect:
            request.app[METRICS].observe(request, redirect.status, time.perf_counter() - started)
            raise
    # A WebSocket's duration is the life of the stream, not a latency: counted, not timed.
    streamed = isinstance(response, web.WebSocketResponse)
    request.app[METRICS].observe(request, response.status,
                                 None if streamed else time.perf_counter() - started)
    return response


def setup_routes(app: web.Application):
    def add(method, path, handler):
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path.rstrip("/"), handler)   # no redirect without the slash

    for prefix in ("/api/audit/v1", "/api/audit/v1/{namespace}"):
        add("GET", prefix + "/action/", views.list_actions)
        add("POST", prefix + "/action/", views.record_action)
        add("GET", prefix + "/action/{uuid}/", views.get_action)
        add("PATCH", prefix + "/action/{uuid}/", views.change_state)
        add("POST", prefix + "/action/{uuid}/cancel/", views.cancel_action)
        add("POST", prefix + "/action/{uuid}/retry/", views.retry_action)
        add("GET", prefix + "/action/{uuid}/logs/", stream_views.action_logs)
        add("POST", prefix + "/action/{uuid}/logs/", views.append_logs)
        add("GET", prefix + "/events/", stream_views.events)
    # go-dockercloud dials the log stream without /api
    add("GET", "/audit/v1/action/{uuid}/logs/", stream_views.action_logs)
    add("GET", "/audit/v1/{namespace}/action/{uuid}/logs/", stream_views.action_logs)


async def _store_context(app: web.Application):
    config = app[keys.CONFIG]
    store = Store(config.db, synchronous=config.synchronous, group_commit=config.group_commit)
    await store.open()
    store.on_commit = app[keys.STREAMS].committed
    app[keys.STREAMS].lineage = store.lineage
    app[keys.STORE] = store
    yield
    await store.close()


async def _close_sockets(app: web.Application):
    """Close every open stream with 1001; a client that does not answer is not waited for long."""
    sockets = list(app[keys.STREAMS].sockets)
    try:
        async with asyncio.timeout(app[keys.CONFIG].shutdown_timeout):
            await asyncio.gather(*(ws.close(code=GOING_AWAY, message=b"server shutting down")
                                   for ws in sockets), return_exceptions=True)
    except TimeoutError:
        log.warning("%d stream(s) did not close in time", len(sockets))


def create_app(config: Config | None = None) -> web.Application:
    config = config or Config()
    app = web.Application(middlewares=[request_middleware],
                          client_max_size=config.max_body_bytes)
    app[keys.CONFIG] = config
    app[keys.STREAMS] = Streams()
    app[keys.LOCATOR] = Locator(config.geoip_db or None)
    app.cleanup_ctx.append(_store_context)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    for module in (ops, data, demo):
        module.setup(app)
    console.setup(app)   # wiring: the web console (/ui/), its stream tickets
    return app
