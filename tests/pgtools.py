"""PostgreSQL for the tests: a fresh database per use, dropped afterwards.

The server is $AUDITD_TEST_PG (an admin URL; default postgresql://root@127.0.0.1:5432/postgres).
Tests that need it call `require_postgres()`: when no server answers, they fail in CI (CI=true)
and are skipped elsewhere with a reason that says so; they are never skipped silently.
"""
import asyncio
import os
import secrets
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("AUDITD_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")
_available: list = []     # [None] when the server answered, [reason] when it did not


def run(coro):
    """Run a coroutine from synchronous code, also inside a running event loop (in a thread)."""
    box = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:   # noqa: BLE001 - raised in the caller
            box["error"] = err
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _admin(sql: str):
    import asyncpg
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        return await conn.execute(sql)
    finally:
        await conn.close()


def unavailable_reason() -> str | None:
    if not _available:
        try:
            import asyncpg  # noqa: F401
            run(_admin("SELECT 1"))
            _available.append(None)
        except Exception as err:   # noqa: BLE001 - reported as the reason
            _available.append(f"no PostgreSQL server answers at {ADMIN_URL} ({err!r}); start "
                              "one or set AUDITD_TEST_PG")
    return _available[0]


def require_postgres():
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail("PostgreSQL tests cannot run in CI: " + reason)
    pytest.skip("PostgreSQL tests SKIPPED: " + reason)


def database_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(label: str = "") -> str:
    """A new empty database; returns its URL."""
    require_postgres()
    name = f"auditd_test_{secrets.token_hex(4)}" + (f"_{label}" if label else "")
    run(_admin(f'CREATE DATABASE "{name}"'))
    return database_url(name)


_session: dict[str, str] = {}   # label -> URL of a database kept for the whole test session


def clean_database(label: str) -> str:
    """A database with nothing in it: made on first use (CREATE DATABASE takes most of a second),
    emptied with TRUNCATE on every later use (a few milliseconds). `drop_session_databases`
    removes them at the end of the session."""
    if label not in _session:
        _session[label] = create_database(label)
    else:
        run(_truncate(_session[label]))
    return _session[label]


_EMPTY = """
DELETE FROM action_logs; DELETE FROM actions; DELETE FROM action_keys; DELETE FROM object_parents;
DELETE FROM objects; DELETE FROM org_members; DELETE FROM users; DELETE FROM orgs;
DELETE FROM action_counts; DELETE FROM changes; DELETE FROM tallies;
DELETE FROM action_ancestors;
SELECT setval(c.oid, 1, false) FROM pg_class c WHERE c.relkind = 'S';
"""


async def _truncate(url: str):
    """DELETE, not TRUNCATE: for a few rows it takes a few milliseconds, TRUNCATE a tenth of a
    second (new files for every table)."""
    import asyncpg
    conn = await asyncpg.connect(url, timeout=5)
    try:
        if await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            await conn.execute("BEGIN;" + _EMPTY + "COMMIT;")
    finally:
        await conn.close()


def drop_session_databases():
    while _session:
        drop_database(_session.popitem()[1])


def drop_database(url: str):
    name = urlsplit(url).path.lstrip("/")
    run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def terminate_listeners(url: str) -> int:
    """pg_terminate_backend on every connection to this database that LISTENs; how many."""
    name = urlsplit(url).path.lstrip("/")

    async def kill():
        import asyncpg
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            return await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = 'auditd-listen'", name)
        finally:
            await conn.close()
    return run(kill())
