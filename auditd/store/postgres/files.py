"""The operations on the database as a whole that must not open it as a store: exists,
describe, backup (PostgreSQL's own tools do it) and check. None of them creates or changes
anything."""
import asyncio
import threading

from ...model.actions import STATES
from ...model.errors import AuditdError, Unavailable
from . import lineage, tallies
from .database import DB_ERRORS, SCHEMA_VERSION, connect, redact


def _run(coro):
    """Run a coroutine to its end from synchronous code, also when a loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}
    thread = threading.Thread(target=lambda: box.update(value=asyncio.run(coro)))
    thread.start()
    thread.join()
    return box["value"]


def exists(db: str) -> bool:
    """Whether the database answers and holds auditd's schema."""
    async def look():
        try:
            conn = await connect(db)
        except Unavailable:
            return False
        try:
            return await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        finally:
            await conn.close()
    return _run(look())


def describe(db: str) -> str:
    return f"PostgreSQL database {redact(db)}"


def backup(db: str, target: str) -> dict:
    raise AuditdError(
        "'auditd backup' copies SQLite files; for PostgreSQL use its own tools, which copy a "
        f"running database consistently: pg_dump --format=custom --file={target} '{redact(db)}' "
        f"(restore with: pg_restore --dbname=NEWDB {target})")


async def _summary(conn) -> dict:
    version = await conn.fetchval("SELECT version FROM schema_version")
    counts = {}
    for table in ("action_keys", "action_logs", "users", "orgs", "objects"):
        counts["actions" if table == "action_keys" else table] = \
            await conn.fetchval(f"SELECT count(*) FROM {table}")
    states = dict.fromkeys(STATES, 0)
    states.update({r[0]: r[1] for r in await conn.fetch(
        "SELECT state, count(*) FROM actions GROUP BY state")})
    return {"schema_version": version, "counts": counts, "states": states}


async def _check(db: str, say) -> dict:
    empty = {"schema_version": None, "counts": {}, "states": {}}
    try:
        conn = await connect(db)
    except Unavailable as err:
        return {"problems": [err.message], **empty}
    try:
        if not await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            return {"problems": ["no schema_version table: this is not an auditd database"],
                    **empty}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            summary = await _summary(conn)   # one snapshot for every count
            problems = []
            version = summary["schema_version"]
            if version is None or version > SCHEMA_VERSION:
                problems.append(f"schema version {version} is not one this auditd knows "
                                f"(up to {SCHEMA_VERSION}): check it with a newer auditd")
                return {"problems": problems, **summary}
            problems += await _mismatches(conn, summary, say)
        return {"problems": problems, **summary}
    except DB_ERRORS as err:
        return {"problems": [f"the database cannot be read: {err}"], **empty}
    finally:
        await conn.close()


async def _mismatches(conn, summary, say) -> list[str]:
    """auditd's invariants: the counters against the rows, every action with its key and every
    key with its action, every line with its action and log_count covering it."""
    say("the counts per namespace and state, and the tallies, against the actions")
    problems = [
        f"action_counts says {r[2]} {r[1]} actions in namespace '{r[0]}', there are {r[3]}"
        for r in await conn.fetch(
            "SELECT namespace, state, sum(kept), sum(real) FROM ("
            "  SELECT namespace, state, n AS kept, 0 AS real FROM action_counts UNION ALL "
            "  SELECT namespace, state, 0, count(*) FROM actions GROUP BY namespace, state) c "
            "GROUP BY namespace, state HAVING sum(kept) != sum(real)")]
    wrong = await conn.fetch(tallies.mismatch_sql())
    if wrong:
        kind, key, bucket, state, kept, real = wrong[0]
        problems.append(f"{len(wrong)} tallies differ from the actions they count (the first: "
                        f"kind '{kind}', key {key!r}, bucket {bucket}, {state}: {kept}, there "
                        f"are {real})")
    rows = await conn.fetchval("SELECT count(*) FROM actions")
    if rows != summary["counts"]["actions"]:
        problems.append(f"{rows} action rows but {summary['counts']['actions']} uuid keys")
    unkeyed, misfiled = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE k.id IS NULL), count(*) FILTER (WHERE k.id IS NOT NULL "
        "AND (k.object_id IS DISTINCT FROM a.object_id OR k.namespace IS DISTINCT FROM "
        "CASE WHEN a.object_id IS NOT NULL THEN a.namespace END)) FROM actions a "
        "LEFT JOIN action_keys k ON k.id = a.id AND k.start_ts = a.start_ts AND k.uuid = a.uuid")
    if unkeyed:
        problems.append(f"{unkeyed} actions have no matching action_keys row")
    if misfiled:
        problems.append(f"{misfiled} action_keys rows name another object or namespace than "
                        "their action's")
    say("include_related's filing, against the object graph; the log lines")
    missing, extra = await conn.fetchrow(lineage.MISMATCH_SQL)
    if missing or extra:
        problems.append(f"actions filed under their objects' ancestors (include_related): "
                        f"{missing} missing, {extra} that should not be there")
    beyond = await conn.fetchval(
        "SELECT count(*) FROM action_logs l JOIN actions a ON a.id = l.action_id "
        "AND a.start_ts = l.start_ts WHERE l.seq > a.log_count")
    if beyond:
        problems.append(f"{beyond} log lines are numbered beyond their action's log_count")
    orphans = await conn.fetchval(
        "SELECT count(*) FROM action_logs l LEFT JOIN action_keys k ON k.id = l.action_id "
        "AND k.start_ts = l.start_ts WHERE k.id IS NULL")
    if orphans:
        problems.append(f"{orphans} log lines belong to no action")
    return problems


def check(db: str, say=lambda message: None) -> dict:
    """Schema version and auditd's invariants, read in one snapshot, each step said as it
    starts; nothing is changed."""
    return _run(_check(db, say))
