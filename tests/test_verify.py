"""Signed checkpoints, the key file, and the stand-alone verifier (`python -m auditd.verify`) on
proofs built as the API will build them."""
import base64
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from auditd import checkpoint as ckpt
from auditd import leaves, verify
from auditd.checkpoint import (KeyFileError, load_or_create_key, public_key_b64, public_key_bytes,
                               sign_checkpoint, verify_checkpoint)
from auditd.merkle import (CompactRange, VerificationError, consistency_path, inclusion_path,
                           leaf_hash, list_source, root_at)

ORIGIN = "auditd.test/log"
T = 1700000000


# ---------------------------------------------------------------------------- checkpoints

@pytest.fixture
def key(tmp_path):
    return load_or_create_key(tmp_path / "checkpoint.key")


def test_a_checkpoint_round_trips_and_any_change_fails(key):
    root = leaf_hash(b"x")
    cp = sign_checkpoint(key, 7, root, T, ORIGIN)
    assert cp["tree_size"] == 7 and cp["root_hash"] == root.hex() and cp["timestamp"] == T
    assert base64.b64decode(cp["public_key"]) == public_key_bytes(key)
    assert verify_checkpoint(cp) and verify_checkpoint(cp, public_key_bytes(key))
    assert verify_checkpoint(json.loads(json.dumps(cp)), cp["public_key"])
    signature = base64.b64decode(cp["signature"])
    for bit in (0, 100, 511):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << bit % 8
        assert not verify_checkpoint({**cp, "signature": base64.b64encode(flipped).decode()})
    for change in ({"tree_size": 8}, {"timestamp": T + 1}, {"origin": "auditd.test/other"},
                   {"root_hash": leaf_hash(b"y").hex()}, {"note": cp["note"] + "x"}):
        assert not verify_checkpoint({**cp, **change}), change
    other = ckpt.Ed25519PrivateKey.generate()
    assert not verify_checkpoint(cp, public_key_bytes(other))
    # Re-signed by another key, it verifies only against that key.
    forged = sign_checkpoint(other, 7, root, T, ORIGIN)
    assert verify_checkpoint(forged) and not verify_checkpoint(forged, cp["public_key"])


def test_the_signed_message_is_the_documented_text(key):
    root = bytes(range(32))
    cp = sign_checkpoint(key, 42, root, T, ORIGIN)
    text = (f"{ORIGIN}\n42\n{base64.b64encode(root).decode()}\nTimestamp: {T}\n").encode()
    assert ckpt.checkpoint_text(ORIGIN, 42, root, T) == text
    key.public_key().verify(base64.b64decode(cp["signature"]), text)   # raises if not
    # ... and it is a C2SP signed note that a note verifier checks with the vkey.
    assert cp["note"].startswith(text.decode() + "\n\u2014 " + ORIGIN + " ")
    assert ckpt.verify_note(cp["note"], ckpt.vkey(ORIGIN, public_key_bytes(key))) == text.decode()


def test_signed_note_example_of_the_c2sp_spec():
    # From c2sp.org/signed-note (github.com/C2SP/C2SP, signed-note.md, "Example").
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    note = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1"
            "YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
    public = base64.b64decode(vkey.split("+")[2])[1:]
    assert ckpt.key_id("example.com/foo", public).hex() == "530d903a"
    assert ckpt.vkey("example.com/foo", public) == vkey
    assert ckpt.verify_note(note, vkey) == "This is an example message.\n"
    with pytest.raises(VerificationError):
        ckpt.verify_note(note.replace("example message", "example massage"), vkey)


def test_bad_checkpoint_fields_are_refused(key):
    with pytest.raises(ValueError, match="origin"):
        sign_checkpoint(key, 1, leaf_hash(b""), T, "has space")
    with pytest.raises(ValueError, match="root hash"):
        sign_checkpoint(key, 1, b"short", T, ORIGIN)
    cp = sign_checkpoint(key, 1, leaf_hash(b""), T, ORIGIN)
    for bad in ({"tree_size": "1"}, {"root_hash": "zz"}, {"signature": "***"},
                {"public_key": "AAAA"}):
        with pytest.raises(VerificationError):
            ckpt.check_checkpoint({**cp, **bad})
    with pytest.raises(VerificationError, match="no public key"):
        ckpt.check_checkpoint({k: v for k, v in cp.items() if k != "public_key"})


# ---------------------------------------------------------------------------- the key file

def test_the_key_file_is_created_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        key = load_or_create_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert os.listdir(tmp_path) == ["k"]                      # no temporary file left
    assert (tmp_path / "k").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_key(tmp_path / "k")                 # the same key, not a new one
    assert public_key_b64(again) == public_key_b64(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path, mode):
    load_or_create_key(tmp_path / "k")
    os.chmod(tmp_path / "k", mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
        load_or_create_key(tmp_path / "k")


def test_a_key_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "k").write_bytes(generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(tmp_path / "k", 0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_or_create_key(tmp_path / "k")
    (tmp_path / "k").write_bytes(b"junk")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_or_create_key(tmp_path / "k")
    with pytest.raises(KeyFileError, match="no directory"):
        load_or_create_key(tmp_path / "missing" / "k")


# ---------------------------------------------------------------------------- proofs

A, B = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def action(uuid, **fields):
    return {"uuid": uuid, "namespace": "alice", "state": "In progress", "action": "Deploy",
            "method": "POST", "path": "/api/x/", "object": "/api/x/1/", "parents": [],
            "user": "alice", "user_agent": "t", "ip": "127.0.0.1", "location": "",
            "body": None, "start_ts": T, "end_ts": None, "is_user_action": True,
            "cancelable": True, "retriable": True, **fields}


class Log:
    """What the store will do: append each event's leaf; serve proofs from the leaf hashes."""

    def __init__(self):
        self.data, self.hashes, self.frontier = [], [], CompactRange()

    def add(self, data):
        self.data.append(data)
        self.hashes.append(leaf_hash(data))
        self.frontier.append(self.hashes[-1])

    def root(self, size):
        return root_at(size, list_source(self.hashes))

    def proof(self, uuid, size=None):
        size = len(self.data) if size is None else size
        get = list_source(self.hashes)
        return {"uuid": uuid, "tree_size": size, "root_hash": self.root(size).hex(),
                "leaves": [{"leaf_index": i, "leaf": base64.b64encode(d).decode(),
                            "inclusion_path": [h.hex() for h in inclusion_path(i, size, get)]}
                           for i, d in enumerate(self.data[:size])
                           if json.loads(d)["uuid"] == uuid]}

    def consistency(self, first, second):
        return {"first": first, "second": second,
                "consistency_path": [h.hex() for h in consistency_path(
                    first, second, list_source(self.hashes))]}

    def checkpoint(self, key, size=None):
        size = len(self.data) if size is None else size
        assert size != len(self.data) or self.frontier.root() == self.root(size)
        return sign_checkpoint(key, size, self.root(size), T + size, ORIGIN)


@pytest.fixture
def log():
    log = Log()
    log.add(leaves.record_leaf(action(A)))
    log.add(leaves.record_leaf(action(B, state="Pending")))
    log.add(leaves.logs_leaf(A, 1, [(T, "stdout", "pulling"), (T + 1, "stdout", "done")]))
    log.add(leaves.cancel_leaf(B, "Pending", "Canceled", T + 2, T + 2))
    log.add(leaves.logs_leaf(A, 3, [(T + 3, "stderr", "é ünïcode")]))
    log.add(leaves.state_leaf(A, "In progress", "Success", T + 4, T + 4))
    log.add(leaves.retry_leaf(B, "33333333-3333-4333-8333-333333333333", T + 5))
    return log


def test_an_actions_proof_verifies_against_its_checkpoint(log, key):
    cp = log.checkpoint(key)
    said = verify.inclusion(log.proof(A), cp, public_key_bytes(key))
    assert "4 events of action " + A in said and "now Success, 3 log lines" in said
    assert "3 events of action " + B in verify.inclusion(log.proof(B), cp)
    assert verify.inclusion(log.proof(A, size=3), None)   # an older tree head, no checkpoint


def _tamper(proof, n, data: bytes):
    leaves_ = [dict(item) for item in proof["leaves"]]
    leaves_[n]["leaf"] = base64.b64encode(data).decode()
    return {**proof, "leaves": leaves_}


def test_a_tampered_proof_fails_and_says_where(log, key):
    cp = log.checkpoint(key)
    proof = log.proof(A)
    record = json.loads(base64.b64decode(proof["leaves"][0]["leaf"]))
    changed = leaves.canonical({**record, "ip": "10.0.0.1"})
    cases = {
        "leaf 0 (index 0): the inclusion path does not lead to the root hash":
            _tamper(proof, 0, changed),
        "leaf 2 (index 2): leaf indexes must increase (after 4)":
            {**proof, "leaves": [proof["leaves"][0], proof["leaves"][2], proof["leaves"][1]]},
        "event 1: log lines from 3 but 0 came before":
            {**proof, "leaves": [proof["leaves"][0], *proof["leaves"][2:]]},
        "leaf 0 (index 0): the inclusion path is shorter":
            {**proof, "leaves": [{**proof["leaves"][0],
                                  "inclusion_path": proof["leaves"][0]["inclusion_path"][1:]}]},
        "is about action " + A: {**proof, "uuid": B},
        "the proof is against tree size 6 but the checkpoint is of tree size 7":
            log.proof(A, size=6),
        "the proof has no leaves": {**proof, "leaves": []},
    }
    for why, bad in cases.items():
        with pytest.raises(VerificationError, match=re.escape(why)):
            verify.inclusion(bad, cp)
    forged = {**cp, "root_hash": log.root(6).hex()}
    with pytest.raises(VerificationError, match="signature does not match"):
        verify.inclusion(log.proof(A, size=6), {**forged, "tree_size": 6})


def test_a_checkpoint_of_another_history_fails(log, key):
    honest = log.checkpoint(key)
    other = Log()
    for data in log.data:
        other.add(data.replace(b"pulling", b"pushing"))
    # The server signs a tree with a changed log line: its proofs name another root.
    with pytest.raises(VerificationError, match="two versions of its history"):
        verify.inclusion(other.proof(A), honest)


def test_consistency_between_two_checkpoints(log, key):
    old = log.checkpoint(key, 3)
    new = log.checkpoint(key)
    said = verify.consistency(old, new, log.consistency(3, 7), public_key_bytes(key))
    assert "the tree of size 7" in said and "extends the tree of size 3" in said
    # A history rewritten before size 3 cannot be shown to extend the old checkpoint.
    forged = Log()
    for data in [log.data[0], log.data[2], log.data[1], *log.data[3:]]:   # two swapped
        forged.add(data)
    forged_cp = forged.checkpoint(key)
    with pytest.raises(VerificationError, match="does not lead to the root hash of tree size 3"):
        verify.consistency(old, forged_cp, forged.consistency(3, 7))
    with pytest.raises(VerificationError, match="the new checkpoint: .*another key"):
        verify.consistency(old, log.checkpoint(ckpt.Ed25519PrivateKey.generate()),
                           log.consistency(3, 7))
    with pytest.raises(VerificationError, match="from size 3 to 7, the checkpoints are of "
                                                "sizes 7 and 3"):
        verify.consistency(new, old, log.consistency(3, 7))
    with pytest.raises(VerificationError, match="from the empty tree proves nothing"):
        verify.consistency(log.checkpoint(key, 0), new, {"first": 0, "second": 7,
                                                         "consistency_path": []})


# ---------------------------------------------------------------------------- the command line

def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "auditd.verify", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_the_command_line_verifies_and_fails_with_a_sentence(log, key, tmp_path):
    cp = write(tmp_path / "cp.json", log.checkpoint(key))
    old = write(tmp_path / "old.json", log.checkpoint(key, 3))
    proof = write(tmp_path / "proof.json", log.proof(A))
    pub = public_key_b64(key)

    done = run("proof", proof, "--checkpoint", cp, "--public-key", pub)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("VERIFIED: 4 events of action " + A)
    assert "signed by the key given" in done.stdout

    done = run("checkpoint", cp)
    assert done.returncode == 0 and "pass --public-key to pin" in done.stdout

    done = run("consistency", old, cp, write(tmp_path / "c.json", log.consistency(3, 7)))
    assert done.returncode == 0 and "extends the tree of size 3" in done.stdout

    done = run("proof", "-", "--checkpoint", cp, stdin=json.dumps(log.proof(B)))
    assert done.returncode == 0 and "3 events of action " + B in done.stdout

    record = json.loads(base64.b64decode(log.proof(A)["leaves"][0]["leaf"]))
    bad = write(tmp_path / "bad.json", _tamper(log.proof(A), 0,
                                               leaves.canonical({**record, "user": "mallory"})))
    done = run("proof", bad, "--checkpoint", cp)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("NOT VERIFIED: leaf 0 (index 0): the inclusion path does not lead "
                           "to the root hash.\n")

    done = run("checkpoint", cp, "--public-key",
               public_key_b64(ckpt.Ed25519PrivateKey.generate()))
    assert done.returncode == 1 and "signed by another key" in done.stderr

    done = run("consistency", cp, old, write(tmp_path / "c2.json", log.consistency(3, 7)))
    assert done.returncode == 1 and "NOT VERIFIED" in done.stderr

    done = run("proof", tmp_path / "nothing.json")
    assert done.returncode == 1 and "cannot read the proof" in done.stderr
    (tmp_path / "junk.json").write_text("{")
    done = run("checkpoint", tmp_path / "junk.json")
    assert done.returncode == 1 and "is not JSON" in done.stderr


def test_the_verifier_imports_no_server_code():
    code = ("import sys, auditd.verify; bad = [m for m in ('aiohttp', 'aiosqlite', 'sqlite3', "
            "'marshmallow', 'auditd.store', 'auditd.app') if m in sys.modules]; print(bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


# ---------------------------------------------------------------------------- the document

DOC = (Path(__file__).resolve().parent.parent / "docs" / "TRANSPARENCY.md").read_text()
EXAMPLE_UUID = "5f3b3e8a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def example(tmp_path):
    """The worked example of docs/TRANSPARENCY.md, section 6, built with auditd's own code."""
    record = {"uuid": EXAMPLE_UUID, "namespace": "alice", "state": "In progress",
              "action": "Service Create", "method": "POST", "path": "/api/app/v1/service/",
              "object": "/api/app/v1/service/x/", "parents": ["/api/app/v1/stack/s/"],
              "user": "alice", "user_agent": "curl/8.0", "ip": "192.0.2.7",
              "location": "Zürich", "body": None, "start_ts": 1700000000, "end_ts": None,
              "is_user_action": True, "cancelable": True, "retriable": False}
    log = Log()
    log.add(leaves.record_leaf(record))
    log.add(leaves.logs_leaf(EXAMPLE_UUID, 1, [(1700000001, "stdout", "hello")]))
    log.add(leaves.state_leaf(EXAMPLE_UUID, "In progress", "Success", 1700000002, 1700000002))
    key = ckpt.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    cp = sign_checkpoint(key, 3, log.root(3), 1700000003, "auditd.example/log")
    return log, key, cp


def test_the_documented_example_is_what_auditd_produces(tmp_path):
    log, key, cp = example(tmp_path)
    for data in log.data:
        assert "    " + data.decode() + "\n" in DOC
    for value in [h.hex() for h in log.hashes] + [log.root(2).hex(), log.root(3).hex(),
                                                   cp["signature"], cp["public_key"],
                                                   json.dumps(cp["note"], ensure_ascii=False),
                                                   ckpt.vkey(cp["origin"],
                                                             public_key_bytes(key))]:
        assert value in DOC, value
    text = ckpt.checkpoint_text(cp["origin"], 3, log.root(3), 1700000003)
    assert text.decode().replace("\n", "\\n") in DOC
    assert json.dumps(log.consistency(2, 3)["consistency_path"]) in DOC
    assert [p[:8] for p in log.proof(EXAMPLE_UUID)["leaves"][2]["inclusion_path"]] == ["331a58f6"]


def test_the_verifier_written_from_the_document_alone(tmp_path):
    code = DOC.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "check.py"
    script.write_text(code)
    log, key, cp = example(tmp_path)
    proof = write(tmp_path / "proof.json", log.proof(EXAMPLE_UUID))
    cp_file = write(tmp_path / "cp.json", cp)
    pub = public_key_b64(key)
    done = subprocess.run([sys.executable, script, proof, cp_file, pub], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 record\n1 logs\n2 state\nverified\n"
    assert run("proof", proof, "--checkpoint", cp_file, "--public-key", pub).returncode == 0
    # The same tampering fails both verifiers.
    bad = log.proof(EXAMPLE_UUID)
    bad["leaves"][1]["leaf"] = base64.b64encode(
        base64.b64decode(bad["leaves"][1]["leaf"]).replace(b"hello", b"hellO")).decode()
    write(proof, bad)
    done = subprocess.run([sys.executable, script, proof, cp_file, pub], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "AssertionError" in done.stderr
    assert run("proof", proof, "--checkpoint", cp_file, "--public-key", pub).returncode == 1
