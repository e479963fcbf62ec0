"""The command line as people use it (issue 13): every trap a new user fell into, each one
now an error that says what is wrong and what to do, with nothing created by a typo and no
traceback."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, ServerProcess, basic

NAMES_REFUSED = ["", "a:b", "x/y", "_x", ".hidden", "with space", "action", "é", "a" * 65]


def auditd(*args, env=None, stdout=subprocess.PIPE, cwd=ROOT, user=None):
    """`python -m auditd ARGS` with no AUDITD_* of the caller's; (rc, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUDITD_")}
    clean["AUDITD_CONFIG"] = os.devnull
    command = [sys.executable, "-m", "auditd", *map(str, args)]
    if user is not None:   # as another user (root ignores file permissions)
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    done = subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          env=dict(clean, **(env or {})), timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def db(tmp_path):
    """A database with an admin and a user."""
    path = tmp_path / "auditd.db"
    assert auditd("user", "add", "admin", "--role", "admin", "--create", "--db", path)[0] == 0
    assert auditd("user", "add", "alice", "--db", path)[0] == 0
    return path


# ---------------------------------------------------------------------------- names

@pytest.mark.parametrize("name", NAMES_REFUSED)
def test_names_that_cannot_log_in_or_be_a_namespace_are_refused(db, name):
    for command in (("user", "add", name), ("org", "add", name)):
        rc, out, err = auditd(*command, "--db", db)
        assert rc == 1 and out == ""
        assert "not a valid name" in err or "reserved" in err, err
        assert "A-Z a-z 0-9" in err or "choose another name" in err
    listed = auditd("user", "list", "--db", db)[1] + auditd("org", "list", "--db", db)[1]
    assert listed.count("\n") == 4   # two headers, admin, alice: nothing was added


def test_a_refused_name_creates_no_database(tmp_path):
    rc, _, err = auditd("user", "add", "a:b", "--create", "--db", tmp_path / "new.db")
    assert rc == 1 and "not a valid name" in err
    assert not (tmp_path / "new.db").exists()


def test_every_allowed_character_works_as_a_login_and_a_namespace(tmp_path):
    name = "J.doe@ex-ample_9"
    srv = ServerProcess(tmp_path / "s.db").start()
    try:
        key = srv.cli("user", "add", name).stdout.strip()
        request = urllib.request.Request(
            srv.url + "/api/audit/v1/action/", method="POST",
            data=f'{{"action": "Service Create", "namespace": "{name}"}}'.encode(),
            headers={**basic("admin", srv.admin_key), "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as resp:
            uuid = json.load(resp)["uuid"]
        mine = urllib.request.Request(f"{srv.url}/api/audit/v1/{name}/action/",
                                      headers=basic(name, key))
        with urllib.request.urlopen(mine) as resp:
            objects = json.load(resp)["objects"]
        assert [a["uuid"] for a in objects] == [uuid]
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- a mistyped --db

@pytest.mark.parametrize("command", [
    ("user", "list"), ("user", "add", "bob"), ("user", "remove", "bob"), ("org", "add", "acme"),
    ("org", "list"), ("import", "IMPORT"), ("export",), ("purge", "--before", "30d"),
    ("backup", "BACKUP"), ("check",)])
def test_a_mistyped_database_path_creates_nothing(tmp_path, db, command):
    (tmp_path / "IMPORT").write_text("[]")
    args = [str(tmp_path / a) if a in ("IMPORT", "BACKUP") else a for a in command]
    typo = tmp_path / "audit.db"
    before = sorted(tmp_path.iterdir())
    rc, _, err = auditd(*args, "--db", typo)
    assert rc == 1 and f"no database at {typo}" in err
    if command[-2:] in (("add", "bob"), ("add", "acme")) or command[0] == "import":
        assert "add --create" in err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", [("user", "add", "bob", "--create"),
                                     ("import", "IMPORT", "--create"), ("serve", "--port", "0")])
def test_no_command_creates_a_missing_folder(tmp_path, command):
    (tmp_path / "IMPORT").write_text("[]")
    args = [str(tmp_path / a) if a == "IMPORT" else a for a in command]
    rc, _, err = auditd(*args, "--db", tmp_path / "missing" / "auditd.db")
    assert rc == 1 and f"the folder {tmp_path / 'missing'} does not exist" in err
    assert "mkdir -p" in err
    assert not (tmp_path / "missing").exists()


def test_create_makes_a_new_database_and_says_serve_will_not_add_an_admin(tmp_path):
    rc, out, err = auditd("user", "add", "ci", "--role", "producer", "--create",
                          "--db", tmp_path / "new.db")
    assert rc == 0 and len(out.split()) == 1
    assert "will not now" in err and "--role admin" in err and "--admin-key" in err
    # with a user already there, no such note
    assert "will not" not in auditd("user", "add", "dan", "--db", tmp_path / "new.db")[2]


def test_serve_says_loudly_when_a_database_has_users_but_no_admin(tmp_path):
    auditd("user", "add", "ci", "--create", "--db", tmp_path / "u.db")
    srv = ServerProcess(tmp_path / "u.db").start()
    try:
        assert srv.admin_key is None   # no admin was created
        said = "".join(srv.stderr_lines)
        assert "level=warning" in said or "WARNING" in said.upper()
        assert "no admin" in said and "--role admin" in said and "--admin-key" in said
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- output

def test_lists_have_headers_and_a_closed_pipe_is_no_traceback(db):
    rc, out, _ = auditd("user", "list", "--db", db)
    assert out.splitlines()[0].split("\t") == ["NAME", "ROLE", "ORGANIZATIONS"]
    assert out.splitlines()[1:] == ["admin\tadmin\t-", "alice\tuser\t-"]
    assert auditd("org", "list", "--db", db)[1] == "ORGANIZATION\tMEMBERS\n"
    for command in (("user", "list"), ("org", "list"), ("export",)):
        reader, writer = os.pipe()
        os.close(reader)          # `| head -1` that has already gone: every write fails
        try:
            rc, _, err = auditd(*command, "--db", db, stdout=writer)
        finally:
            os.close(writer)
        assert rc == 0 and "BrokenPipe" not in err, err


def test_the_readme_user_commands_are_not_a_pipe():
    readme = (ROOT / "README.md").read_text()
    assert "auditd user list | remove" not in readme
    assert "auditd user list\n" in readme or "auditd user list  " in readme


# ---------------------------------------------------------------------------- the environment

def test_unknown_auditd_variables_are_a_warning_and_near_misses_an_error(db):
    own = {"AUDITD_REAL_CLIENTS_DIR": "/tmp/x", "AUDITD_BENCH_DATA": "/tmp/y",
           "AUDITD_TEST_BACKEND": "sqlite"}
    env = {**own, "AUDITD_FAVOURITE_COLOUR": "green"}
    rc, out, err = auditd("user", "list", "--db", db, env=env)
    assert rc == 0 and "alice" in out
    assert "AUDITD_FAVOURITE_COLOUR" in err and "AUDITD_PORT" in err   # named, with the settings
    assert not any(name in err for name in own)                        # the project's own
    rc, _, err = auditd("user", "list", "--db", db, env={"AUDITD_PROT": "9000"})
    assert rc == 1 and "AUDITD_PROT (did you mean AUDITD_PORT?)" in err


# ---------------------------------------------------------------------------- messages

def _nobody_cannot_run_auditd():
    """Why `nobody` cannot start auditd from this checkout (a 0700 folder above it), or ''."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return ""
    done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", "import auditd.cli"], cwd="/",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    if done.returncode == 0:
        return ""
    last = (done.stdout.strip().splitlines() or ["?"])[-1]
    return f"the user nobody cannot run auditd from {ROOT} ({last}): clone into a folder others may enter"


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"),
                    reason="root ignores file modes, and setpriv is not here to drop root")
@pytest.mark.parametrize("command", [("user", "list"), ("export",)])
def test_a_read_only_database_is_a_message(db, command):
    user = None
    if os.geteuid() == 0:
        if why := _nobody_cannot_run_auditd():
            pytest.skip(why)
        user = 65534          # nobody: may read the file, may not write it or its folder
        rc, _, err = auditd(*command, "--db", db, user=user)   # pytest's folders are 0700
        assert rc == 1 and f"cannot look at {db}: permission denied" in err
        shared = Path(tempfile.mkdtemp(prefix="auditd-ro-"))   # in /tmp, which nobody can enter
        os.chmod(shared, 0o755)
        for path in db.parent.iterdir():
            if path.name.startswith("auditd.db"):
                shutil.copy(path, shared / path.name)
                os.chmod(shared / path.name, 0o644)
        db = shared / "auditd.db"
    else:
        os.chmod(db, 0o444)
    try:
        rc, out, err = auditd(*command, "--db", db, user=user)
    finally:
        if user is not None:
            shutil.rmtree(db.parent)
    assert rc == 1 and out == ""
    assert f"{db} is read-only" in err and "run the command as the user that owns" in err


def test_a_file_that_is_not_a_database_is_a_message(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database, just notes\n" * 100)
    rc, _, err = auditd("user", "list", "--db", tmp_path / "notes.txt")
    assert rc == 1 and "is not an auditd database" in err and "auditd check" in err


def test_export_to_a_missing_folder_names_the_path_given(db):
    rc, _, err = auditd("export", "--db", db, "-o", "/nonexistent/x.ndjson")
    assert rc == 1 and "/nonexistent/x.ndjson" in err and ".partial" not in err
    assert "does not exist" in err


def test_backup_into_a_missing_folder_does_not_blame_the_source(db, tmp_path):
    rc, _, err = auditd("backup", tmp_path / "nope" / "b.db", "--db", db)
    assert rc == 1 and f"{tmp_path / 'nope'} does not exist" in err
    assert "auditd check" not in err and not (tmp_path / "nope").exists()


def test_a_bad_geoip_file_is_a_message(db, tmp_path):
    (tmp_path / "city.mmdb").write_bytes(b"\0" * 1000)
    rc, _, err = auditd("serve", "--port", "0", "--db", db, "--geoip-db", tmp_path / "city.mmdb")
    assert rc == 1 and "is not a MaxMind database" in err and "GeoLite2-City" in err


def test_a_database_from_a_newer_auditd_is_not_called_damaged(db):
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    rc, out, _ = auditd("check", "--db", db)
    assert rc == 1 and "newer auditd" in out and "damaged" not in out.replace("not damaged", "")
    rc, _, err = auditd("user", "list", "--db", db)
    assert rc == 1 and "schema version 99" in err and "newer auditd" in err


# ---------------------------------------------------------------------------- relative dates

def test_purge_and_export_take_ages(db, tmp_path):
    rc, _, err = auditd("purge", "--before", "30d", "--dry-run", "--db", db)
    assert rc == 0 and "would remove 0" in err
    rc, _, err = auditd("export", "--since", "2h", "--db", db, "-o", tmp_path / "x.ndjson")
    assert rc == 0 and "exported 0 actions" in err
    rc, _, err = auditd("export", "--since", "2 fortnights", "--db", db)
    assert rc == 2 and "'30s', '10m', '2h', '7d', '1w'" in err
