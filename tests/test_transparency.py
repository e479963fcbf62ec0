"""Tamper evidence end to end: a real server's proofs and checkpoints checked by the stand-alone
verifier, and `auditd verify` naming a tampered field, a deleted row and a swapped order."""
import base64
import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from auditd.checkpoint import check_checkpoint
from auditd.leaves import decode_leaf
from auditd.merkle import check_consistency, check_inclusion, leaf_hash
from conftest import ROOT, ServerProcess, basic


class Client:
    def __init__(self, srv, user="admin", key=None):
        self.srv, self.headers = srv, basic(user, key or srv.admin_key)

    def call(self, method, path, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.srv.url + path, data=data, method=method,
                                     headers={**self.headers, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture
def busy_server(tmp_path):
    """A server whose log has records, state changes, a cancel, a retry and log lines."""
    srv = ServerProcess(tmp_path / "t.db").start()
    api = Client(srv)
    made = []
    for i in range(6):
        status, action = api.call("POST", "/api/audit/v1/action/",
                                  {"action": f"Service Create {i}", "namespace": "acme",
                                   "object": f"/api/app/v1/service/{i}/",
                                   "parents": ["/api/app/v1/stack/s/"], "body": {"n": i}})
        assert status == 201
        made.append(action)
    api.call("POST", f"/api/audit/v1/action/{made[0]['uuid']}/logs/", ["one", "two"])
    api.call("PATCH", f"/api/audit/v1/action/{made[0]['uuid']}/", {"state": "Success"})
    api.call("POST", f"/api/audit/v1/action/{made[1]['uuid']}/cancel/")
    api.call("PATCH", f"/api/audit/v1/action/{made[1]['uuid']}/", {"state": "Canceled"})
    status, _ = api.call("POST", f"/api/audit/v1/action/{made[0]['uuid']}/retry/")
    assert status == 202
    yield srv, api, made
    srv.stop()


def test_proofs_and_checkpoints_verify_with_the_stand_alone_verifier(busy_server):
    srv, api, made = busy_server
    status, first = api.call("POST", "/api/audit/v1/checkpoint/")     # sign one now
    assert api.call("GET", "/api/audit/v1/checkpoint/")[1] == first
    assert status == 201 and {"tree_size", "root_hash", "timestamp", "signature",
                              "public_key"} <= set(first)
    check_checkpoint(first)
    status, proof = api.call("GET", f"/api/audit/v1/action/{made[0]['uuid']}/proof/")
    assert status == 200, proof
    kinds = [decode_leaf(base64.b64decode(leaf["leaf"]))["type"] for leaf in proof["leaves"]]
    assert kinds == ["record", "logs", "state", "retry"]
    status, checkpoint = api.call("GET", "/api/audit/v1/checkpoint/")
    assert checkpoint["tree_size"] >= proof["tree_size"]
    for leaf in proof["leaves"]:
        check_inclusion(leaf_hash(base64.b64decode(leaf["leaf"])), leaf["leaf_index"],
                        proof["tree_size"], [bytes.fromhex(h) for h in leaf["inclusion_path"]],
                        bytes.fromhex(proof["root_hash"]))
    # the log grows; the old checkpoint is consistent with the new one
    api.call("POST", "/api/audit/v1/action/", {"action": "Later"})
    status, later = api.call("POST", "/api/audit/v1/checkpoint/")
    assert status == 201 and later["tree_size"] > first["tree_size"]
    status, body = api.call("GET", "/api/audit/v1/checkpoint/consistency/"
                            f"?first={first['tree_size']}&second={later['tree_size']}")
    assert status == 200
    check_consistency(first["tree_size"], later["tree_size"], bytes.fromhex(first["root_hash"]),
                      bytes.fromhex(later["root_hash"]),
                      [bytes.fromhex(h) for h in body["consistency_path"]])
    # the stand-alone verifier's command line agrees
    cp_file, proof_file = srv.db.with_name("cp.json"), srv.db.with_name("proof.json")
    cp_file.write_text(json.dumps(checkpoint))
    proof_file.write_text(json.dumps(proof))
    done = subprocess.run([sys.executable, "-m", "auditd.verify", "proof", str(proof_file),
                           "--checkpoint", str(cp_file)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_user_gets_proofs_only_for_what_it_may_see(busy_server):
    srv, api, made = busy_server
    key = srv.cli("user", "add", "mallory").stdout.strip()
    other = Client(srv, "mallory", key)
    assert other.call("GET", f"/api/audit/v1/action/{made[0]['uuid']}/proof/")[0] == 404
    assert other.call("GET", "/api/audit/v1/checkpoint/")[0] == 200
    assert other.call("POST", "/api/audit/v1/checkpoint/")[0] == 403
    assert api.call("GET", "/api/audit/v1/checkpoint/consistency/?first=0&second=2")[0] == 400


def _verify(db, *extra):
    return subprocess.run([sys.executable, "-m", "auditd", "verify", "--db", str(db), *extra],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture
def stopped(busy_server):
    srv, api, made = busy_server
    status, checkpoint = api.call("POST", "/api/audit/v1/checkpoint/")
    srv.stop()
    cp_file = srv.db.with_name("kept-elsewhere.json")
    cp_file.write_text(json.dumps(checkpoint))
    done = _verify(srv.db, "--checkpoint", str(cp_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:" in done.stdout
    return srv.db, made, cp_file


def test_verify_names_a_tampered_field(stopped):
    db, made, _ = stopped
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE actions SET user = 'someone-else' WHERE uuid = ?", (made[2]["uuid"],))
    done = _verify(db)
    assert done.returncode == 1
    assert "DAMAGED (change)" in done.stdout and made[2]["uuid"] in done.stdout
    assert "user is stored as 'someone-else'" in done.stdout


def test_verify_names_a_deleted_row(stopped):
    db, made, _ = stopped
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM actions WHERE uuid = ?", (made[3]["uuid"],))
    done = _verify(db)
    assert done.returncode == 1
    assert "DAMAGED (deletion)" in done.stdout and made[3]["uuid"] in done.stdout


def test_verify_names_a_swapped_order(stopped):
    db, made, cp_file = stopped
    with sqlite3.connect(db) as conn:   # two events change places, each with its own hash
        (a_leaf, a_hash), (b_leaf, b_hash) = conn.execute(
            "SELECT leaf, hash FROM events WHERE idx IN (2, 3) ORDER BY idx").fetchall()
        conn.execute("UPDATE events SET leaf = ?, hash = ? WHERE idx = 2", (b_leaf, b_hash))
        conn.execute("UPDATE events SET leaf = ?, hash = ? WHERE idx = 3", (a_leaf, a_hash))
    done = _verify(db)
    assert done.returncode == 1 and "DAMAGED (reordering)" in done.stdout


def test_a_rewritten_log_is_caught_by_a_checkpoint_kept_elsewhere(stopped):
    db, made, cp_file = stopped
    from auditd.merkle import CompactRange
    with sqlite3.connect(db) as conn:   # rewrite an event, its hash, the head and the nodes
        leaf = conn.execute("SELECT leaf FROM events WHERE idx = 1").fetchone()[0]
        forged = leaf.replace(b'"Service Create 0"', b'"Service Delete 0"')
        conn.execute("UPDATE events SET leaf = ?, hash = ? WHERE idx = 1",
                     (forged, leaf_hash(forged)))
        conn.execute("UPDATE actions SET action = 'Service Delete 0', doc = replace(doc, "
                     "'Service Create 0', 'Service Delete 0') WHERE uuid = ?", (made[0]["uuid"],))
        frontier = CompactRange()
        frontier.extend(h for (h,) in conn.execute("SELECT hash FROM events ORDER BY idx"))
        conn.execute("UPDATE tree_state SET frontier = ?", (frontier.to_bytes(),))
        conn.execute("DELETE FROM tree_nodes")
        conn.execute("DELETE FROM checkpoints")
    assert _verify(db).returncode == 0                   # consistent in itself ...
    done = _verify(db, "--checkpoint", str(cp_file))     # ... but not with what was signed
    assert done.returncode == 1 and "rewritten" in done.stdout


def test_an_export_with_proofs_verifies_later_without_auditd(busy_server, tmp_path):
    srv, api, made = busy_server
    out = tmp_path / "proven.ndjson"
    srv.stop()
    done = subprocess.run([sys.executable, "-m", "auditd", "export", "--proofs", "-o", str(out),
                           "--db", str(srv.db)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    check = subprocess.run([sys.executable, "-m", "auditd.verify", "export", str(out)],
                           capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "7 actions" in check.stdout
    # a changed field in the file no longer verifies
    lines = out.read_text().splitlines()
    lines[2] = lines[2].replace('"user":"admin"', '"user":"mallory"')
    forged = tmp_path / "forged.ndjson"
    forged.write_text("\n".join(lines) + "\n")
    check = subprocess.run([sys.executable, "-m", "auditd.verify", "export", str(forged)],
                           capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 1 and "user" in check.stderr
    # and auditd imports it like any export
    imported = subprocess.run([sys.executable, "-m", "auditd", "import", str(out), "--create",
                               "--db", str(tmp_path / "copy.db")], capture_output=True,
                              text=True, cwd=ROOT)
    assert imported.returncode == 0, imported.stderr
    assert "imported 7 actions" in imported.stderr
