"""Data lifecycle: export, import, purge, retention, backup and check, run as an operator would."""
import csv
import io
import json
import os
import pty
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

from conftest import ROOT, basic

from auditd.config import Config
from auditd.formats import ndjson
from auditd.http.app import create_app
from auditd.http.appkeys import RETENTION, STORE
from auditd.model.actions import new_action
from auditd.model.query import ListQuery
from auditd.store.sqlite import SCHEMA_VERSION, SQLiteStore

DAY = 86400
NOW = int(time.time())
BODY = 'name: "web, front"\nreplicas: 3 — ünïcode'


def cli(*args, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITD_")}
    return subprocess.run([sys.executable, "-m", "auditd", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=stderr, text=True, cwd=ROOT, timeout=120, env=env)


def snapshot(db) -> dict:
    """Everything export promises to carry, read straight from the database file."""
    conn = sqlite3.connect(db)
    try:
        return {
            "actions": {r[0]: r[1:] for r in conn.execute(
                "SELECT uuid, doc, namespace, cancelable, retriable, log_count FROM actions")},
            "logs": sorted(conn.execute(
                "SELECT a.uuid, l.seq, l.ts, l.stream_type, l.line FROM action_logs l "
                "JOIN actions a ON a.id = l.action_id")),
            "edges": set(conn.execute(
                "SELECT c.uri, p.uri FROM object_parents e JOIN objects c ON c.id = e.child_id "
                "JOIN objects p ON p.id = e.parent_id")),
        }
    finally:
        conn.close()


async def populate(api) -> dict:
    """Actions in every state, two namespaces, an object with two parent chains, and logs: one
    action with more lines than an NDJSON record carries."""
    made = {}
    made["stack"] = await api.record(
        action="Stack Create", object="/api/app/v1/acme/stack/s1/", namespace="acme",
        user="alice", state="Success", start_date=NOW - 10 * DAY, end_date=NOW - 9 * DAY,
        body=BODY, method="POST", path="/api/app/v1/acme/stack/", ip="10.0.0.1",
        user_agent="docker-cloud-cli/1.0")
    made["pending"] = await api.record(
        action="Container Start", object="/api/app/v1/container/c1/",
        parents=["/api/app/v1/service/sv1/", "/api/app/v1/stack/s1/"], user="bob",
        state="Pending", can_be_canceled=False, start_date=NOW - 8 * DAY)
    made["canceling"] = await api.record(
        action="Container Stop", object="/api/app/v1/container/c1/",
        parents=["/api/infra/v1/node/n1/", "/api/infra/v1/nodecluster/nc1/"], user="carol",
        namespace="acme", is_user_action=False, can_be_retried=False, start_date=NOW - 7 * DAY)
    resp = await api.post(f"/api/audit/v1/action/{made['canceling']['uuid']}/cancel/")
    assert resp.status in (200, 202), await resp.text()
    made["failed"] = await api.record(action="Service Scale", user="bob",
                                      start_date=NOW - 6 * DAY)
    await api.set_state(made["failed"]["uuid"], "Failed")
    made["canceled"] = await api.record(action="Node Deploy", user="alice", state="Pending")
    resp = await api.post(f"/api/audit/v1/action/{made['canceled']['uuid']}/cancel/")
    assert resp.status in (200, 202), await resp.text()
    made["running"] = await api.record(action="Stack Redeploy", user="alice", namespace="acme",
                                       object="/api/app/v1/stack/s1/")
    await api.append(made["stack"]["uuid"], [
        {"log": "pulling image", "timestamp": NOW - 10 * DAY, "streamType": "stdout"},
        {"log": "warning: \"latest\" tag", "timestamp": NOW - 10 * DAY + 1,
         "streamType": "stderr"}, "plain line"])
    await api.append(made["running"]["uuid"],
                     [{"log": f"step {i}", "timestamp": NOW - i} for i in range(2500)])
    await api.append(made["failed"]["uuid"], ["exit status 1"])
    return made


# ---------------------------------------------------------------------------- export and import

async def test_export_import_round_trip_is_exact_and_idempotent(api, tmp_path):
    await populate(api)
    export_file, target = tmp_path / "export.ndjson", tmp_path / "restored.db"

    done = cli("export", "--db", api.store.path, "-o", export_file)
    assert done.returncode == 0, done.stderr
    assert "exported 6 actions" in done.stderr
    records = [json.loads(line) for line in export_file.read_text().splitlines()]
    # 2500 lines travel as one action record and continuation records of at most 1000 lines.
    assert [len(r["logs"]) for r in records if "logs_of" in r] == [1000, 500]

    first = cli("import", export_file, "--create", "--db", target)
    assert first.returncode == 0, first.stderr
    assert "imported 6 actions and 2,504 log lines; skipped 0" in first.stderr
    source, restored = snapshot(api.store.path), snapshot(target)
    assert restored["actions"] == source["actions"]     # same uuid, same 17 wire fields, flags
    assert restored["logs"] == source["logs"]
    assert restored["edges"] == source["edges"] and len(source["edges"]) == 4

    again = cli("import", export_file, "--db", target)
    assert again.returncode == 0, again.stderr
    assert "imported 0 actions and 0 log lines; skipped 6 actions already present" in again.stderr
    assert snapshot(target) == restored

    # The object graph works as before: the stack's related actions are the same in both.
    related = ListQuery(None, 100, filters={"object": "/api/app/v1/stack/s1/",
                                            "include_related": True})
    async with SQLiteStore(target) as store:
        restored_page = await store.list_actions(related)
    source_page = await api.store.list_actions(related)
    assert sorted(restored_page.docs) == sorted(source_page.docs)
    assert len(source_page.docs) == 4


async def test_csv_export_with_filters_reads_back_with_the_csv_module(api, tmp_path):
    made = await populate(api)
    out = tmp_path / "acme.csv"
    done = cli("export", "--db", api.store.path, "--format", "csv", "-o", out,
               "--namespace", "acme", "--state", "Success", "--state", "Canceling",
               "--since", NOW - 11 * DAY, "--until", dates_iso(NOW - 7 * DAY + 1))
    assert done.returncode == 0, done.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["uuid"] for r in rows] == [made["stack"]["uuid"], made["canceling"]["uuid"]]
    stack = rows[0]
    assert stack["body"] == BODY
    assert stack["namespace"] == "acme" and stack["log_count"] == "3"
    assert stack["start_date"] == made["stack"]["start_date"]
    assert stack["can_be_retried"] == "true" and rows[1]["end_date"] == ""


def dates_iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_export_refuses_a_missing_database_and_a_bad_date(tmp_path):
    missing = cli("export", "--db", tmp_path / "nope.db")
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
    bad = cli("export", "--db", tmp_path / "nope.db", "--since", "yesterday")
    assert bad.returncode == 2 and "is not a date; accepted" in bad.stderr


def test_import_reports_bad_lines_by_number_and_keeps_the_good_ones(tmp_path):
    good = {"uuid": "7a7d7e0e-3b7a-4f4e-9a57-1f6a2c0b9f01", "action": "Service Create",
            "user": "alice", "state": "Success", "start_date": "2024-05-01T10:00:00Z",
            "end_date": "Wed, 01 May 2024 10:05:00 +0000", "object": "/api/app/v1/service/x/",
            "parents": ["/api/app/v1/stack/y/"], "logs": [{"log": "ok", "timestamp": 1714557600}]}
    lines = [json.dumps(good), "{not json", json.dumps(dict(good, state="Done")),
             json.dumps({"logs_of": "1b9e3c9a-0000-4000-8000-000000000000", "logs": []}),
             json.dumps(dict(good, uuid="b" * 8)), ""]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines))
    done = cli("import", source, "--create", "--db", tmp_path / "new.db")
    assert done.returncode == 1
    assert "imported 1 actions and 1 log lines" in done.stderr
    assert "line 2: not JSON" in done.stderr
    assert "line 3: " in done.stderr and "state: must be one of" in done.stderr
    assert "line 5: uuid: 'bbbbbbbb' is not a uuid" in done.stderr
    assert "line 4: log lines for action 1b9e3c9a" in done.stderr
    assert "run the same import again" in done.stderr
    restored = snapshot(tmp_path / "new.db")
    doc = json.loads(restored["actions"][good["uuid"]][0])
    assert doc["end_date"] == "Wed, 01 May 2024 10:05:00 +0000" and doc["user"] == "alice"
    assert restored["edges"] == {("/api/app/v1/service/x/", "/api/app/v1/stack/y/")}


async def test_import_commits_in_batches(tmp_path):
    lines = "".join(json.dumps({
        "uuid": f"00000000-0000-4000-8000-{i:012d}", "action": "Ping", "user": "u",
        "state": "In progress", "start_date": 1_700_000_000 + i,
        "logs": [{"log": "x", "timestamp": 1}] * (i == 3)}) + "\n" for i in range(7))
    async with SQLiteStore(tmp_path / "b.db") as store:
        before = store.commits
        summary = await ndjson.import_file(store, io.BytesIO(lines.encode()), batch_actions=3)
        assert (summary.imported, summary.lines, summary.errors) == (7, 1, [])
        assert store.commits - before == 3        # 3 + 3 + 1, not 7 and not 1


def test_import_draws_a_progress_bar_on_a_terminal(tmp_path):
    source = tmp_path / "one.ndjson"
    source.write_text(json.dumps({"uuid": "6f1c6a4e-6a55-4a3b-8c39-5b6c1f6c0e11",
                                  "action": "A", "user": "u", "state": "Pending",
                                  "start_date": 1}) + "\n")
    controller, terminal = pty.openpty()
    try:
        done = cli("import", source, "--create", "--db", tmp_path / "t.db", stderr=terminal)
        os.close(terminal)
        terminal = None
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:   # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    assert done.returncode == 0
    text = output.decode()
    assert "\rimporting [" in text.replace("\x1b[K", "") and "100%" in text
    assert "imported 1 actions" in text


# ---------------------------------------------------------------------------- purge and retention

async def test_purge_removes_old_final_actions_with_their_logs_and_nothing_else(api):
    made = await populate(api)
    future = await api.record(action="Later", user="alice", state="Success",
                              start_date=NOW + 10 * DAY, end_date=NOW + 10 * DAY)
    before = snapshot(api.store.path)

    dry = cli("purge", "--before", NOW + DAY, "--dry-run", "--db", api.store.path)
    assert dry.returncode == 0 and "would remove 3 final actions" in dry.stderr
    assert snapshot(api.store.path) == before

    done = cli("purge", "--before", NOW + DAY, "--db", api.store.path)
    assert done.returncode == 0, done.stderr
    assert "removed 3 final actions" in done.stderr and "4 log lines" in done.stderr
    kept = {made[k]["uuid"] for k in ("pending", "canceling", "running")} | {future["uuid"]}
    assert set(await api.all_uuids()) == kept
    for gone in ("stack", "failed", "canceled"):
        resp = await api.get(f"/api/audit/v1/action/{made[gone]['uuid']}/")
        assert resp.status == 404
    after = snapshot(api.store.path)
    assert {uuid for uuid, *_ in after["logs"]} == {made["running"]["uuid"]}
    assert (await api.list())["meta"]["total_count"] == 4
    assert cli("check", "--db", api.store.path).returncode == 0


async def test_retention_task_removes_old_final_actions(aiohttp_client, tmp_path):
    app = create_app(Config(db=str(tmp_path / "r.db"), retention_days=30))
    await aiohttp_client(app)
    store, retention = app[STORE], app[RETENTION]
    old = await store.record_action(new_action(user="u", action="Old", state="Success",
                                               start_date=NOW - 40 * DAY, end_date=NOW - 31 * DAY))
    await store.append_logs(old["uuid"], [(NOW - 31 * DAY, "stdout", "done")], None)
    recent = await store.record_action(new_action(user="u", action="Recent", state="Failed",
                                                  start_date=NOW - 40 * DAY, end_date=NOW - DAY))
    stuck = await store.record_action(new_action(user="u", action="Stuck", state="Pending",
                                                 start_date=NOW - 400 * DAY))

    assert await retention.run_now() == 1
    page = await store.list_actions(ListQuery(None, 10, newest_first=False))
    assert [json.loads(doc)["uuid"] for doc in page.docs] == [stuck["uuid"], recent["uuid"]]
    assert await store.read_logs(old["id"], 0, 10) == []


async def test_no_retention_task_when_retention_is_off(aiohttp_client, tmp_path):
    app = create_app(Config(db=str(tmp_path / "r.db")))
    await aiohttp_client(app)
    assert RETENTION not in app


# ---------------------------------------------------------------------------- backup and check

def test_backup_while_the_server_takes_writes(server, tmp_path):
    headers = dict(basic("admin", server.admin_key), **{"Content-Type": "application/json"})
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()
    enough = threading.Event()

    def write():
        while not stop.is_set():
            body = json.dumps({"action": "Write", "user": "admin"}).encode()
            req = urllib.request.Request(server.url + "/api/audit/v1/action/", body, headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                uuid = json.load(resp)["uuid"]
            with lock:
                acknowledged.append(uuid)
                if len(acknowledged) >= 50:
                    enough.set()

    writers = [threading.Thread(target=write) for _ in range(2)]
    for t in writers:
        t.start()
    try:
        assert enough.wait(60)
        with lock:
            before_backup = list(acknowledged)
        done = server.cli("backup", tmp_path / "copy.db")   # the writers go on meanwhile
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'copy.db'}" in done.stdout
    copy = snapshot(tmp_path / "copy.db")
    assert set(before_backup) <= set(copy["actions"])
    checked = cli("check", "--db", tmp_path / "copy.db")
    assert checked.returncode == 0, checked.stdout
    assert not (tmp_path / "copy.db-wal").exists()     # one self-contained file

    again = server.cli("backup", tmp_path / "copy.db")
    assert again.returncode == 1 and "--force" in again.stderr
    forced = server.cli("backup", tmp_path / "copy.db", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(snapshot(tmp_path / "copy.db")["actions"]) >= len(copy["actions"])


async def test_check_passes_a_good_database_and_fails_a_damaged_one(tmp_path):
    db = tmp_path / "good.db"
    async with SQLiteStore(db) as store:
        for i in range(20):
            await store.record_action(new_action(user="u", action=f"A{i}"))
    good = cli("check", "--db", db)
    assert good.returncode == 0, good.stdout
    assert f"schema version: {SCHEMA_VERSION}" in good.stdout and "actions: 20 (20 In progress)" in good.stdout

    damaged = tmp_path / "damaged.db"
    raw = db.read_bytes()
    at = raw.index(b"In progress")     # one byte of one state, in a row or in an index entry
    damaged.write_bytes(raw[:at] + b"In progresz" + raw[at + 11:])
    bad = cli("check", "--db", damaged)
    assert bad.returncode == 1
    assert "problem: " in bad.stdout and "restore the latest backup" in bad.stdout

    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello\n" * 100)
    result = cli("check", "--db", not_db)
    assert result.returncode == 1 and "not an SQLite database" in result.stdout
