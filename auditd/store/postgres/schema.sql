-- auditd's whole PostgreSQL schema. Applied to a database without auditd's tables; the
-- schema_version table records its version (see auditd/store/postgres/database.py:
-- SCHEMA_VERSION and MIGRATIONS for later versions). Text that is compared or sorted is
-- COLLATE "C", so that it orders byte by byte as SQLite does.

CREATE TABLE schema_version (
    version     integer NOT NULL
);

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    name        text COLLATE "C" NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('user', 'producer', 'admin')),
    key_hash    text NOT NULL,             -- sha256 of the API key, hex; the key is never stored
    created_at  bigint NOT NULL
);

CREATE TABLE orgs (
    id          bigserial PRIMARY KEY,
    name        text COLLATE "C" NOT NULL UNIQUE,
    created_at  bigint NOT NULL
);

CREATE TABLE org_members (
    org_id      bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON org_members (user_id, org_id);

-- The object graph: every resource URI an action targeted or named as a parent, namespace-free,
-- and the child -> parent edges recorded from `parents`.
CREATE TABLE objects (
    id          bigserial PRIMARY KEY,
    uri         text COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE object_parents (
    child_id    bigint NOT NULL REFERENCES objects (id),
    parent_id   bigint NOT NULL REFERENCES objects (id),
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX object_parents_by_parent ON object_parents (parent_id, child_id);

-- Actions, partitioned by month of start_ts (database.py creates the monthly partitions, each
-- with action_logs' partition of the same month; rows outside them go to actions_default). A
-- partitioned table's unique keys must contain the partition key, so uuid uniqueness (and the
-- uuid -> row lookup) is action_keys' job.
CREATE SEQUENCE actions_id_seq;
CREATE TABLE actions (
    id              bigint NOT NULL,       -- recording order; ties on start_ts are broken by it
    uuid            text COLLATE "C" NOT NULL,
    namespace       text COLLATE "C" NOT NULL,
    state           text NOT NULL CHECK (state IN
                        ('Pending', 'In progress', 'Canceling', 'Canceled', 'Success', 'Failed')),
    action          text NOT NULL,
    method          text NOT NULL,
    path            text NOT NULL,
    object          text NOT NULL,         -- as recorded; object_id is its namespace-free identity
    object_id       bigint,
    "user"          text NOT NULL,
    user_agent      text NOT NULL,
    ip              text NOT NULL,
    location        text NOT NULL,
    body            text,
    start_ts        bigint NOT NULL,       -- Unix seconds, UTC
    end_ts          bigint,
    is_user_action  smallint NOT NULL,
    cancelable      smallint NOT NULL,     -- the action's own flags; can_be_* also depend on state
    retriable       smallint NOT NULL,
    log_count       integer NOT NULL DEFAULT 0,
    doc             text NOT NULL,         -- the Action as sent on the wire, rendered at each write
    PRIMARY KEY (id, start_ts)
) PARTITION BY RANGE (start_ts);
CREATE TABLE actions_default PARTITION OF actions DEFAULT;
CREATE INDEX actions_by_time            ON actions (start_ts, id);
CREATE INDEX actions_by_namespace       ON actions (namespace, start_ts, id);
CREATE INDEX actions_by_namespace_state ON actions (namespace, state, start_ts, id);
CREATE INDEX actions_by_state           ON actions (state, start_ts, id);
CREATE INDEX actions_by_end             ON actions (end_ts);
CREATE INDEX actions_by_uuid            ON actions (uuid);
-- The filters by action, user and is_user_action (issue 11): the page walks one of these in
-- start_ts order and the count reads only its entries, instead of every partition's rows.
CREATE INDEX actions_by_action          ON actions (action, start_ts, id);
CREATE INDEX actions_by_namespace_action ON actions (namespace, action, start_ts, id);
CREATE INDEX actions_by_user            ON actions ("user", start_ts, id);
CREATE INDEX actions_by_is_user_action  ON actions (is_user_action, start_ts, id);

CREATE TABLE action_keys (
    uuid        text COLLATE "C" PRIMARY KEY,
    id          bigint NOT NULL UNIQUE,
    start_ts    bigint NOT NULL,
    object_id   bigint,                -- the action's object and namespace (NULL: no object),
    namespace   text COLLATE "C"       -- so that an object's actions are one index, not one
);                                     -- per month (schema 5)
CREATE INDEX action_keys_by_start ON action_keys (start_ts);   -- a month's keys, for retention
CREATE INDEX action_keys_by_object ON action_keys (object_id, namespace, start_ts, id)
    WHERE object_id IS NOT NULL;

-- Log lines, partitioned like their actions (by the action's start_ts, in the same months), so
-- that retention drops a month's lines with its actions. Every line is written after its action
-- is read and locked, and removed with it (no foreign key: dropping a month's partitions must
-- not visit its lines one by one); `auditd check` looks for lines without an action.
CREATE TABLE action_logs (
    action_id   bigint NOT NULL,
    start_ts    bigint NOT NULL,           -- the action's
    seq         integer NOT NULL,          -- 1, 2, 3... per action
    ts          bigint NOT NULL,
    stream_type text,
    line        text NOT NULL,
    PRIMARY KEY (action_id, seq, start_ts)
) PARTITION BY RANGE (start_ts);
CREATE TABLE action_logs_default PARTITION OF action_logs DEFAULT;

-- Exact counts per namespace and state, kept by triggers in the writing transaction, so
-- total_count never scans actions.
CREATE TABLE action_counts (
    namespace   text COLLATE "C" NOT NULL,
    state       text NOT NULL,
    n           bigint NOT NULL,
    PRIMARY KEY (namespace, state)
);

CREATE FUNCTION action_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE action_counts SET n = n - 1 WHERE namespace = OLD.namespace AND state = OLD.state;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO action_counts (namespace, state, n) VALUES (NEW.namespace, NEW.state, 1)
            ON CONFLICT (namespace, state) DO UPDATE SET n = action_counts.n + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER action_counts_rows AFTER INSERT OR DELETE ON actions
    FOR EACH ROW EXECUTE FUNCTION action_counts_change();
CREATE TRIGGER action_counts_update AFTER UPDATE OF state, namespace ON actions
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state
                       OR OLD.namespace IS DISTINCT FROM NEW.namespace)
    EXECUTE FUNCTION action_counts_change();

-- The change log: one row per write transaction that other instances must hear about, with
-- pointers to what changed (see changes.py). Written under an advisory lock, so ids are in
-- commit order; NOTIFY auditd_changes carries only the id.
CREATE TABLE changes (
    id          bigserial PRIMARY KEY,
    origin      text NOT NULL,             -- the writing store's random id
    at          timestamptz NOT NULL DEFAULT now(),
    items       jsonb NOT NULL
);
