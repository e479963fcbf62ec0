"""include_related on PostgreSQL: every action filed under each ancestor of its object
(`action_ancestors`), so that an object's related actions are one index range plus its own and
its ancestors' (a few objects, through action_keys' object index), instead of its descendants
found one by one and each probed.

X's related actions are those on X, on X's ancestors and on X's descendants: the last are
exactly the rows filed under X. Triggers keep the table in the writing transaction, as the
tallies are kept: an INSERT of actions (a record, the COPY of a batch, an import) files its rows
under their objects' ancestors; a new edge child -> parent files every action on the child or
below it under the parent and the parent's ancestors; a DELETE of actions (a purge) removes
their rows. Retention's month drop fires no trigger: partitions.py removes the month's rows
first (`FORGET_MONTH`), and the actions kept back go in again through the insert trigger.

With a cycle in the graph (bad data) an object can be its own descendant's ancestor: rows filed
under X whose action is on X or on one of X's ancestors are read from action_keys instead, so
no action is counted twice (the filed rows carry their object for that).

Between instances, the filing of an action and of a new edge must not miss each other: a
transaction adding an edge above an object and another recording an action on the object (or
below it), both in flight at once, would each miss the other's uncommitted row, and the action
would not be filed under the new ancestors. So a batch takes the graph's advisory lock before
anything else (writer.py): shared when it records actions, exclusive when it adds an edge. A
batch foresees which from its jobs (a record whose edges the writer has seen commits under the
shared lock); a job that meets a new edge anyway has the batch rolled back and run again under
the exclusive lock. Taken first and once, the lock closes no cycle of waits with the row locks.
Retention takes it shared too (a purge batch, a month dropped whole): a deleted action's filings
go with it, and a new edge must not be filing it again meanwhile.
"""

_UP = ("WITH RECURSIVE up(id) AS (SELECT root UNION "
       "SELECT p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id)")
_DOWN = ("WITH RECURSIVE down(id) AS (SELECT root UNION "
         "SELECT p.child_id FROM object_parents p JOIN down ON p.parent_id = down.id)")


# Each statement of these functions looks rows up by key, so index lookups are right at any
# size. A connection plans them once, often while the tables are nearly empty (a new database,
# with autovacuum off or not there yet, or an `auditd migrate` filling one), and keeps the plan:
# one that read a whole table then stayed, and every record read every edge (a migration of a
# million actions slowed to 90 a second). So they may not scan, hash or merge.
BY_INDEX = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
# (action_ancestors_inserted reads only its new rows and object_ancestors: it keeps the
# default, so that a batch's rows are joined with their ancestors by hash.)
FUNCTIONS = ("object_ancestors(bigint)", "object_descendants(bigint)",
             "action_ancestors_deleted()", "action_ancestors_edges()")
# An object's ancestors' URIs with their distance (the lineage a change event carries).
LINEAGE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION object_lineage(root bigint)
RETURNS TABLE (uri text, depth int, id bigint) LANGUAGE plpgsql STABLE {BY_INDEX} AS $$
BEGIN
    RETURN QUERY WITH RECURSIVE up(id, depth) AS (SELECT root, 0 UNION
        SELECT p.parent_id, up.depth + 1 FROM object_parents p JOIN up ON p.child_id = up.id
        WHERE up.depth < 32)
    SELECT o.uri, min(up.depth), up.id FROM up JOIN objects o ON o.id = up.id
    WHERE up.depth > 0 GROUP BY up.id, o.uri;
END $$;
"""


def _function(name: str, body: str) -> str:
    # The recursion's duplicate check sizes a hash for the rows the planner guesses, up to
    # work_mem: at the default 4 MB that took 6 ms of a 7 ms answer (it grows when it must).
    return (f"CREATE FUNCTION {name}(root bigint) RETURNS SETOF bigint LANGUAGE plpgsql STABLE "
            f"SET work_mem = '64kB' {BY_INDEX} AS $$\nBEGIN\n    RETURN QUERY {body};\n"
            "END $$;\n")


def _filed(source: str) -> str:
    """The rows that file the actions of `source` (id, start_ts, namespace, object_id) under
    their objects' ancestors, each object's ancestors found once."""
    return (
        "SELECT u.ancestor AS ancestor_id, n.start_ts, n.id, n.namespace, n.object_id "
        f"FROM ({source}) AS n JOIN (SELECT o.object_id, object_ancestors(o.object_id) AS "
        f"ancestor FROM (SELECT DISTINCT object_id FROM ({source}) AS s WHERE object_id IS NOT "
        "NULL) AS o) AS u ON u.object_id = n.object_id")


def _file(source: str) -> str:
    return ("INSERT INTO action_ancestors (ancestor_id, start_ts, id, namespace, object_id) "
            f"{_filed(source)} ON CONFLICT DO NOTHING")


_NEW_ACTIONS = "SELECT id, start_ts, namespace, object_id FROM new_rows"
_KEYS = "SELECT id, start_ts, namespace, object_id FROM action_keys"

SCHEMA = (
    """
CREATE TABLE action_ancestors (
    ancestor_id bigint NOT NULL,       -- an object the action's object descends from
    start_ts    bigint NOT NULL,
    id          bigint NOT NULL,       -- the action
    namespace   text COLLATE "C" NOT NULL,
    object_id   bigint NOT NULL,       -- the action's object (a cycle: see lineage.py)
    PRIMARY KEY (ancestor_id, start_ts, id)
);
CREATE INDEX action_ancestors_by_action ON action_ancestors (id);
"""
    + _function("object_ancestors", _UP + " SELECT up.id FROM up WHERE up.id <> root")
    + _function("object_descendants", _DOWN + " SELECT down.id FROM down WHERE down.id <> root")
    + LINEAGE_FUNCTION
    + f"""
CREATE FUNCTION action_ancestors_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_file(_NEW_ACTIONS)};
    RETURN NULL;
END $$;
CREATE FUNCTION action_ancestors_deleted() RETURNS trigger LANGUAGE plpgsql {BY_INDEX} AS $$
BEGIN
    DELETE FROM action_ancestors f USING old_rows o WHERE f.id = o.id;
    RETURN NULL;
END $$;
CREATE FUNCTION action_ancestors_edges() RETURNS trigger LANGUAGE plpgsql {BY_INDEX} AS $$
BEGIN
    INSERT INTO action_ancestors (ancestor_id, start_ts, id, namespace, object_id)
    SELECT u.ancestor, k.start_ts, k.id, k.namespace, k.object_id FROM new_rows e
    CROSS JOIN LATERAL (SELECT e.parent_id UNION SELECT object_ancestors(e.parent_id))
        AS u(ancestor)
    CROSS JOIN LATERAL (SELECT e.child_id UNION SELECT object_descendants(e.child_id))
        AS d(object_id)
    JOIN action_keys k ON k.object_id = d.object_id
    WHERE u.ancestor <> k.object_id
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER action_ancestors_insert AFTER INSERT ON actions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION action_ancestors_inserted();
CREATE TRIGGER action_ancestors_delete AFTER DELETE ON actions REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION action_ancestors_deleted();
CREATE TRIGGER action_ancestors_edge AFTER INSERT ON object_parents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION action_ancestors_edges();
""")

# The migration: the table, then every action with an object filed (from action_keys, whose
# object columns the same migration fills first).
MIGRATION = SCHEMA + _file(_KEYS) + ";\nANALYZE action_ancestors;\n"

# Schema 7: the functions of schema 6 planned by index (BY_INDEX), and the lineage's walk one
# of them (it was a statement the writer's connection planned once).
INDEXED = "".join(f"ALTER FUNCTION {name} {BY_INDEX};\n" for name in FUNCTIONS) + \
    LINEAGE_FUNCTION

# Retention: the month's rows, found through its keys (before those go).
FORGET_MONTH = ("DELETE FROM action_ancestors f USING action_keys k WHERE k.start_ts >= $1 "
                "AND k.start_ts < $2 AND f.id = k.id")

# `auditd check`: (rows missing, rows extra) against the graph and the actions now.
_ROWS = "SELECT ancestor_id, start_ts, id, namespace, object_id FROM "
MISMATCH_SQL = (
    f"WITH want AS MATERIALIZED ({_filed(_KEYS)}) "
    f"SELECT (SELECT count(*) FROM ({_ROWS}want EXCEPT {_ROWS}action_ancestors) AS m), "
    f"(SELECT count(*) FROM ({_ROWS}action_ancestors EXCEPT {_ROWS}want) AS x)")
