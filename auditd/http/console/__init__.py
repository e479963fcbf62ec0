"""The web console (issue 14): `GET /ui/` serves a single-page console from this process.

Everything it shows comes from the public API, fetched by the browser with the signed-in user's
own credentials, so a page shows exactly what that principal may see. The files in `static/` are
shipped in the package and served as they are: no build step, nothing fetched from elsewhere.

Its handlers (routed in `auditd/http/routes.py`):
- `/` (for a browser: Accept text/html) and `/ui` redirect to `/ui/`; `/ui/` and
  `/ui/action/<uuid>` serve `index.html` (the page routes itself); `/ui/static/<file>` serves
  the page's scripts and style sheet.
- a strict Content-Security-Policy (and friends) on every one of those responses: scripts and
  styles only from these files, no inline script or style, connections only to this server.
- `POST /ui/api/ticket` and the redemption of stream tickets at authentication (tickets.py).
- `check_origin` (origin.py), which the WebSocket handlers call at the upgrade.
"""
import re
from pathlib import Path

from aiohttp import web


STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml", ".png": "image/png"}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def security_headers(request: web.Request) -> dict:
    """The console's headers. connect-src names this host's ws:/wss: origins explicitly (older
    browsers do not count ws: as 'self')."""
    host = request.headers.get("Host", "")
    sockets = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    csp = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           f"connect-src 'self'{sockets}; form-action 'self'; base-uri 'none'; "
           "frame-ancestors 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"}


def _file(request: web.Request, path: Path) -> web.FileResponse:
    headers = security_headers(request)
    headers["Content-Type"] = _TYPES.get(path.suffix, "application/octet-stream")
    return web.FileResponse(path, headers=headers)


async def page(request: web.Request) -> web.StreamResponse:
    """The console's one HTML page, for every view (the script reads the URL)."""
    return _file(request, STATIC / "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return _file(request, FILES[name])


async def to_console(request: web.Request):
    raise web.HTTPFound("/ui/")


async def root(request: web.Request):
    """`/` leads a browser to the console; an API client still gets the JSON 404 that names
    where the API is."""
    if "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound("/ui/")
    raise web.HTTPNotFound()


FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES and p.is_file()}
