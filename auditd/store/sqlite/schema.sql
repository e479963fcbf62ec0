-- auditd's whole SQLite schema. Applied to a new database; PRAGMA user_version records its
-- version (see auditd/store/sqlite/database.py: SCHEMA_VERSION and MIGRATIONS for later
-- versions). The top-level schema.sql of the source tree is a link to this file.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('user', 'producer', 'admin')),
    key_hash    TEXT    NOT NULL,          -- sha256 of the API key, hex; the key itself is never stored
    created_at  INTEGER NOT NULL
);

CREATE TABLE orgs (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE org_members (
    org_id      INTEGER NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;
CREATE INDEX org_members_by_user ON org_members (user_id, org_id);

-- The object graph: every resource URI an action targeted or named as a parent, in its
-- namespace-free form, and the child -> parent edges recorded from `parents`.
CREATE TABLE objects (
    id          INTEGER PRIMARY KEY,
    uri         TEXT    NOT NULL UNIQUE
);

CREATE TABLE object_parents (
    child_id    INTEGER NOT NULL REFERENCES objects (id),
    parent_id   INTEGER NOT NULL REFERENCES objects (id),
    PRIMARY KEY (child_id, parent_id)
) WITHOUT ROWID;
CREATE INDEX object_parents_by_parent ON object_parents (parent_id, child_id);
-- Moved whenever the graph changes (an edge added here, a reset in lifecycle.py): a walk of the
-- graph (reads.py, include_related with other filters) is remembered until it moves, across the
-- commits that only add actions.
CREATE TABLE graph_version (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    v           INTEGER NOT NULL
);
INSERT INTO graph_version (id, v) VALUES (1, 0);
CREATE TRIGGER graph_version_edge AFTER INSERT ON object_parents BEGIN
    UPDATE graph_version SET v = v + 1 WHERE id = 1;
END;

CREATE TABLE actions (
    id              INTEGER PRIMARY KEY,   -- recording order; ties on start_ts are broken by it
    uuid            TEXT    NOT NULL,      -- unique: see actions_uuid_unique below
    namespace       TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                        ('Pending', 'In progress', 'Canceling', 'Canceled', 'Success', 'Failed')),
    action          TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    object          TEXT    NOT NULL,      -- as recorded; object_id is its namespace-free identity
    object_id       INTEGER REFERENCES objects (id),
    user            TEXT    NOT NULL,
    user_agent      TEXT    NOT NULL,
    ip              TEXT    NOT NULL,
    location        TEXT    NOT NULL,
    body            TEXT,                  -- NULL: the body is in doc only (a copy in older rows)
    start_ts        INTEGER NOT NULL,      -- Unix seconds, UTC
    end_ts          INTEGER,
    is_user_action  INTEGER NOT NULL,
    cancelable      INTEGER NOT NULL,      -- the action's own flags; can_be_* also depend on state
    retriable       INTEGER NOT NULL,
    log_count       INTEGER NOT NULL DEFAULT 0,
    doc             TEXT    NOT NULL       -- the Action as sent on the wire, rendered at each write
);
-- The index each list shape reads (planner.py picks one per query): a leading equality, then
-- start_ts and id for the order, then the columns the other filters test, so the page and the
-- edges of a count are read from the index alone.
CREATE INDEX actions_by_time           ON actions (start_ts, id, uuid);
CREATE INDEX actions_by_namespace      ON actions (namespace, start_ts, id, uuid, is_user_action);
CREATE INDEX actions_by_namespace_state ON actions (namespace, state, start_ts, id, action, user,
                                                    is_user_action);
CREATE INDEX actions_by_state          ON actions (state, start_ts, id, action, user, is_user_action);
CREATE INDEX actions_by_object         ON actions (object_id, namespace, start_ts, id);
CREATE INDEX actions_by_end            ON actions (end_ts, namespace, state);
CREATE INDEX actions_by_action         ON actions (action, start_ts, id, state);
CREATE INDEX actions_by_namespace_action ON actions (namespace, action, start_ts, id, state);
CREATE INDEX actions_by_user           ON actions (user, start_ts, id, namespace, state);
CREATE INDEX actions_by_is_user_action ON actions (is_user_action, start_ts, id, state);
CREATE INDEX actions_by_uuid           ON actions (uuid, start_ts, namespace, state);
-- One index on uuid, not two: a UNIQUE constraint would keep an index of its own beside
-- actions_by_uuid, and each is a B-tree keyed at random that every record writes a page of
-- (with it, a record cost the writer ~12% more: BENCHMARKS.md). The trigger checks through
-- actions_by_uuid, on the leaf the insert then writes; the write lock makes it race-free.
-- Databases created before this keep their UNIQUE constraint (both hold the same rule).
CREATE TRIGGER actions_uuid_unique BEFORE INSERT ON actions
WHEN EXISTS (SELECT 1 FROM actions WHERE uuid = NEW.uuid) BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: actions.uuid');
END;
CREATE INDEX actions_by_uuid_prefix    ON actions (substr(uuid, 1, 2), start_ts, id, state, uuid);

CREATE TABLE action_logs (
    action_id   INTEGER NOT NULL REFERENCES actions (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,          -- 1, 2, 3... per action
    ts          INTEGER NOT NULL,
    stream_type TEXT,
    line        TEXT    NOT NULL,
    PRIMARY KEY (action_id, seq)
) WITHOUT ROWID;

-- Exact counts per namespace and state, kept by triggers, so total_count never rescans actions.
CREATE TABLE action_counts (
    namespace   TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (namespace, state)
) WITHOUT ROWID;

CREATE TRIGGER action_counts_insert AFTER INSERT ON actions BEGIN
    INSERT INTO action_counts (namespace, state, n) VALUES (NEW.namespace, NEW.state, 1)
        ON CONFLICT (namespace, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER action_counts_update AFTER UPDATE OF state, namespace ON actions
WHEN OLD.state IS NOT NEW.state OR OLD.namespace IS NOT NEW.namespace BEGIN
    UPDATE action_counts SET n = n - 1 WHERE namespace = OLD.namespace AND state = OLD.state;
    INSERT INTO action_counts (namespace, state, n) VALUES (NEW.namespace, NEW.state, 1)
        ON CONFLICT (namespace, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER action_counts_delete AFTER DELETE ON actions BEGIN
    UPDATE action_counts SET n = n - 1 WHERE namespace = OLD.namespace AND state = OLD.state;
END;

-- Exact counts per filter value and time bucket, one column per state, kept by the writer in
-- the transaction that changes the actions (auditd/model/tally.py says what each kind counts).
CREATE TABLE tallies (
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    pending     INTEGER NOT NULL DEFAULT 0,
    in_progress INTEGER NOT NULL DEFAULT 0,
    canceling   INTEGER NOT NULL DEFAULT 0,
    canceled    INTEGER NOT NULL DEFAULT 0,
    success     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key, bucket)
) WITHOUT ROWID;

-- The 68-minute buckets of the tallies that a burst filled, split for a start-time kind and key:
-- counted in 64-second and one-second buckets too, so a deep offset into them reads one second's
-- rows (auditd/model/tally.py). Split by the writer when a deep offset first finds one.
CREATE TABLE tally_splits (
    bucket  INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    PRIMARY KEY (bucket, kind, key)
) WITHOUT ROWID;

-- The uuid-prefix tallies' (kinds p and np) latest changes, added into them a thousand rows at a
-- time (tallies.py fold): counted at once, a record's random prefixes wrote two tally pages each.
-- A count of a prefix reads both, the journal's rows of that prefix through its index.
CREATE TABLE prefix_journal (
    kind        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    pending     INTEGER NOT NULL,
    in_progress INTEGER NOT NULL,
    canceling   INTEGER NOT NULL,
    canceled    INTEGER NOT NULL,
    success     INTEGER NOT NULL,
    failed      INTEGER NOT NULL
);
CREATE INDEX prefix_journal_by_key ON prefix_journal (kind, key);

-- Every action under each ancestor of its object, by start time (lineage.py): the related
-- actions of an object are one range of it. Kept by the writer with the actions and the graph.
CREATE TABLE action_ancestors (
    ancestor_id INTEGER NOT NULL,      -- an object the action's object descends from
    start_ts    INTEGER NOT NULL,
    action_id   INTEGER NOT NULL,
    namespace   TEXT    NOT NULL,      -- the action's, for a namespaced caller's page
    PRIMARY KEY (ancestor_id, start_ts, action_id)
) WITHOUT ROWID;
CREATE TABLE ancestor_counts (
    ancestor_id INTEGER NOT NULL,
    namespace   TEXT    NOT NULL,
    n           INTEGER NOT NULL,      -- rows of action_ancestors with this ancestor and namespace
    PRIMARY KEY (ancestor_id, namespace)
) WITHOUT ROWID;

-- The tamper-evident log (tree.py, docs/TRANSPARENCY.md): every immutable event is a leaf of an
-- RFC 9162 Merkle tree; the frontier and every 4th level's subtree roots make proofs cheap.
CREATE TABLE events (
    idx        INTEGER PRIMARY KEY,     -- leaf index + 1, in the order the leaves were added
    action_id  INTEGER NOT NULL,        -- the action it is about (kept after a purge)
    leaf       BLOB,                    -- the canonical leaf bytes; NULL once purged
    hash       BLOB NOT NULL            -- leaf_hash(leaf)
);
CREATE INDEX events_by_action ON events (action_id, idx);
CREATE TABLE tree_nodes (
    level      INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE tree_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    frontier   BLOB    NOT NULL         -- CompactRange.to_bytes()
);
INSERT INTO tree_state (id, frontier) VALUES (1, zeroblob(8));
CREATE TABLE checkpoints (
    tree_size  INTEGER PRIMARY KEY,
    root_hash  BLOB    NOT NULL,
    timestamp  INTEGER NOT NULL,
    document   TEXT    NOT NULL         -- the signed checkpoint as the API sends it (JSON)
);

-- Forwarding (auditd/tasks/forward): how far each sink has been given the events, advanced only
-- after the sink took them, and what happened last.
CREATE TABLE IF NOT EXISTS forward_positions (
    sink          TEXT    PRIMARY KEY,  -- the sink's name in the [[forward]] table
    position      INTEGER NOT NULL,     -- events.idx of the last event handled (0: none yet)
    started_at    INTEGER NOT NULL,     -- when the sink was first seen (Unix seconds)
    delivered     INTEGER NOT NULL DEFAULT 0,   -- events sent and taken so far
    last_success  REAL,                 -- when a batch was last taken (Unix seconds)
    last_error    TEXT,                 -- the last failure, as the sink answered it
    last_error_at REAL,
    errors        INTEGER NOT NULL DEFAULT 0    -- failed attempts so far
);
