"""`action_ancestors`: every action under each of its object's ancestors, by start time, so that
`?object=X&include_related=true` reads one index range instead of probing every object below X;
`ancestor_counts`: how many rows each ancestor has per namespace, so its count is a few rows.

X's related actions are those on X, on X's ancestors (a few objects, read through
actions_by_object) and on X's descendants: exactly the actions filed under X here. The writer
keeps the table in the transaction that changes the actions or the object graph: a new action is
filed under its object's ancestors; a new edge files every action below the child under the
parent and the parent's ancestors; a purge removes the purged actions' rows. With a cycle in the
graph (bad data) the two parts overlap, and the reader falls back to probing every object.
"""
import logging
import time

from .listing import page_sql

progress = logging.getLogger("auditd.store.migrate")   # shown by the CLI: database.py

SCHEMA = """
CREATE TABLE IF NOT EXISTS action_ancestors (
    ancestor_id INTEGER NOT NULL,      -- an object the action's object descends from
    start_ts    INTEGER NOT NULL,
    action_id   INTEGER NOT NULL,
    namespace   TEXT    NOT NULL,      -- the action's, for a namespaced caller's page
    PRIMARY KEY (ancestor_id, start_ts, action_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ancestor_counts (
    ancestor_id INTEGER NOT NULL,
    namespace   TEXT    NOT NULL,
    n           INTEGER NOT NULL,      -- rows of action_ancestors with this ancestor and namespace
    PRIMARY KEY (ancestor_id, namespace)
) WITHOUT ROWID"""

CACHE_ENTRIES = 100_000
# Walks of the graph go as far as it goes, as PostgreSQL's do (postgres/lineage.py): UNION keeps
# each object once, so a cycle (bad data) ends a walk too. (Up to 2026-12-05 they stopped 32
# objects away, except a new edge's filing, which joined 32 below with 32 above: two deep
# chains joined were filed further than `rebuild` and `auditd check` counted.)
_UP = ("WITH RECURSIVE up(id) AS (SELECT ? UNION SELECT p.parent_id "
       "FROM object_parents p JOIN up ON p.child_id = up.id) ")
ANCESTOR_IDS_SQL = _UP + "SELECT id FROM up WHERE id != ?"
_INSERT = ("INSERT OR IGNORE INTO action_ancestors (ancestor_id, start_ts, action_id, namespace) "
           "VALUES (?, ?, ?, ?)")
# A new edge child -> parent: every action on the child or below it, under the parent and above
# ({above}: the parent and its ancestors, found once and counted again after).
_FILE_SUBTREE = (
    "INSERT OR IGNORE INTO action_ancestors (ancestor_id, start_ts, action_id, namespace) "
    "WITH RECURSIVE down(id) AS (SELECT ? UNION SELECT p.child_id "
    "FROM object_parents p JOIN down ON p.parent_id = down.id) "
    "SELECT up.id, a.start_ts, a.id, a.namespace FROM down d "
    "JOIN actions a ON a.object_id = d.id, objects up WHERE up.id IN ({above})")


def ancestor_ids(conn, oid: int) -> tuple[int, ...]:
    """The object's ancestors' ids (not its own), remembered by the writer connection until an
    edge is added."""
    known = getattr(conn, "ancestor_ids", None)
    found = known.get(oid) if known is not None else None
    if found is None:
        found = tuple(r[0] for r in conn.execute(ANCESTOR_IDS_SQL, (oid, oid)))
        if known is not None:
            if len(known) >= CACHE_ENTRIES:
                known.clear()
            known[oid] = found
    return found


_COUNT = ("INSERT INTO ancestor_counts (ancestor_id, namespace, n) VALUES (?, ?, ?) "
          "ON CONFLICT (ancestor_id, namespace) DO UPDATE SET n = n + excluded.n")


def _count(conn, rows, sign: int):
    """Move ancestor_counts by the (ancestor, start_ts, action id, namespace) rows filed (+1)
    or removed (-1)."""
    counts: dict = {}
    for ancestor, _, _, namespace in rows:
        counts[ancestor, namespace] = counts.get((ancestor, namespace), 0) + sign
    conn.executemany(_COUNT, [(*key, n) for key, n in counts.items()])
    if sign < 0:
        conn.executemany("DELETE FROM ancestor_counts WHERE ancestor_id = ? AND namespace = ? "
                         "AND n = 0", list(counts))


def file_actions(conn, actions):
    """File new actions (dicts with id, object_id, start_ts, namespace) under their ancestors."""
    rows = [(ancestor, a["start_ts"], a["id"], a["namespace"]) for a in actions
            if a["object_id"] is not None for ancestor in ancestor_ids(conn, a["object_id"])]
    if rows:
        conn.executemany(_INSERT, rows)     # a new action's rows are new: each one counts
        _count(conn, rows, 1)


def file_subtree(conn, child: int, parent: int):
    """After a new edge child -> parent: file what lies below the child under what lies above,
    and count those ancestors again (some of the rows may have been there through another
    path)."""
    above = [r[0] for r in conn.execute(_UP + "SELECT id FROM up", (parent,))]
    marks = ", ".join("?" * len(above))
    conn.execute(_FILE_SUBTREE.format(above=marks), (child, *above))
    conn.execute(f"DELETE FROM ancestor_counts WHERE ancestor_id IN ({marks})", above)
    conn.execute(f"INSERT INTO ancestor_counts (ancestor_id, namespace, n) SELECT ancestor_id, "
                 f"namespace, count(*) FROM action_ancestors WHERE ancestor_id IN ({marks}) "
                 "GROUP BY ancestor_id, namespace", above)


def unfile(conn, actions):
    """Remove purged actions' rows: [(action id, object id, start_ts, namespace)]."""
    rows = [(ancestor, start_ts, action_id, namespace)
            for action_id, oid, start_ts, namespace in actions
            if oid is not None for ancestor in ancestor_ids(conn, oid)]
    if rows:
        conn.executemany("DELETE FROM action_ancestors WHERE ancestor_id = ? AND start_ts = ? "
                         "AND action_id = ?", [row[:3] for row in rows])
        _count(conn, rows, -1)


# Every action under each ancestor of its object, from the graph: what the table should hold.
_ABOVE = (
    "WITH RECURSIVE up(object_id, id) AS (SELECT child_id, parent_id FROM "
    "object_parents UNION SELECT up.object_id, p.parent_id FROM object_parents "
    "p JOIN up ON p.child_id = up.id) ")
_UNDER = ("SELECT up.id, a.start_ts, a.id, a.namespace FROM up "
          "JOIN actions a INDEXED BY actions_by_object ON a.object_id = up.object_id")
_FILED = _ABOVE + _UNDER
_COUNTED = ("SELECT ancestor_id, namespace, count(*) FROM action_ancestors "
            "GROUP BY ancestor_id, namespace")
_FILED_ROWS = "SELECT ancestor_id, start_ts, action_id, namespace FROM action_ancestors"


def mismatches(conn) -> list[str]:
    """The filing against the graph and the actions, and its counts against the filing, for
    `auditd check` (nothing is changed)."""
    missing, extra = conn.execute(
        f"{_ABOVE}, filed AS ({_UNDER}) SELECT (SELECT count(*) FROM "
        f"(SELECT * FROM filed EXCEPT {_FILED_ROWS})), (SELECT count(*) FROM ({_FILED_ROWS} "
        "EXCEPT SELECT * FROM filed))").fetchone()
    problems = []
    if missing or extra:
        problems.append(f"actions filed under their objects' ancestors (include_related): "
                        f"{missing} missing, {extra} that should not be there")
    wrong = conn.execute(
        "SELECT count(*) FROM (SELECT ancestor_id, namespace FROM (SELECT ancestor_id, "
        "namespace, n AS kept, 0 AS real FROM ancestor_counts UNION ALL SELECT ancestor_id, "
        "namespace, 0, count(*) FROM action_ancestors GROUP BY ancestor_id, namespace) "
        "GROUP BY 1, 2 HAVING sum(kept) != sum(real))").fetchone()[0]
    if wrong:
        problems.append(f"{wrong} of include_related's counts (ancestor_counts) differ from "
                        "the actions filed")
    return problems


def rebuild(conn):
    """File every action again (the migration that brings the table to an older database)."""
    started = time.monotonic()
    conn.execute("DELETE FROM action_ancestors")
    conn.execute("DELETE FROM ancestor_counts")
    conn.execute("INSERT OR IGNORE INTO action_ancestors (ancestor_id, start_ts, action_id, "
                 "namespace) " + _FILED)
    conn.execute("INSERT INTO ancestor_counts (ancestor_id, namespace, n) " + _COUNTED)
    rows = conn.execute("SELECT count(*) FROM action_ancestors").fetchone()[0]
    progress.info("filed actions under their objects' ancestors: %d rows (%.0f s)", rows,
                  time.monotonic() - started)


# ---------------------------------------------------------------------------- reading

# X and its ancestors, and whether X descends from one of them (a cycle: bad data), without
# walking X's descendants, which a service redeployed for a year counts by the 100,000: each
# ancestor Y but X is walked up again from Y's parents, and X found there means Y is also among
# X's descendants, the overlap that makes the filing count some actions twice.
ANCESTRY_SQL = (
    _UP + ", back(id) AS (SELECT p.parent_id FROM up JOIN object_parents p ON p.child_id = "
    "up.id WHERE up.id != ? UNION SELECT p.parent_id FROM object_parents p JOIN back ON "
    "p.child_id = back.id) "
    "SELECT 0, id FROM up UNION ALL "
    "SELECT 1, EXISTS (SELECT 1 FROM back WHERE id = ?)")

# X, its ancestors and its descendants, in id order.
RELATED_IDS_SQL = (
    _UP + ", down(id) AS (SELECT ? UNION SELECT p.child_id FROM "
    "object_parents p JOIN down ON p.parent_id = down.id) "
    "SELECT id FROM up UNION SELECT id FROM down ORDER BY id")


def ancestry(rows) -> tuple[list, bool]:
    """(X and its ancestors, whether a cycle runs through X) from ANCESTRY_SQL's rows."""
    return [oid for part, oid in rows if part == 0], any(part == 1 and v for part, v in rows)


def run(conn, target: int, up: list, names, limit: int, offset: int, newest_first: bool,
        cursor) -> tuple[int, tuple | None]:
    """(total, `listing.page_sql`'s row or None) of X's related actions: those filed under X,
    plus those on X and its ancestors, in one read transaction."""
    ns = f" AND namespace IN ({', '.join('?' * len(names))})" if names is not None else ""
    ns_params = list(names) if names is not None else []
    objects = ", ".join("?" * len(up))
    total = conn.execute(
        f"SELECT (SELECT coalesce(sum(n), 0) FROM ancestor_counts WHERE ancestor_id = ?{ns}) + "
        f"(SELECT count(*) FROM actions INDEXED BY actions_by_object WHERE object_id IN "
        f"({objects}){ns})", [target, *ns_params, *up, *ns_params]).fetchone()[0]
    if offset >= total and cursor is None:
        return total, None
    order = "DESC" if newest_first else "ASC"
    after, after_params = "", []
    if cursor is not None:
        after, after_params = f" AND (start_ts, {{id}}) {'<' if newest_first else '>'} (?, ?)", \
            list(cursor)
    n = offset + limit
    below = (f"SELECT * FROM (SELECT action_id AS id, start_ts FROM action_ancestors WHERE "
             f"ancestor_id = ?{ns}{after.format(id='action_id')} "
             f"ORDER BY start_ts {order}, action_id {order} LIMIT ?)")
    above = (f"SELECT * FROM (SELECT id, start_ts FROM actions INDEXED BY actions_by_object "
             f"WHERE object_id IN ({objects}){ns}{after.format(id='id')} "
             f"ORDER BY start_ts {order}, id {order} LIMIT ?)")
    keys = (f"SELECT id, start_ts FROM ({below} UNION ALL {above}) "
            f"ORDER BY start_ts {order}, id {order} LIMIT ? OFFSET ?")
    params = [target, *ns_params, *after_params, n, *up, *ns_params, *after_params, n,
              limit, offset]
    return total, conn.execute(page_sql(keys, newest_first), params).fetchone()
