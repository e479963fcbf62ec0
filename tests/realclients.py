"""The real, public Docker Cloud clients (docker-cloud CLI 1.0.9, python-dockercloud SDK 1.0.12)
driven against a real `auditd serve` process.

They are Python 2.7 programs. `find_python27()` looks for an interpreter; `install()` runs
tests/tools/real-clients.sh once per session into ~/.cache/auditd-real-clients (or
$AUDITD_REAL_CLIENTS_DIR), which pip-installs pinned versions from PyPI and is a no-op when the
cache already holds them. `Rig` ties one server to the clients: it creates users, records actions
over HTTP as the admin, and runs `docker-cloud ...` or SDK code as a given user.
"""
import base64
import fcntl
import glob
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "tools" / "real-clients.sh"
INSTALL_TIMEOUT = 900     # a fresh pip install from PyPI takes ~20 s here; allow a slow network
RUN_TIMEOUT = 60          # one CLI or SDK run; they take well under a second against loopback
HTTP_TIMEOUT = 30


def find_python27() -> str | None:
    """$PY2 if set, else the newest pyenv 2.7, else python2.7 on PATH; None when there is none."""
    candidates = [os.environ.get("PY2")] if os.environ.get("PY2") else []
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python")),
                         reverse=True)
    candidates.append(shutil.which("python2.7"))
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2] == (2, 7))"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return path
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("AUDITD_REAL_CLIENTS_DIR")
                or os.path.expanduser("~/.cache/auditd-real-clients"))


class Clients:
    """An installed copy of the clients: runs them with a clean environment aimed at a server."""

    def __init__(self, py2: str, rc_dir: Path):
        self.py2, self.rc_dir = py2, rc_dir
        self.site = rc_dir / "lib" / "python2.7" / "site-packages"
        self.home = rc_dir / "home"     # so no ~/.docker/config.json of the machine interferes

    def env(self, url: str, user: str | None, key: str | None, extra=None) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "DOCKERCLOUD_", "VIRTUAL_ENV"))
               and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.update(PYTHONPATH=str(self.site), HOME=str(self.home), PYTHONUNBUFFERED="1",
                   PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1",
                   DOCKERCLOUD_REST_HOST=url,
                   DOCKERCLOUD_STREAM_HOST=url.replace("http", "ws", 1))
        if user is not None:
            env["DOCKERCLOUD_USER"] = user
        if key is not None:
            env["DOCKERCLOUD_APIKEY"] = key
        env.update(extra or {})
        return env

    def cli_argv(self, *args) -> list[str]:
        return [self.py2, str(self.rc_dir / "bin" / "docker-cloud"), *args]

    def sdk_argv(self, code: str, *args) -> list[str]:
        return [self.py2, "-c", "import dockercloud\n" + code, *args]


_installed: dict[Path, Clients] = {}
_install_lock = threading.Lock()


def install() -> Clients:
    """Find Python 2.7 (skip when there is none) and install the clients once per session."""
    py2 = find_python27()
    if py2 is None:
        pytest.skip("no Python 2.7 interpreter (looked at $PY2, ~/.pyenv/versions/2.7*, "
                    "python2.7 on PATH): the real docker-cloud CLI and SDK need one")
    rc_dir = cache_dir()
    with _install_lock:
        if rc_dir in _installed:
            return _installed[rc_dir]
        rc_dir.mkdir(parents=True, exist_ok=True)
        # Other test sessions on this machine may install into the same directory at once.
        with open(rc_dir / ".install.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            result = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True,
                                    text=True, timeout=INSTALL_TIMEOUT,
                                    env=dict(os.environ, RC_DIR=str(rc_dir), PY2=py2))
        if result.returncode != 0:
            pytest.fail(f"installing the real clients into {rc_dir} failed "
                        f"(rc={result.returncode}):\n{result.stderr}", pytrace=False)
        _installed[rc_dir] = Clients(py2, rc_dir)
        return _installed[rc_dir]


@pytest.fixture(scope="session")
def real_clients() -> Clients:
    return install()


# ---------------------------------------------------------------------------- a long-running client

_DEFAULT_SIGINT_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.argv[1], sys.argv[1:])")


class Running:
    """A client process whose stdout is read line by line as it arrives (for `logs -f`)."""

    def __init__(self, argv, env, interactive: bool = False):
        """`interactive`: start it with SIGINT at its default action, as a terminal's shell
        does, whatever this process inherited: a job started in the background (`cmd &` in a
        script, nohup) ignores SIGINT, an ignored signal stays ignored across exec, and a test
        that interrupts the client would then wait for an exit that never comes."""
        if interactive:
            argv = [sys.executable, "-c", _DEFAULT_SIGINT_EXEC, *argv]
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put, None),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr.append, ""),
                             daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, put, end_marker):
        with stream:
            for line in stream:
                put(line)
        put(end_marker)         # None on stdout tells next_line() that nothing more will come

    def next_line(self, timeout=RUN_TIMEOUT) -> str:
        """The next line printed (without its newline); fails if none comes or the process ends."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line printed within {timeout} s; stderr: "
                                 + "".join(self.stderr)) from None
        if line is None:
            self.proc.wait(timeout=RUN_TIMEOUT)
            raise AssertionError(f"the client exited (rc={self.proc.returncode}) instead of "
                                 "printing a line; stderr: " + "".join(self.stderr))
        return line.rstrip("\n")

    def take(self, count: int) -> list[str]:
        return [self.next_line() for _ in range(count)]

    def finish(self, timeout=RUN_TIMEOUT) -> tuple[int, list[str]]:
        """Wait for the exit; return the exit code and every line printed since the last read."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the client did not exit within {timeout} s") from None
        for reader in self._readers:
            reader.join(timeout=RUN_TIMEOUT)
        rest = []
        while True:
            line = self.lines.get_nowait()
            if line is None:
                break
            rest.append(line.rstrip("\n"))
        return rc, rest

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=RUN_TIMEOUT)


# ---------------------------------------------------------------------------- one server + clients

class HttpError(AssertionError):
    pass


class Rig:
    """A real `auditd serve` (the conftest `server` fixture) with users and the real clients."""

    def __init__(self, server, clients: Clients):
        self.server, self.clients = server, clients
        self.keys = {"admin": server.admin_key}
        self.running: list[Running] = []

    # users -----------------------------------------------------------------------------------
    def user(self, name: str, role: str = "user") -> str:
        """Create a user with `auditd user add` and return the key it printed."""
        result = self.server.cli("user", "add", name, "--role", role)
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert key and "\n" not in key, result.stdout
        self.keys[name] = key
        return key

    def org(self, org: str, *members: str):
        for args in [("org", "add", org)] + [("org", "add-member", org, m) for m in members]:
            result = self.server.cli(*args)
            assert result.returncode == 0, result.stderr

    # HTTP as a given user (admin by default: it may record, move and append) ----------------
    def http(self, method: str, path: str, body=None, as_: str = "admin"):
        auth = base64.b64encode(f"{as_}:{self.keys[as_]}".encode()).decode()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server.url + path, data=data, method=method,
                                         headers={"Authorization": f"Basic {auth}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def ok(self, method, path, body=None, as_="admin", status=200):
        got, payload = self.http(method, path, body, as_)
        if got != status:
            raise HttpError(f"{method} {path}: expected {status}, got {got}: {payload}")
        return payload

    def record(self, **fields) -> dict:
        fields.setdefault("action", "Service Create")
        return self.ok("POST", "/api/audit/v1/action/", fields, status=201)

    def get(self, uuid: str, as_="admin") -> dict:
        return self.ok("GET", f"/api/audit/v1/action/{uuid}/", as_=as_)

    def list_actions(self, query: str = "", as_="admin") -> dict:
        return self.ok("GET", "/api/audit/v1/action/" + ("?" + query if query else ""), as_=as_)

    def set_state(self, uuid: str, state: str) -> dict:
        return self.ok("PATCH", f"/api/audit/v1/action/{uuid}/", {"state": state})

    def append(self, uuid: str, lines: list[str]) -> dict:
        return self.ok("POST", f"/api/audit/v1/action/{uuid}/logs/", lines, status=201)

    # the real clients ------------------------------------------------------------------------
    def _env(self, as_, key=None, env=None):
        return self.clients.env(self.server.url, as_, key if key is not None else self.keys[as_],
                                env)

    def cli(self, as_: str, *args, key=None, env=None) -> subprocess.CompletedProcess:
        """`docker-cloud ARGS...` as user `as_` (with `key` instead of theirs if given)."""
        return subprocess.run(self.clients.cli_argv(*args), env=self._env(as_, key, env),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              stdin=subprocess.DEVNULL)

    def cli_ok(self, as_: str, *args, **kw) -> str:
        result = self.cli(as_, *args, **kw)
        assert (result.returncode, result.stderr) == (0, ""), \
            f"docker-cloud {' '.join(args)}: rc={result.returncode}\n{result.stderr}"
        return result.stdout

    def sdk(self, as_: str, code: str, *args, env=None) -> subprocess.CompletedProcess:
        """Python 2 `code` after `import dockercloud`; `args` arrive as sys.argv[1:]."""
        return subprocess.run(self.clients.sdk_argv(code, *args), env=self._env(as_, None, env),
                              capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              stdin=subprocess.DEVNULL)

    def sdk_json(self, as_: str, code: str, *args, env=None):
        """Run SDK code that prints one JSON document as its last line; return it decoded."""
        result = self.sdk(as_, code, *args, env=env)
        assert result.returncode == 0, f"SDK code failed (rc={result.returncode}):\n{result.stderr}"
        return json.loads(result.stdout.splitlines()[-1])

    def start_cli(self, as_: str, *args, env=None) -> Running:
        running = Running(self.clients.cli_argv(*args), self._env(as_, None, env))
        self.running.append(running)
        return running

    def start_sdk(self, as_: str, code: str, *args, env=None) -> Running:
        running = Running(self.clients.sdk_argv(code, *args), self._env(as_, None, env))
        self.running.append(running)
        return running

    def close(self):
        for running in self.running:
            running.kill()


@pytest.fixture
def rig(real_clients, server):     # clients first: no server is started just to skip
    rig = Rig(server, real_clients)
    yield rig
    rig.close()


# ---------------------------------------------------------------------------- reading CLI output

def parse_table(text: str) -> tuple[list[str], list[dict]]:
    """`docker-cloud action ls` output (tabulate "plain", left-aligned) as header names and rows.

    Cells may hold single spaces ("Service Create", "3 hours ago") and may be empty, so columns
    are cut at the offsets where the header names start rather than split on whitespace.
    """
    lines = text.rstrip("\n").split("\n")
    header = lines[0]
    names = header.split()
    starts = []
    at = 0
    for name in names:
        at = header.index(name, at)
        starts.append(at)
        at += len(name)
    bounds = list(zip(starts, starts[1:] + [None]))
    rows = [{name: line[a:b].strip() for name, (a, b) in zip(names, bounds)} for line in lines[1:]]
    return names, rows
