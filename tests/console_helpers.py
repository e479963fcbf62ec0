"""What the browser tests of the web console share: headless Chromium through Playwright, and a
small synchronous client of a real auditd process (the tests' producer)."""
import base64
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# not AUDITD_*: the server refuses an AUDITD_ variable it does not know
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def need_browser():
    """Skip (with the reason shown by -rs) when the browser or its driver is missing."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)",
                    allow_module_level=True)
    return pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (it is in the test extra)")


def basic(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


class Client:
    """The API of a running server, as one user."""

    def __init__(self, srv, user: str, key: str):
        self.srv, self.user, self.key = srv, user, key

    def call(self, method: str, path: str, body=None, content_type="application/json"):
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        request = urllib.request.Request(self.srv.url + path, method=method, data=data, headers={
            "Authorization": basic(self.user, self.key), "Content-Type": content_type,
            "User-Agent": "docker-cloud-cli/1.0.9 python-dockercloud/1.0.12"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read()!r}") from None

    def record(self, **fields) -> dict:
        fields.setdefault("action", "Service Create")
        return self.call("POST", "/api/audit/v1/action/", fields)

    def state(self, uuid: str, state: str) -> dict:
        return self.call("PATCH", f"/api/audit/v1/action/{uuid}/", {"state": state})

    def append(self, uuid: str, lines) -> dict:
        if isinstance(lines, str):
            return self.call("POST", f"/api/audit/v1/action/{uuid}/logs/", lines, "text/plain")
        return self.call("POST", f"/api/audit/v1/action/{uuid}/logs/", lines)

    def list(self, query="") -> dict:
        return self.call("GET", "/api/audit/v1/action/" + (f"?{query}" if query else ""))


def add_user(srv, name: str, role: str = "user") -> str:
    result = srv.cli("user", "add", name, "--role", role)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def handshake(srv, path: str, headers: dict) -> int:
    """The status of a WebSocket upgrade request (101 when the server accepts it)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers})
        return conn.getresponse().status
    finally:
        conn.close()


def sign_in(page, srv, user: str, key: str, path: str = "/ui/"):
    page.goto(srv.url + path)
    form = page.locator("#signin-form")
    form.locator("input[name=user]").fill(user)
    form.locator("input[name=key]").fill(key)
    form.locator("button[type=submit]").click()
    page.locator("#session").wait_for()


def rows(page):
    return page.locator("#actions tbody tr")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for a test module (a fresh context per test keeps them apart)."""
    from playwright.sync_api import sync_playwright
    driver = sync_playwright().start()
    chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    driver.stop()
