"""Writer jobs: each runs on the write connection, undone alone if it raises (writer.py), and
returns (result, notes). The rules come from `auditd.model.actions`; only the SQL is here."""
import json
import sqlite3

from ... import leaves
from ...model import dates
from ...model.access import check_visible
from ...model.actions import cancel_state, check_move, moved, retry_record
from ...model.document import render_action
from ...model.errors import Conflict, NotFound
from ...model.notes import ActionChanged, LinesAppended
from ...model.uris import normalize_object_uri
from ..interface import built
from . import tallies, tree
from .lineage import file_actions, file_subtree
from .database import OBJECT_CACHE_ENTRIES

ACTION_COLUMNS = ("id", "uuid", "namespace", "state", "action", "method", "path", "object",
                  "object_id", "user", "user_agent", "ip", "location", "body", "start_ts",
                  "end_ts", "is_user_action", "cancelable", "retriable", "log_count")
STORED_COLUMNS = ACTION_COLUMNS + ("doc",)      # an action as the store gives it out
LOGS_PER_LEAF = 500              # a log append enters the tree in leaves of at most this many
LEAF_TEXT = 256 * 1024           # lines, and of about this many characters of text
SELECT_STORED = "SELECT " + ", ".join(STORED_COLUMNS) + " FROM actions"


def stored(row) -> dict:
    """An action from a row of STORED_COLUMNS. The audited call's body is kept once, inside
    `doc`; the `body` column is NULL in the rows this auditd writes (older rows carry a copy),
    so it is read back from the document."""
    action = dict(zip(STORED_COLUMNS, row))
    if action["body"] is None:
        action["body"] = json.loads(action["doc"])["body"]
    return action


# ---------------------------------------------------------------------------- users and orgs

def add_user(conn, name, role, key_hash):
    if conn.execute("SELECT 1 FROM orgs WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"'{name}' is already an organization: users and organizations share "
                       "namespace names")
    try:
        conn.execute("INSERT INTO users (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)",
                     (name, role, key_hash, dates.now()))
    except sqlite3.IntegrityError:
        raise Conflict(f"user '{name}' already exists: use 'auditd user rotate-key {name}' "
                       "for a new key") from None
    return None, []


def rotate_key(conn, name, key_hash):
    if conn.execute("UPDATE users SET key_hash = ? WHERE name = ?", (key_hash, name)).rowcount == 0:
        raise NotFound(f"no user '{name}' ('auditd user list' shows them)")
    return None, []


def remove_user(conn, name):
    if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"no user '{name}' ('auditd user list' shows them)")
    return None, []


def add_org(conn, name):
    if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"'{name}' is already a user: users and organizations share namespace names")
    try:
        conn.execute("INSERT INTO orgs (name, created_at) VALUES (?, ?)", (name, dates.now()))
    except sqlite3.IntegrityError:
        raise Conflict(f"organization '{name}' already exists") from None
    return None, []


def set_member(conn, org, user, member: bool):
    org_row = conn.execute("SELECT id FROM orgs WHERE name = ?", (org,)).fetchone()
    if org_row is None:
        raise NotFound(f"no organization '{org}' (create it with 'auditd org add {org}')")
    user_row = conn.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()
    if user_row is None:
        raise NotFound(f"no user '{user}' (create it with 'auditd user add {user}')")
    if member:
        conn.execute("INSERT OR IGNORE INTO org_members (org_id, user_id) VALUES (?, ?)",
                     (org_row[0], user_row[0]))
    elif conn.execute("DELETE FROM org_members WHERE org_id = ? AND user_id = ?",
                      (org_row[0], user_row[0])).rowcount == 0:
        raise NotFound(f"'{user}' is not a member of '{org}'")
    return None, []


def import_accounts(conn, accounts: dict):
    """Users (key hashes, roles, creation times), organizations and memberships as
    `Store.export_accounts` gives them; names that exist are left alone."""
    added = {"users": 0, "orgs": 0, "memberships": 0}
    for org in accounts.get("orgs", ()):
        added["orgs"] += conn.execute("INSERT OR IGNORE INTO orgs (name, created_at) VALUES (?, ?)",
                                      (org["name"], org["created_at"])).rowcount
    for user in accounts.get("users", ()):
        added["users"] += conn.execute(
            "INSERT OR IGNORE INTO users (name, role, key_hash, created_at) VALUES (?, ?, ?, ?)",
            (user["name"], user["role"], user["key_hash"], user["created_at"])).rowcount
        for org in user["orgs"]:
            added["memberships"] += conn.execute(
                "INSERT OR IGNORE INTO org_members (org_id, user_id) SELECT o.id, u.id "
                "FROM orgs o, users u WHERE o.name = ? AND u.name = ?", (org, user["name"])).rowcount
    return added, []


# ---------------------------------------------------------------------------- the object graph

def object_id(conn, uri: str):
    """The id of the object a URI names (created when new), or None for no URI."""
    if not uri:
        return None
    known = getattr(conn, "object_ids", None)
    if known is not None and uri in known:
        return known[uri]
    normalized = normalize_object_uri(uri)
    if not normalized:
        return None
    row = conn.execute("SELECT id FROM objects WHERE uri = ?", (normalized,)).fetchone()
    found = row[0] if row else \
        conn.execute("INSERT INTO objects (uri) VALUES (?)", (normalized,)).lastrowid
    if known is not None:
        if len(known) >= OBJECT_CACHE_ENTRIES:
            conn.forget()
        known[uri] = found
    return found


def add_parent(conn, child: int, parent: int):
    edges = getattr(conn, "object_edges", None)
    if edges is not None and (child, parent) in edges:
        return
    added = conn.execute("INSERT OR IGNORE INTO object_parents (child_id, parent_id) "
                         "VALUES (?, ?)", (child, parent)).rowcount
    if edges is not None:
        edges.add((child, parent))
    if added:
        if edges is not None:
            conn.ancestors.clear()   # some object's ancestors may have grown
            conn.ancestor_ids.clear()
        file_subtree(conn, child, parent)


ANCESTORS_SQL = (
    "WITH RECURSIVE up(id, depth) AS (SELECT ?, 0 UNION "
    "  SELECT p.parent_id, up.depth + 1 FROM object_parents p JOIN up ON p.child_id = up.id "
    "  WHERE up.depth < 32) "
    "SELECT o.uri FROM up JOIN objects o ON o.id = up.id WHERE up.depth > 0 "
    "GROUP BY up.id ORDER BY min(up.depth), up.id")


def lineage(conn, action: dict) -> tuple[str, ...]:
    """The action's object, then that object's ancestors' URIs, nearest first: read inside the
    writing transaction, so it is what the commit makes true. Remembered per object by the writer
    connection until an edge is added."""
    if not action["object"]:
        return ()
    oid = action["object_id"]
    if oid is None:
        return (action["object"],)
    known = getattr(conn, "ancestors", None)
    ancestors = known.get(oid) if known is not None else None
    if ancestors is None:
        ancestors = tuple(r[0] for r in conn.execute(ANCESTORS_SQL, (oid,)))
        if known is not None:
            if len(known) >= OBJECT_CACHE_ENTRIES:
                known.clear()
            known[oid] = ancestors
    return (action["object"], *ancestors)


def _changed(conn, kind: str, action: dict) -> list:
    return [ActionChanged(kind, action, lineage(conn, action))]


# ---------------------------------------------------------------------------- actions

_INSERTED = [c for c in ACTION_COLUMNS if c != "id"] + ["doc"]
_BODY = _INSERTED.index("body")


def _row(action: dict) -> list:
    """The inserted values: the body only inside doc, not a second time in its own column (a
    retry of a 256 KB body would otherwise store it four times)."""
    values = [action[c] for c in _INSERTED]
    values[_BODY] = None
    return values
_INSERT_ACTION = (f"INSERT INTO actions ({', '.join(_INSERTED)}) "
                  f"VALUES ({', '.join('?' * len(_INSERTED))})")
_INSERT_ACTIONS = (f"INSERT INTO actions (id, {', '.join(_INSERTED)}) "
                   f"VALUES (?, {', '.join('?' * len(_INSERTED))})")


def _prepared_action(conn, record: dict) -> dict:
    """The row for a new action, its object and parent edges recorded, its JSON rendered."""
    action = {k: v for k, v in record.items() if k != "parents"}
    action["object_id"] = object_id(conn, action["object"])
    child = action["object_id"]
    for parent_uri in record.get("parents", ()):
        parent = object_id(conn, parent_uri)
        if parent is None or parent == child:
            continue
        if child is not None:
            add_parent(conn, child, parent)
        child = parent
    action["log_count"] = 0
    for flag in ("is_user_action", "cancelable", "retriable"):
        action[flag] = int(bool(action[flag]))
    action["doc"] = render_action(action)
    return action


def insert_action(conn, record):
    record = built(record)        # a function of the request's body, run here (interface.py)
    action = _prepared_action(conn, record)
    try:
        action["id"] = conn.execute(_INSERT_ACTION, _row(action)).lastrowid
    except sqlite3.IntegrityError:
        raise Conflict(f"an action with uuid {action['uuid']} already exists") from None
    tallies.apply(conn, [(None, action)])
    file_actions(conn, [action])
    tree.add(conn, action["id"], leaves.record_leaf(record))
    return action, _changed(conn, "create", action)


def insert_actions(conn, jobs: list[tuple]) -> list:
    """`insert_action` for many records in one statement run (the writer holds the write lock,
    so the ids after the highest are free). Raises on any conflict: the caller then runs the
    records one by one."""
    records = [built(record) for (record,) in jobs]   # one that raises: one by one, each its own
    first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM actions").fetchone()[0]
    actions = [_prepared_action(conn, record) for record in records]
    for offset, action in enumerate(actions):
        action["id"] = first + offset
    conn.executemany(_INSERT_ACTIONS, [[a["id"], *_row(a)] for a in actions])
    tallies.apply(conn, [(None, a) for a in actions])
    file_actions(conn, actions)
    tree.add_many(conn, [(a["id"], leaves.record_leaf(record))
                         for a, record in zip(actions, records)])
    return [(action, _changed(conn, "create", action)) for action in actions]


insert_action.bulk = insert_actions   # consecutive records in one batch go in together


def load_action(conn, uuid: str, namespaces) -> dict:
    row = conn.execute(SELECT_STORED + " WHERE uuid = ?", (uuid,)).fetchone()
    check_visible(uuid, row[2] if row else None, namespaces)
    return stored(row)


def set_state(conn, action: dict, state: str, cancel: bool = False):
    before, now, previous = action["state"], dates.now(), action
    action = moved(action, state, now)
    action["doc"] = render_action(action)
    conn.execute("UPDATE actions SET state = ?, end_ts = ?, doc = ? WHERE id = ?",
                 (state, action["end_ts"], action["doc"], action["id"]))
    tallies.apply(conn, [(previous, action)])
    tree.add(conn, action["id"], leaves.state_leaf(action["uuid"], before, state, now,
                                                   action["end_ts"], cancel))
    return action, _changed(conn, "update", action)


def change_state(conn, uuid, state, namespaces):
    action = load_action(conn, uuid, namespaces)
    check_move(action, state)
    return set_state(conn, action, state)


def cancel(conn, uuid, namespaces):
    action = load_action(conn, uuid, namespaces)
    return set_state(conn, action, cancel_state(action), cancel=True)


def retry(conn, uuid, namespaces, caller):
    original = load_action(conn, uuid, namespaces)
    record = retry_record(original, caller)
    tree.add(conn, original["id"], leaves.retry_leaf(original["uuid"], record["uuid"],
                                                     dates.now()))
    return insert_action(conn, record)


def append_logs(conn, uuid, lines, namespaces):
    row = conn.execute("SELECT id, namespace, log_count FROM actions WHERE uuid = ?",
                       (uuid,)).fetchone()
    check_visible(uuid, row[1] if row else None, namespaces)
    action_id, first = row[0], row[2] + 1
    stored = [(action_id, first + i, ts, stream, line) for i, (ts, stream, line) in enumerate(lines)]
    conn.executemany("INSERT INTO action_logs (action_id, seq, ts, stream_type, line) "
                     "VALUES (?, ?, ?, ?, ?)", stored)
    conn.execute("UPDATE actions SET log_count = ? WHERE id = ?", (row[2] + len(lines), action_id))
    # Several leaves for a big append: encoding a leaf holds the GIL, and a big append must not
    # stall everyone else for the length of one encoding (an empty append is no event).
    for start, end in leaf_batches(lines):
        tree.add(conn, action_id, leaves.logs_leaf(uuid, first + start, lines[start:end]))
    return len(lines), [LinesAppended(action_id, [s[1:] for s in stored])]


def leaf_batches(lines):
    """(start, end) of runs of at most LOGS_PER_LEAF lines and about LEAF_TEXT characters (a
    longer line is a leaf of its own)."""
    start = size = 0
    for at, (_, _, line) in enumerate(lines):
        if at > start and (at - start == LOGS_PER_LEAF or size + len(line) > LEAF_TEXT):
            yield start, at
            start, size = at, 0
        size += len(line)
    if start < len(lines):
        yield start, len(lines)


def probe_write(conn):
    """A write that changes nothing but goes to the disk like any other: does the database take
    writes again?"""
    conn.execute("UPDATE users SET created_at = created_at WHERE id = (SELECT min(id) FROM users)")
    return None, []
