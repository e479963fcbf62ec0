"""The stand-in as a CI job starts it (issue 13): a known admin key, a throwaway database, one
fixture format for --fixtures and import, ages in the API's date filters, the plain-HTTP
warning, and the real docker-cloud CLI on PATH next to Python 3."""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from auditd.model import dates
from conftest import ROOT, ServerProcess, basic
from realclients import SCRIPT, real_clients  # noqa: F401 (a fixture)

KEY = "ci-known-admin-key-0123456789"


def status(srv, user, key, path="/api/audit/v1/action/") -> int:
    request = urllib.request.Request(srv.url + path, headers=basic(user, key))
    try:
        with urllib.request.urlopen(request) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def serve_fails(*args) -> str:
    """Run `auditd serve ARGS` expecting it to refuse to start; its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITD_")}
    done = subprocess.run([sys.executable, "-m", "auditd", "serve", "--port", "0", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=dict(env, AUDITD_CONFIG=os.devnull))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


# ---------------------------------------------------------------------------- a known admin key

def test_admin_key_makes_the_first_admin_and_is_checked_on_later_starts(tmp_path):
    db = tmp_path / "ci.db"
    srv = ServerProcess(db, ["--admin-key", KEY]).start()
    try:
        assert status(srv, "admin", KEY) == 200
        # the banner was printed (with the address), but not the key: the CI job has it
        assert srv.admin_key is not None and KEY not in srv.admin_key
    finally:
        srv.stop()
    # the same key again: accepted without a word; from the environment too
    srv = ServerProcess(db, env={"AUDITD_ADMIN_KEY": KEY}).start()
    try:
        assert status(srv, "admin", KEY) == 200
        assert not any("admin" in line and "key" in line for line in srv.stderr_lines
                       if "level=warning" in line or "WARNING" in line)
    finally:
        srv.stop()
    # another key: refused, naming what to do
    err = serve_fails("--db", db, "--admin-key", "another-key-0123456789")
    assert "is not the key of this database's admin (admin)" in err and "rotate-key" in err


def test_admin_key_must_look_like_a_key(tmp_path):
    for bad in ("short", "-starts-with-a-dash-123", "has spaces in it 1234567"):
        err = serve_fails("--db", tmp_path / "k.db", f"--admin-key={bad}")
        assert "admin_key must be 16 to 256 characters" in err and bad not in err
    assert not (tmp_path / "k.db").exists()


def test_admin_key_gives_an_admin_to_a_database_with_only_users(tmp_path):
    db = tmp_path / "users.db"
    subprocess.run([sys.executable, "-m", "auditd", "user", "add", "ci", "--create", "--db",
                    str(db)], capture_output=True, check=True, cwd=ROOT)
    srv = ServerProcess(db, ["--admin-key", KEY]).start()
    try:
        assert status(srv, "admin", KEY) == 200
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- a throwaway database

async def test_memory_database_is_a_whole_database_gone_at_exit(tmp_path):
    srv = ServerProcess(Path(":memory:"), ["--admin-key", KEY]).start()
    srv.admin_key = KEY
    try:
        said = "".join(srv.stderr_lines)
        path = Path(re.search(r"a throwaway database (\S+),", said).group(1))
        assert path.is_file() and (path.parent.stat().st_mode & 0o077) == 0   # private
        async with aiohttp.ClientSession(srv.url, headers=basic("admin", KEY)) as http:
            async with http.post("/api/audit/v1/action/", json={"action": "Node Deploy"}) as r:
                uuid = (await r.json())["uuid"]
            async with http.ws_connect(f"/api/audit/v1/action/{uuid}/logs/") as ws:
                async with http.post(f"/api/audit/v1/action/{uuid}/logs/", data="one\ntwo",
                                     headers={"Content-Type": "text/plain"}) as r:
                    assert r.status in (200, 201, 204), await r.text()
                async with http.patch(f"/api/audit/v1/action/{uuid}/",
                                      json={"state": "Success"}) as r:
                    assert r.status == 200
                lines = [json.loads(m.data)["log"] async for m in ws]
        assert lines == ["one", "two"]
    finally:
        assert srv.stop() == 0
    assert not path.parent.exists()
    assert not (ROOT / ":memory:").exists() and not (ROOT / ":memory:.lock").exists()


# ---------------------------------------------------------------------------- one fixture format

def test_an_export_is_a_fixture_file_and_a_fixture_file_imports(tmp_path):
    items = [{"uuid": "0d8a2f0e-1a11-4b8a-9c55-6f0f7c8e0d3c", "action": "Stack Create",
              "user": "alice", "state": "Success", "start_date": "2024-05-01T10:00:00Z",
              "end_date": "2024-05-01T10:01:00Z", "object": "/api/app/v1/stack/s1/",
              "logs": [f"line {i}" for i in range(2500)]},
             {"action": "Service Start", "state": "Pending"}]
    fixture = tmp_path / "fixtures.json"
    fixture.write_text(json.dumps(items))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITD_")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "auditd", *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    done = cli("import", fixture, "--create", "--db", tmp_path / "a.db")
    assert done.returncode == 0, done.stderr
    assert "imported 2 actions and 2,500 log lines" in done.stderr
    assert "1 actions had no uuid" in done.stderr and "adds them again" in done.stderr
    export = tmp_path / "a.ndjson"
    assert cli("export", "--db", tmp_path / "a.db", "-o", export).returncode == 0
    assert any('"logs_of"' in line for line in export.read_text().splitlines())  # continued
    srv = ServerProcess(tmp_path / "b.db", ["--fixtures", export]).start()
    try:
        request = urllib.request.Request(
            srv.url + f"/api/audit/v1/action/{items[0]['uuid']}/",
            headers=basic("admin", srv.admin_key))
        with urllib.request.urlopen(request) as resp:
            assert json.load(resp)["state"] == "Success"
        got = srv.cli("export", "-o", tmp_path / "b.ndjson")
        assert got.returncode == 0
        assert "exported 2 actions" in got.stderr
        exported = [json.loads(line) for line in (tmp_path / "b.ndjson").read_text().splitlines()]
        assert sum(len(r["logs"]) for r in exported) == 2500
    finally:
        srv.stop()
    # a second start on a database with actions: not loaded, and said so
    srv = ServerProcess(tmp_path / "b.db", ["--fixtures", export]).start()
    try:
        said = "".join(srv.stderr_lines)
        assert "not loaded, the database already has actions" in said
        assert f"auditd import {export}" in said
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- ages in the API

async def test_the_api_takes_ages_and_does_not_remember_what_they_meant(api, monkeypatch):
    now = dates.now()
    await api.record(start_date=now - 7200, action="Old")
    await api.record(start_date=now - 1800, action="Recent")
    query = "/api/audit/v1/action/?start_date__gte=1h"
    resp = await api.get(query)
    assert [a["action"] for a in (await resp.json())["objects"]] == ["Recent"]
    monkeypatch.setattr(dates, "now", lambda: now + 3600)   # an hour later, the same query
    resp = await api.get(query)
    assert (await resp.json())["objects"] == []


# ---------------------------------------------------------------------------- plain HTTP

def test_listening_beyond_loopback_warns_about_plain_http(tmp_path):
    srv = ServerProcess(tmp_path / "h.db", ["--host", "0.0.0.0"]).start()
    srv.stop()
    said = "".join(srv.stderr_lines)
    assert "over plain HTTP" in said and "TLS-terminating proxy" in said and "0.0.0.0" in said
    srv = ServerProcess(tmp_path / "h.db", ["--host", "127.0.0.1"]).start()
    srv.stop()
    assert "plain HTTP" not in "".join(srv.stderr_lines)


# ---------------------------------------------------------------------------- docker-cloud on PATH

def test_the_installed_docker_cloud_runs_from_path_beside_python3(real_clients, tmp_path):  # noqa: F811
    done = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, RC_DIR=str(real_clients.rc_dir),
                                                PY2=real_clients.py2))
    assert done.returncode == 0, done.stderr
    folder = re.search(r"docker-cloud is in (\S+);", done.stdout).group(1)
    srv = ServerProcess(tmp_path / "p.db").start()
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "DOCKERCLOUD_", "AUDITD_"))}
        env.update(PATH=f"{folder}:{env['PATH']}", HOME=str(real_clients.home),
                   DOCKERCLOUD_REST_HOST=srv.url, DOCKERCLOUD_USER="admin",
                   DOCKERCLOUD_APIKEY=srv.admin_key, PY3=sys.executable)
        shell = subprocess.run(["sh", "-c", 'docker-cloud action ls && "$PY3" -m auditd action ls'],
                               capture_output=True, text=True, env=env, timeout=120,
                               cwd=tempfile.gettempdir())
    finally:
        srv.stop()
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.count("UUID") == 2 and "Traceback" not in shell.stderr
