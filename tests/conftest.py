"""Shared fixtures: an in-process app on a real SQLite file, and a real `auditd serve` process."""
import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from auditd.http.app import create_app
from auditd.config import Config
from auditd.http.appkeys import STORE

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--backend", choices=("sqlite", "postgres"),
                     default=os.environ.get("AUDITD_TEST_BACKEND", "sqlite"),
                     help="the store the `api`, `server` and `module_server` fixtures use "
                          "(default: $AUDITD_TEST_BACKEND, else sqlite)")


# The modules that are the API's contract: `pytest --backend=postgres -m api` runs them again on
# PostgreSQL (the README's test command does, after the whole suite on SQLite).
API_MODULES = {"test_actions", "test_list", "test_auth", "test_bad_input", "test_stream_events",
               "test_stream_logs", "test_producer", "test_lifecycle", "test_ops", "test_demo",
               "test_runner", "test_real_clients", "test_real_clients_logs"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in API_MODULES:
            item.add_marker(pytest.mark.api)


def pytest_report_header(config):
    return f"auditd backend for api/server fixtures: {config.getoption('--backend')}"


@pytest.fixture(scope="session")
def test_backend(request) -> str:
    backend = request.config.getoption("--backend")
    if backend == "postgres":
        import pgtools
        pgtools.require_postgres()
    return backend


def database_for(backend: str, directory: Path, name: str):
    """The database a fixture uses: an SQLite file in `directory`, or an emptied PostgreSQL
    database labelled `name` (tests/pgtools.py)."""
    if backend == "postgres":
        import pgtools
        return pgtools.clean_database(name)
    return directory / f"{name}.db"


@pytest.fixture(scope="session", autouse=True)
def _postgres_databases():
    """Drop the PostgreSQL databases the session made (tests/pgtools.py)."""
    yield
    import pgtools
    pgtools.drop_session_databases()


def basic(user: str, key: str) -> dict:
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Api:
    """A test client that knows the users' keys: `api.get(path, as_="alice")`."""

    def __init__(self, client, keys):
        self.client = client
        self.keys = keys
        self.app = client.server.app

    @property
    def store(self):
        return self.app[STORE]

    def headers(self, as_, extra=None):
        headers = basic(as_, self.keys[as_]) if as_ else {}
        headers.update(extra or {})
        return headers

    def request(self, method, path, as_="admin", headers=None, **kw):
        return self.client.request(method, path, headers=self.headers(as_, headers), **kw)

    def get(self, path, as_="admin", **kw):
        return self.request("GET", path, as_, **kw)

    def post(self, path, as_="admin", **kw):
        return self.request("POST", path, as_, **kw)

    def patch(self, path, as_="admin", **kw):
        return self.request("PATCH", path, as_, **kw)

    async def record(self, as_="producer", **fields) -> dict:
        fields.setdefault("action", "Service Create")
        resp = await self.post("/api/audit/v1/action/", as_=as_, json=fields)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def set_state(self, uuid, state, as_="producer"):
        resp = await self.patch(f"/api/audit/v1/action/{uuid}/", as_=as_, json={"state": state})
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def append(self, uuid, lines, as_="producer"):
        resp = await self.post(f"/api/audit/v1/action/{uuid}/logs/", as_=as_, json=lines)
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def list(self, query="", as_="admin", path="/api/audit/v1/action/"):
        resp = await self.get(path + ("?" + query if query else ""), as_=as_)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def fetch(self, uuid, as_="admin") -> dict:
        resp = await self.get(f"/api/audit/v1/action/{uuid}/", as_=as_)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def all_uuids(self, as_="admin") -> list:
        """Every uuid the caller can list, newest first (one page of the cap)."""
        page = await self.list("limit=1000", as_=as_)
        return [a["uuid"] for a in page["objects"]]

    async def read_logs(self, uuid, as_="admin") -> list:
        """The action's stored log messages, read the way a client reads them: the logs stream
        with tail=all and follow=false, which closes once it has sent them."""
        ws = await self.client.ws_connect(f"/api/audit/v1/action/{uuid}/logs/?tail=all&follow=false",
                                          headers=self.headers(as_))
        messages = [json.loads(m.data) async for m in ws]
        await ws.close()
        return messages


async def error_of(resp, status: int) -> str:
    """Assert `resp` is the JSON error `{"error": "..."}` with `status`; return the message."""
    text = await resp.text()
    assert resp.status == status, f"expected {status}, got {resp.status}: {text}"
    assert resp.content_type == "application/json", (resp.content_type, text)
    body = json.loads(text)
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    return body["error"]


@pytest.fixture
def config(request, tmp_path, test_backend) -> Config:
    """The server's settings; SQLite's writer in its own process, as `serve` runs it, but for
    tests marked `writer_on_loop`, which reach into the writer's jobs (a monkeypatched job
    cannot cross into another process)."""
    return Config(db=str(database_for(test_backend, tmp_path, "auditd")),
                  writer_process=request.node.get_closest_marker("writer_on_loop") is None)


@pytest.fixture
async def api(aiohttp_client, config) -> Api:
    """The app on a fresh database with users admin, producer, alice, bob and carol; carol and
    alice are members of the organization acme."""
    client = await aiohttp_client(create_app(config))
    store = client.server.app[STORE]
    roles = {"admin": "admin", "producer": "producer", "alice": "user", "bob": "user",
             "carol": "user"}
    # concurrent, so the writer commits them together: this fixture runs for most tests
    created = await asyncio.gather(*(store.add_user(n, r) for n, r in roles.items()),
                                   store.add_org("acme"))
    keys = dict(zip(roles, created))
    await asyncio.gather(store.add_member("acme", "alice"), store.add_member("acme", "carol"))
    return Api(client, keys)


# ---------------------------------------------------------------------------- a real server process

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m auditd serve` on a free loopback port; knows the admin key it printed."""

    def __init__(self, db: Path, extra_args=(), env=None, nofile=None):
        self.db, self.port = db, free_port()
        self.nofile = nofile        # (soft, hard) open-file limit for the server process
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args, self.env = list(extra_args), env
        self.proc = None
        self.admin_key = None
        self.stderr_lines = []

    def start(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "auditd", "serve", "--port", str(self.port), "--db",
             str(self.db), *self.extra_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            preexec_fn=self._limit if self.nofile else None)
        # Wait for the line that says it listens (the process prints it once the port is bound),
        # then keep draining stderr so the server never blocks on a full pipe.
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            if "listening on" in line:
                break
        else:
            self.proc.wait(timeout=30)
            self.proc.stdout.close()
            self.proc.stderr.close()
            raise RuntimeError("auditd serve exited early:\n" + "".join(self.stderr_lines))
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._drainer.start()
        if self.admin_key is None:
            self.admin_key = self._read_banner_key()
        return self

    def _limit(self):
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _read_banner_key(self):
        # The banner is printed (to stdout) before listening, only on an empty database.
        os.set_blocking(self.proc.stdout.fileno(), False)
        try:
            text = self.proc.stdout.read() or ""
        except TypeError:        # text mode on an empty non-blocking pipe: nothing printed
            text = ""
        os.set_blocking(self.proc.stdout.fileno(), True)
        match = re.search(r"DOCKERCLOUD_APIKEY=(\S+)", text)
        return match.group(1) if match else None

    def _drain(self, stream):
        with stream:
            for line in stream:
                self.stderr_lines.append(line)

    def stop(self, sig=None):
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self.proc:
            self.proc.stdout.close()
            self._drainer.join(timeout=10)
        return self.proc.returncode if self.proc else None

    def cli(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "auditd", *args, "--db", str(self.db)],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture
def server(tmp_path, test_backend):
    srv = ServerProcess(database_for(test_backend, tmp_path, "server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory, test_backend):
    """One server process for a whole module whose tests use distinct names (starting a
    process costs about a second)."""
    srv = ServerProcess(database_for(test_backend, tmp_path_factory.mktemp("server"),
                                     "module_server")).start()
    yield srv
    srv.stop()
