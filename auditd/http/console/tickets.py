"""Stream tickets: how the console opens the API's WebSockets without a credential in a URL.

A browser cannot set headers on a WebSocket handshake, and the API's other way (`?user=&token=`)
puts the API key in the URL. So the console first asks `POST /ui/api/ticket` (with its usual
`Authorization: Basic` header) for a ticket: an opaque random string, good for one handshake
within TICKET_SECONDS. It then opens `/api/audit/v1/...?ticket=T`. The request middleware's
authentication redeems the ticket (once: it is deleted as it is used) for the Authorization
header it was issued for, so the ordinary authentication runs at the handshake: a key rotated or
a user removed in between is refused as usual, and the stream sees
the same principal, with the same visibility, as the console's HTTP requests.

Tickets live in this process's memory only (at most MAX_TICKETS; expired ones are dropped as new
ones are issued). Only the log and events streams redeem them; anywhere else a ticket is ignored.
"""
import json
import secrets
import time

from aiohttp import web

from ...model.errors import Unauthorized
from ..appkeys import PRINCIPAL, STORE, TICKETS
from ..auth import authenticate
from .origin import check_origin

TICKET_SECONDS = 30
MAX_TICKETS = 10_000

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
    principal = await authenticate(request.app[STORE], header)   # 401 without valid credentials
    request[PRINCIPAL] = principal                                # for the access log
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


def redeem(request: web.Request, ticket: str) -> str:
    """The Authorization header a stream ticket was issued for; it serves one handshake."""
    entry = request.app[TICKETS].pop(ticket, None)
    if entry is None or entry[0] <= time.monotonic():
        raise Unauthorized("invalid or expired stream ticket: a ticket serves one handshake "
                           f"within {TICKET_SECONDS} s of POST /ui/api/ticket; get a new one")
    return entry[1]
