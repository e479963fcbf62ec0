"""The tamper-evident log in SQLite: every immutable event is a leaf of an RFC 9162 Merkle tree
(`auditd.merkle`, leaves encoded by `auditd.leaves`; docs/TRANSPARENCY.md).

- `events` holds the leaves in order (leaf index = idx - 1), each with its leaf hash and the
  action it is about. Writer jobs add them in the same transaction as the change they record.
- Just before each COMMIT the writer seals the batch (`seal`): it hashes the new leaves into the
  tree's frontier (a `CompactRange`, O(log n) hashes, kept in `tree_state`) and stores the
  completed subtree roots of every STRIDE-th level in `tree_nodes`, so a proof reads O(log n)
  stored hashes. A rolled-back job's leaves are gone with it; a failed COMMIT reloads the
  frontier from the database.
- `checkpoints` keeps the signed tree heads.

A purge keeps the purged actions' leaf hashes (the tree never changes) and drops their bytes with
the data; a `purge` leaf says so.
"""
import json
import logging
import sqlite3

from ... import leaves
from ...merkle import (CompactRange, consistency_path, inclusion_path, keep_node, leaf_hash,
                       node_source, root_at)

progress = logging.getLogger("auditd.store.migrate")   # shown by the CLI: database.py

STRIDE = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    idx        INTEGER PRIMARY KEY,     -- leaf index + 1, in the order the leaves were added
    action_id  INTEGER NOT NULL,        -- the action it is about (kept after a purge)
    leaf       BLOB,                    -- the canonical leaf bytes; NULL once purged
    hash       BLOB NOT NULL            -- leaf_hash(leaf)
);
CREATE INDEX IF NOT EXISTS events_by_action ON events (action_id, idx);
CREATE TABLE IF NOT EXISTS tree_nodes (
    level      INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tree_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    frontier   BLOB    NOT NULL         -- CompactRange.to_bytes()
);
INSERT OR IGNORE INTO tree_state (id, frontier) VALUES (1, zeroblob(8));
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    root_hash  BLOB    NOT NULL,
    timestamp  INTEGER NOT NULL,
    document   TEXT    NOT NULL         -- the signed checkpoint as the API sends it (JSON)
);
"""


# ---------------------------------------------------------------------------- writing

def add(conn, action_id: int, leaf: bytes):
    """Add one leaf about an action (a writer job calls this inside its savepoint)."""
    if getattr(conn, "frontier", True) is None:     # transparency is off for this writer
        return
    conn.execute("INSERT INTO events (action_id, leaf, hash) VALUES (?, ?, ?)",
                 (action_id, leaf, leaf_hash(leaf)))


def add_many(conn, rows: list[tuple[int, bytes]]):
    if getattr(conn, "frontier", True) is None:
        return
    conn.executemany("INSERT INTO events (action_id, leaf, hash) VALUES (?, ?, ?)",
                     [(action_id, leaf, leaf_hash(leaf)) for action_id, leaf in rows])


def load(conn) -> CompactRange:
    return CompactRange.from_bytes(conn.execute(
        "SELECT frontier FROM tree_state WHERE id = 1").fetchone()[0])


def seal(conn, frontier: CompactRange):
    """Fold the leaves added since the frontier into it; keep the nodes proofs read."""
    rows = conn.execute("SELECT idx, hash FROM events WHERE idx > ? ORDER BY idx",
                        (frontier.size,)).fetchall()
    if not rows:
        return
    kept = []
    for idx, h in rows:
        if idx != frontier.size + 1:
            raise sqlite3.DatabaseError(f"the event log has a gap before leaf {idx - 1}")
        kept.extend((level, index, node) for level, index, node in frontier.append(h)
                    if keep_node(level, STRIDE))
    if kept:
        conn.executemany("INSERT OR REPLACE INTO tree_nodes (level, idx, hash) VALUES (?, ?, ?)",
                         kept)
    conn.execute("UPDATE tree_state SET frontier = ? WHERE id = 1", (frontier.to_bytes(),))


def clear(conn):
    """Forget the whole tree (a stand-in reset: every action is gone)."""
    for table in ("events", "tree_nodes", "checkpoints"):
        conn.execute(f"DELETE FROM {table}")
    conn.execute("UPDATE tree_state SET frontier = zeroblob(8) WHERE id = 1")
    conn.execute("UPDATE forward_positions SET position = 0")   # the new events start at 1
    if getattr(conn, "frontier", None) is not None:
        conn.frontier = CompactRange()


def purge_actions(conn, purged: list[tuple[int, str]], when: int):
    """The actions (id, uuid) were removed: a purge leaf for each, and their leaves' bytes go."""
    conn.executemany("UPDATE events SET leaf = NULL WHERE action_id = ?",
                     [(action_id,) for action_id, _ in purged])
    add_many(conn, [(action_id, leaves.purge_leaf(uuid, when)) for action_id, uuid in purged])


# ---------------------------------------------------------------------------- reading

def head(conn) -> tuple[int, bytes]:
    """(size, root hash) of the tree as committed."""
    frontier = load(conn)
    return frontier.size, frontier.root()


def hash_source(conn):
    def read(level: int, start: int, end: int):
        if level == 0:
            rows = conn.execute("SELECT hash FROM events WHERE idx > ? AND idx <= ? ORDER BY idx",
                                (start, end)).fetchall()
        else:
            rows = conn.execute("SELECT hash FROM tree_nodes WHERE level = ? AND idx >= ? "
                                "AND idx < ? ORDER BY idx", (level, start, end)).fetchall()
        return [r[0] for r in rows]
    return node_source(read, STRIDE)


def proof(conn, action_id: int, size: int) -> dict:
    """Every leaf of an action in a tree of `size` leaves, with its inclusion path."""
    get_hash = hash_source(conn)
    rows = conn.execute("SELECT idx, leaf FROM events WHERE action_id = ? AND idx <= ? "
                        "ORDER BY idx", (action_id, size)).fetchall()
    return {"tree_size": size, "root_hash": root_at(size, get_hash).hex(),
            "leaves": [{"leaf_index": idx - 1, "leaf": leaf,
                        "inclusion_path": [h.hex() for h in
                                           inclusion_path(idx - 1, size, get_hash)]}
                       for idx, leaf in rows]}


def consistency(conn, first: int, second: int) -> list[str]:
    return [h.hex() for h in consistency_path(first, second, hash_source(conn))]


def root_of(conn, size: int) -> bytes:
    return root_at(size, hash_source(conn))


# ---------------------------------------------------------------------------- schema 2 -> 3

def migrate(conn, chunk: int = 5000):
    """Create the tables, and give every action already stored a record leaf (as it is now: its
    history before the tree is not known) and its log lines one logs leaf."""
    statement = ""
    for line in SCHEMA.splitlines(keepends=True):   # executescript would COMMIT first
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    frontier, after, done = load(conn), 0, 0
    while True:
        rows = conn.execute(
            "SELECT id, uuid, namespace, state, action, method, path, object, user, user_agent, "
            "ip, location, doc, start_ts, end_ts, is_user_action, cancelable, retriable, "
            "log_count FROM actions WHERE id > ? ORDER BY id LIMIT ?", (after, chunk)).fetchall()
        if not rows:
            break
        for (action_id, uuid, namespace, state, name, method, path, obj, user, agent, ip,
             location, doc, start, end, user_action, cancelable, retriable, log_count) in rows:
            add(conn, action_id, leaves.record_leaf({
                "uuid": uuid, "namespace": namespace, "state": state, "action": name,
                "method": method, "path": path, "object": obj, "parents": [], "user": user,
                "user_agent": agent, "ip": ip, "location": location,
                "body": json.loads(doc)["body"], "start_ts": start, "end_ts": end,
                "is_user_action": user_action, "cancelable": cancelable, "retriable": retriable}))
            if log_count:
                lines = conn.execute("SELECT ts, stream_type, line FROM action_logs "
                                     "WHERE action_id = ? ORDER BY seq", (action_id,)).fetchall()
                if lines:
                    add(conn, action_id, leaves.logs_leaf(uuid, 1, lines))
        after = rows[-1][0]
        done += len(rows)
        seal(conn, frontier)
        progress.info("tamper-evident log: %d actions entered", done)
