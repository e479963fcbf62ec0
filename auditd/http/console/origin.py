"""The Origin check at a WebSocket upgrade (cross-site WebSocket hijacking).

A browser sends `Origin` on every WebSocket handshake, and it may attach credentials it holds
for this server (cached Basic credentials), so a page on another site could otherwise open a
stream as the user. Non-browser clients send no Origin, or their own idea of the server's
address (`http://host:port`, as websocket-client does); both keep working. The rule is
deliberately lenient: refuse only when the Origin names a host:port other than the request's
`Host`, or is opaque (`null`, from sandboxed frames and file: pages).
"""
from urllib.parse import urlsplit

from ...model.errors import Forbidden

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _host_port(netloc: str) -> tuple[str, int | None]:
    """('host', port or None) from 'host', 'host:port', '[::1]:port'."""
    parts = urlsplit("//" + netloc)
    try:
        port = parts.port
    except ValueError:
        port = -1        # a malformed port matches nothing
    return (parts.hostname or "").lower(), port


def origin_allowed(origin: str | None, host: str | None) -> bool:
    if origin is None:
        return True
    parts = urlsplit(origin.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not host:
        return False
    try:
        origin_port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    host_name, host_port = _host_port(host)
    if parts.hostname.lower() != host_name:
        return False
    # A Host without a port is the default port of whatever scheme the client used (a proxy
    # may have terminated TLS in front of us), so any default port of the Origin fits it.
    if host_port is None:
        return origin_port in (80, 443)
    return origin_port == host_port


def check_origin(request) -> None:
    """Raise 403 for a browser handshake from another origin; called before the upgrade."""
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, request.headers.get("Host")):
        raise Forbidden(f"cross-origin WebSocket refused: Origin {origin!r} is not this server "
                        f"({request.headers.get('Host', '')}); browsers may open streams only "
                        "from pages this server serves")
