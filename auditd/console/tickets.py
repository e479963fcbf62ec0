"""Stream tickets: how the console opens the API's WebSockets without a credential in a URL.

A browser cannot set headers on a WebSocket handshake, and the API's other way (`?user=&token=`)
puts the API key in the URL. So the console first asks `POST /ui/api/ticket` (with its usual
`Authorization: Basic` header) for a ticket: an opaque random string, good for one handshake
within TICKET_SECONDS. It then opens `/api/audit/v1/...?ticket=T`. The middleware below takes
the ticket out of the query (once: it is deleted as it is used) and hands the request on with the
Authorization header the ticket was issued for, so the ordinary authentication runs at the
handshake: a key rotated or a user removed in between is refused as usual, and the stream sees
the same principal, with the same visibility, as the console's HTTP requests.

Tickets live in this process's memory only (at most MAX_TICKETS; expired ones are dropped as new
ones are issued). Only the log and events streams redeem them; anywhere else a ticket is ignored.
"""
import json
import secrets
import time

from aiohttp import web

from .. import keys
from ..auth import authenticate
from .origin import check_origin

TICKET_SECONDS = 30
MAX_TICKETS = 10_000

TICKETS = web.AppKey("console_tickets", dict)


def _json(status: int, body: dict, headers=None) -> web.Response:
    headers = {"Cache-Control": "no-store", **(headers or {})}
    return web.Response(text=json.dumps(body), status=status, headers=headers,
                        content_type="application/json")


def _drop_expired(tickets: dict, now: float):
    for ticket in [t for t, (expires, _) in tickets.items() if expires <= now]:
        del tickets[ticket]


async def issue(request: web.Request) -> web.Response:
    """POST /ui/api/ticket: a single-use ticket for one stream handshake."""
    check_origin(request)
    header = request.headers.get("Authorization")
    principal = authenticate(request.app[keys.STORE], header)    # 401 without valid credentials
    request[keys.PRINCIPAL] = principal                           # for the access log
    tickets = request.app[TICKETS]
    now = time.monotonic()
    if len(tickets) >= 100:
        _drop_expired(tickets, now)
        if len(tickets) >= MAX_TICKETS:
            return _json(503, {"error": "too many unused stream tickets; retry in "
                                        f"{TICKET_SECONDS} seconds"},
                         {"Retry-After": str(TICKET_SECONDS)})
    ticket = secrets.token_urlsafe(32)
    tickets[ticket] = (now + TICKET_SECONDS, header)
    return _json(201, {"ticket": ticket, "expires_in": TICKET_SECONDS, "user": principal.name})


def _is_stream(request: web.Request) -> bool:
    path = request.path
    return (request.method == "GET" and path.startswith(("/api/", "/audit/"))
            and (path.rstrip("/").endswith(("/logs", "/events"))))


@web.middleware
async def ticket_middleware(request: web.Request, handler):
    """Redeem `?ticket=` on the streams: the request goes on without it, authenticated as the
    ticket's holder. Other requests cost a substring test."""
    if "ticket=" not in request.rel_url.raw_query_string or not _is_stream(request) \
            or "ticket" not in request.query:
        return await handler(request)
    entry = request.app[TICKETS].pop(request.query["ticket"], None)
    if entry is None or entry[0] <= time.monotonic():
        return _json(401, {"error": "invalid or expired stream ticket: a ticket serves one "
                                    f"handshake within {TICKET_SECONDS} s of POST "
                                    "/ui/api/ticket; get a new one"})
    query = request.query.copy()
    del query["ticket"]
    headers = request.headers.copy()
    headers["Authorization"] = entry[1]
    redeemed = request.clone(rel_url=request.rel_url.with_query(query), headers=headers)
    try:
        return await handler(redeemed)
    finally:
        # the access log reads the principal from the request aiohttp knows
        if keys.PRINCIPAL in redeemed:
            request[keys.PRINCIPAL] = redeemed[keys.PRINCIPAL]


def setup(app: web.Application):
    app[TICKETS] = {}
    # Outermost, so the request middleware authenticates the redeemed request as usual.
    app.middlewares.insert(0, ticket_middleware)
    app.router.add_post("/ui/api/ticket", issue)
