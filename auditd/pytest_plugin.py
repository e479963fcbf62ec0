"""pytest plugin (entry point `pytest11`): a real auditd for another project's tests.

    def test_my_tool_records_its_deploys(auditd_server):
        auditd_server.reset()
        run_my_tool(env=auditd_server.env)             # DOCKERCLOUD_* point it at the server
        api = auditd_server.client()
        assert [a["action"] for a in api.list()["objects"]] == ["Service Redeploy"]

`auditd_server` is one `auditd serve` process per test session (set the ini option
`auditd_server_scope` to module, class or function for more), listening on a free loopback port,
on a database in a temporary directory that is thrown away afterwards. Between tests call
`reset()` (it deletes every action, log line and object; users stay): it takes milliseconds,
where starting a server takes about a second.
"""
import base64
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .model.access import new_key

START_TIMEOUT = 60        # seconds for the server to listen (it takes about one)
STOP_TIMEOUT = 30
HTTP_TIMEOUT = 30


class AuditdServerError(RuntimeError):
    """The server could not be started, or refused an administrative call."""


class AuditdServer:
    """A running `auditd serve` with a throwaway database.

    url, ws_url         http:// and ws:// base addresses (no trailing slash)
    admin_user/_key     the first admin's credentials
    env                 DOCKERCLOUD_REST_HOST/_STREAM_HOST/_USER/_APIKEY for the admin
    db                  the database file (Path)
    """

    admin_user = "admin"

    def __init__(self, directory: Path, extra_args=()):
        self.directory = Path(directory)
        self.db = self.directory / "auditd.db"
        self.log_file = self.directory / "serve.log"
        self.extra_args = list(extra_args)
        self.url = self.ws_url = self.admin_key = None
        self.proc = None
        self._keys: dict[str, tuple[str, str]] = {}
        self._drainer = None

    # ------------------------------------------------------------------------ lifecycle

    def start(self) -> "AuditdServer":
        env = {k: v for k, v in os.environ.items()          # nothing of the caller's auditd
               if not k.startswith(("AUDITD_", "DOCKERCLOUD_"))}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                     "LISTEN_PID", "LISTEN_FDNAMES"):    # not systemd's service, if under one
            env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        # A known key: the server creates 'admin' with it (in the environment, not on the
        # command line where `ps` would show it).
        self.admin_key = env["AUDITD_ADMIN_KEY"] = new_key()
        with open(self.directory / "serve.out", "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditd", "serve", "--host", "127.0.0.1", "--port", "0",
                 "--db", str(self.db), *self.extra_args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, text=True,
                env=env, cwd=self.directory)
        log = open(self.log_file, "w")
        timer = threading.Timer(START_TIMEOUT, self.proc.kill)   # a server that hangs at start
        timer.start()
        try:
            for line in self.proc.stderr:     # until it says it listens: then the port is bound
                log.write(line)
                if "listening on" in line:
                    break
            else:
                log.close()
                self.proc.stderr.close()
                self.proc.wait()
                raise AuditdServerError(f"auditd serve exited (rc={self.proc.returncode}) "
                                        f"instead of listening:\n{self.log_file.read_text()}")
        finally:
            timer.cancel()
        log.flush()
        self._drainer = threading.Thread(target=self._drain, args=(log,), daemon=True)
        self._drainer.start()
        banner = (self.directory / "serve.out").read_text()
        host = re.search(r"DOCKERCLOUD_REST_HOST=(http://\S+)", banner)
        if not host:
            self.stop()
            raise AuditdServerError("auditd serve did not print its address; it printed:\n"
                                    f"{banner}")
        self.url = host.group(1)
        self.ws_url = "ws" + self.url[len("http"):]
        self._keys[self.admin_user] = (self.admin_key, "admin")
        return self

    def _drain(self, log):
        with log, self.proc.stderr:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()

    def stop(self) -> int | None:
        """Stop the server (SIGTERM: it finishes what is in flight) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=STOP_TIMEOUT)
        return self.proc.returncode

    # ------------------------------------------------------------------------ what tests use

    @property
    def env(self) -> dict:
        return self.env_for(self.admin_user)

    def env_for(self, user: str) -> dict:
        """The DOCKERCLOUD_* variables that point docker-cloud, the SDK or auditd.client at this
        server as `user` (added with add_user first)."""
        return {"DOCKERCLOUD_REST_HOST": self.url, "DOCKERCLOUD_STREAM_HOST": self.ws_url,
                "DOCKERCLOUD_USER": user, "DOCKERCLOUD_APIKEY": self.key_of(user)}

    def key_of(self, user: str) -> str:
        if user not in self._keys:
            raise KeyError(f"no user {user!r} was added to this auditd_server (add_user first)")
        return self._keys[user][0]

    def add_user(self, name: str, role: str = "user") -> str:
        """Create a user (`auditd user add` on the server's database) and return its API key.
        Users outlive reset(): adding the same name again with the same role returns the same
        key, so tests sharing the server may each add what they need."""
        if name in self._keys:
            key, had = self._keys[name]
            if had != role:
                raise AuditdServerError(f"user {name!r} exists with role {had}, not {role}")
            return key
        result = subprocess.run(
            [sys.executable, "-m", "auditd", "user", "add", name, "--role", role, "--db",
             str(self.db)], capture_output=True, text=True, timeout=HTTP_TIMEOUT,
            cwd=self.directory, stdin=subprocess.DEVNULL)
        key = result.stdout.strip()
        if result.returncode != 0 or not key:
            raise AuditdServerError(f"auditd user add {name} failed: {result.stderr.strip()}")
        self._keys[name] = (key, role)
        return key

    def reset(self) -> dict:
        """Delete every action, log line and object (users stay); returns how many of each
        were deleted."""
        return self._admin_post("/_auditd/reset", b"")["deleted"]

    def seed(self, actions: list[dict]) -> dict:
        """Load actions in the fixture format (see `auditd serve --fixtures`)."""
        return self._admin_post("/_auditd/seed", json.dumps(actions).encode())

    def client(self, user: str | None = None):
        """An `auditd.client.Client` (blocking) for `user` (default the admin); close it, or use
        it in a `with` block."""
        from .client import Client
        user = user or self.admin_user
        return Client(self.url, user, self.key_of(user))

    def _admin_post(self, path: str, body: bytes) -> dict:
        token = base64.b64encode(f"{self.admin_user}:{self.admin_key}".encode()).decode()
        request = urllib.request.Request(
            self.url + path, data=body, method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                raise AuditdServerError(f"POST {path}: {err.code} {err.read().decode()}") from None

    def __repr__(self):
        return f"<AuditdServer {self.url} db={self.db}>"


def pytest_addoption(parser):
    parser.addini("auditd_server_scope", default="session",
                  help="scope of the auditd_server fixture: session (default), package, module, "
                       "class or function")


def _scope(fixture_name, config) -> str:
    return config.getini("auditd_server_scope")


@pytest.fixture(scope=_scope)
def auditd_server(tmp_path_factory):
    """A running auditd on a free loopback port with a throwaway database (see AuditdServer)."""
    server = AuditdServer(tmp_path_factory.mktemp("auditd")).start()
    yield server
    server.stop()
