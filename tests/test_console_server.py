"""The web console's server side, without a browser: its headers, the stream tickets and the
Origin check at WebSocket upgrades, against a real `auditd serve` process."""
import json
import re
import urllib.error
import urllib.request

import pytest

from auditd.http.console.origin import origin_allowed
from console_helpers import add_user, basic, handshake


def user(srv, name):
    return name, add_user(srv, name)


@pytest.mark.parametrize("origin, host, allowed", [
    (None, "127.0.0.1:8080", True),                           # non-browser clients
    ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
    ("HTTP://Example.COM:8080", "example.com:8080", True),
    ("https://audit.example", "audit.example", True),         # behind a TLS proxy
    ("http://audit.example:80", "audit.example", True),
    ("http://[::1]:8080", "[::1]:8080", True),
    ("http://evil.example", "127.0.0.1:8080", False),
    ("http://127.0.0.1:8081", "127.0.0.1:8080", False),
    ("http://localhost:8080", "127.0.0.1:8080", False),
    ("https://audit.example:8443", "audit.example", False),
    ("null", "127.0.0.1:8080", False),
    ("file://", "127.0.0.1:8080", False),
    ("http://127.0.0.1:99999", "127.0.0.1:8080", False),
    ("http://127.0.0.1:8080", None, False),
])
def test_origin_rule(origin, host, allowed):
    assert origin_allowed(origin, host) is allowed


def test_root_leads_browsers_to_the_console_and_api_clients_to_a_json_404(module_server):
    request = urllib.request.Request(module_server.url + "/", headers={"Accept": "text/html"})
    with urllib.request.urlopen(request) as response:
        assert response.url == module_server.url + "/ui/"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(module_server.url + "/")
    assert err.value.code == 404 and "/api/audit/v1/action/" in json.loads(err.value.read())["error"]


def test_console_responses_carry_a_strict_csp(module_server):
    for path in ("/ui/", f"/ui/action/{'0' * 8}", "/ui/static/console.js", "/ui/static/console.css"):
        with urllib.request.urlopen(module_server.url + path) as response:
            csp = response.headers["Content-Security-Policy"]
            body = response.read().decode()
        assert "default-src 'none'" in csp and "script-src 'self';" in csp, csp
        assert "style-src 'self';" in csp and "unsafe" not in csp, csp
        assert f"connect-src 'self' ws://127.0.0.1:{module_server.port} " in csp, csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if path.startswith("/ui/static/"):
            continue
        assert response.headers["Content-Type"].startswith("text/html")
        # no inline script or style in the page itself
        scripts = re.findall(r"<script\b[^>]*>", body)
        assert scripts == ['<script type="module" src="/ui/static/console.js">'], scripts
        assert "<style" not in body and " style=" not in body and "javascript:" not in body


def test_websocket_origin_check_and_single_use_tickets(module_server):
    srv = module_server
    name, key = user(srv, "otto")
    auth = {"Authorization": basic(name, key)}
    events = "/api/audit/v1/events/"
    # real clients: no Origin, or their own idea of the server's address
    assert handshake(srv, events, auth) == 101
    assert handshake(srv, events, {**auth, "Origin": srv.url}) == 101
    assert handshake(srv, events + f"?user={name}&token={key}", {}) == 101
    # a page on another site
    for origin in ("http://evil.example", f"http://127.0.0.1:{srv.port + 1}", "null",
                   f"http://localhost:{srv.port}"):
        assert handshake(srv, events, {**auth, "Origin": origin}) == 403, origin

    def ticket():
        request = urllib.request.Request(srv.url + "/ui/api/ticket", method="POST", headers=auth)
        with urllib.request.urlopen(request) as response:
            assert response.headers["Cache-Control"] == "no-store"
            body = json.loads(response.read())
        assert body["expires_in"] == 30 and body["user"] == name
        return body["ticket"]

    first = ticket()
    assert handshake(srv, events + f"?ticket={first}", {"Origin": srv.url}) == 101
    assert handshake(srv, events + f"?ticket={first}", {}) == 401              # used once
    assert handshake(srv, events + "?ticket=made-up", {}) == 401
    assert handshake(srv, events + f"?ticket={ticket()}", {"Origin": "http://evil.example"}) == 403
