"""Around every request: credentials, errors as one JSON shape, and metrics."""
import asyncio
import logging
import time

from aiohttp import web
from marshmallow import ValidationError

from ..model.errors import AuditdError, InvalidRequest
from ..schemas import describe_errors
from . import streams
from .appkeys import CONFIG, CREDENTIALS, LIMITS, METRICS, PRINCIPAL, STORE
from .auth import check_credentials, credentials_of
from .console.tickets import redeem
from .openapi import PATH as OPENAPI_PATH
from .responses import error_response

log = logging.getLogger("auditd.app")


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
                                      max_body=request.app[CONFIG].max_body_bytes)
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


STREAM_HANDLERS = frozenset({streams.action_logs, streams.events})


async def authenticate_request(request: web.Request):
    """Every API route needs credentials (but the OpenAPI document); the streams also take them
    as ?user=&token=."""
    if request.match_info.http_exception is None and request.path.startswith(
            ("/api/", "/audit/")) and request.path != OPENAPI_PATH:   # the document is public
        from_query = request.match_info.handler in STREAM_HANDLERS
        header = request.headers.get("Authorization")
        if from_query and "ticket=" in request.rel_url.raw_query_string:
            header = redeem(request, request.query.get("ticket", ""))   # the console's streams
        credentials = credentials_of(header, request.query.get("user") if from_query else None,
                                     request.query.get("token") if from_query else None)
        request[PRINCIPAL] = await check_credentials(request.app[STORE], credentials)
        if from_query:
            request[CREDENTIALS] = credentials   # a stream checks them again while it is open


def check_headers(request: web.Request):
    """Every header value must be text: undecodable bytes are refused, naming the header."""
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(f"header '{name}' is not valid UTF-8: send UTF-8 text "
                                     "(or ASCII)") from None


async def _with_body_budget(request: web.Request, handler, size: int):
    budget = request.app[LIMITS].bodies
    budget.reserve(size)
    try:
        return await handler(request)
    finally:
        budget.release(size)


@web.middleware
async def request_middleware(request: web.Request, handler):
    """Around every request: credentials, errors as JSON, and the request counted and timed for
    /_auditd/metrics with the status the client gets. One middleware rather than three, because
    every layer costs a coroutine and a call per request."""
    started = time.perf_counter()
    try:
        await authenticate_request(request)
        check_headers(request)
        size = request.app[LIMITS].body_size(request)
        if size:
            response = await _with_body_budget(request, handler, size)
        else:
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
