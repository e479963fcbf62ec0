"""Opening a PostgreSQL database: connections, the schema (schema.sql beside this file) and its
migrations by version (the schema_version table). The monthly partitions are partitions.py's."""
import asyncio
import logging
import re
from pathlib import Path

import asyncpg

from ...model.errors import SchemaVersionError, Unavailable
from . import lineage, tallies

log = logging.getLogger("auditd.store")
# What a schema migration is doing, shown by every command that opens an older database
# (cli/common.py show_migrations): some take a minute on ten million actions.
progress = logging.getLogger("auditd.store.migrate")

SCHEMA_VERSION = 7
MIGRATION_TIMEOUT = 24 * 3600.0   # seconds; connect()'s command_timeout is 60
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
# MIGRATIONS[v] turns a version-v database into version v+1; schema.sql is always the newest.
MIGRATIONS: dict[int, str] = {
    # 2: log lines partitioned by month like their actions (so retention drops them with their
    # month), carrying the action's start_ts; action_keys indexed by start_ts.
    1: """
ALTER TABLE action_logs RENAME TO action_logs_v1;
ALTER TABLE action_logs_v1 RENAME CONSTRAINT action_logs_pkey TO action_logs_v1_pkey;
CREATE TABLE action_logs (
    action_id   bigint NOT NULL,
    start_ts    bigint NOT NULL,
    seq         integer NOT NULL,
    ts          bigint NOT NULL,
    stream_type text,
    line        text NOT NULL,
    PRIMARY KEY (action_id, seq, start_ts)
) PARTITION BY RANGE (start_ts);
CREATE TABLE action_logs_default PARTITION OF action_logs DEFAULT;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'actions'::regclass AND c.relname ~ '^actions_[0-9]{4}_[0-9]{2}$'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF action_logs %s',
                       'action_logs_' || substr(r.relname, 9), r.bound);
    END LOOP;
END $$;
INSERT INTO action_logs (action_id, start_ts, seq, ts, stream_type, line)
    SELECT l.action_id, k.start_ts, l.seq, l.ts, l.stream_type, l.line
    FROM action_logs_v1 l JOIN action_keys k ON k.id = l.action_id;
DROP TABLE action_logs_v1;
CREATE INDEX action_keys_by_start ON action_keys (start_ts);
""",
    # 3: indexes for the filters by action, user and is_user_action (issue 11).
    2: """
CREATE INDEX actions_by_action          ON actions (action, start_ts, id);
CREATE INDEX actions_by_namespace_action ON actions (namespace, action, start_ts, id);
CREATE INDEX actions_by_user            ON actions ("user", start_ts, id);
CREATE INDEX actions_by_is_user_action  ON actions (is_user_action, start_ts, id);
""",
    # 4: tallies, kept by triggers, so that a filter's exact count reads counters (tallies.py);
    # every action is counted into them once (116 s for a million on the benchmark VM).
    3: tallies.MIGRATION,
    # 5: action_keys carry the action's object and namespace, indexed, so that an object's
    # actions (and an include_related list's) are found in one index instead of one per month
    # (20 s for a million on the benchmark VM); include_related's objects by a function
    # (schema 6 replaces it with lineage.py's).
    4: """
CREATE FUNCTION related_objects(root bigint) RETURNS SETOF bigint LANGUAGE plpgsql STABLE
SET work_mem = '64kB' AS $$
BEGIN
    RETURN QUERY WITH RECURSIVE up(id) AS (SELECT root UNION
        SELECT p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id),
    down(id) AS (SELECT root UNION
        SELECT p.child_id FROM object_parents p JOIN down ON p.parent_id = down.id)
    SELECT up.id FROM up UNION ALL SELECT down.id FROM down;
END $$;
ALTER TABLE action_keys ADD COLUMN object_id bigint, ADD COLUMN namespace text COLLATE "C";
UPDATE action_keys k SET object_id = a.object_id, namespace = a.namespace FROM actions a
    WHERE a.id = k.id AND a.start_ts = k.start_ts AND a.object_id IS NOT NULL;
CREATE INDEX action_keys_by_object ON action_keys (object_id, namespace, start_ts, id)
    WHERE object_id IS NOT NULL;
ANALYZE action_keys;
""",
    # 6: every action filed under its object's ancestors, so that include_related reads one
    # index range for the descendants' actions (lineage.py; 20 s for a million). Lists by
    # object read action_keys' object index: the actions' own is no longer used.
    5: "DROP FUNCTION related_objects(bigint);\nDROP INDEX actions_by_object;\n"
       + lineage.MIGRATION,
    # 7: the graph's walks never scan a whole table, whatever plan a connection made while
    # the tables were small (lineage.BY_INDEX); a change event's lineage is one of them.
    6: lineage.INDEXED,
}

# Advisory lock keys ("audi", "audc", "audl"): schema work and partition upkeep; the change
# log; the object graph (writer.py's SHARED and EXCLUSIVE, lineage.py).
SCHEMA_LOCK = 0x61756469
CHANGES_LOCK = 0x61756463
LINEAGE_LOCK = 0x6175646c

DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


async def connect(url: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(url, timeout=10, command_timeout=60)
    except asyncpg.InvalidCatalogNameError as err:
        raise Unavailable(f"{redact(url)}: {err}; create it first (createdb NAME, or "
                          "CREATE DATABASE in psql)") from None
    except DB_ERRORS as err:
        raise Unavailable(f"cannot connect to PostgreSQL at {redact(url)}: {err or type(err)}; "
                          "is the server running and does --db name it?") from None
    # Every acknowledged write survives a crash of PostgreSQL: group commit pays for it.
    await conn.execute("SET synchronous_commit = on")
    return conn


async def prepare_database(conn, url: str) -> int:
    """Create or migrate the schema; refuse a database from a newer auditd or one with other
    tables. Returns the version. Several instances starting at once take turns (advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        if not await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            tables = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            if tables:
                raise SchemaVersionError(
                    f"{redact(url)} has tables but is not auditd's (no schema_version table): "
                    "point --db at a new database (createdb auditd)")
            await conn.execute(SCHEMA_FILE.read_text() + tallies.SCHEMA + lineage.SCHEMA)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
            return SCHEMA_VERSION
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{redact(url)} has schema version {version}, but this auditd knows versions up "
                f"to {SCHEMA_VERSION}: run a newer auditd")
        while version < SCHEMA_VERSION:
            progress.info("migrating %s from schema version %d to %d", redact(url), version,
                          version + 1)
            # a migration may rewrite or index every row: no statement time limit
            await conn.execute(MIGRATIONS[version], timeout=MIGRATION_TIMEOUT)
            version += 1
            await conn.execute("UPDATE schema_version SET version = $1", version)
        return version
