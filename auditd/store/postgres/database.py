"""Opening a PostgreSQL database: connections, the schema (schema.sql beside this file) and its
migrations by version (the schema_version table), and the monthly partitions of actions."""
import asyncio
import calendar
import logging
import re
import time
from pathlib import Path

import asyncpg

from ...model.errors import SchemaVersionError, Unavailable

log = logging.getLogger("auditd.store")

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
# MIGRATIONS[v] turns a version-v database into version v+1; schema.sql is always the newest.
MIGRATIONS: dict[int, str] = {}

# Advisory lock keys ("audi" and "audc"): schema work and partition upkeep; the change log.
SCHEMA_LOCK = 0x61756469
CHANGES_LOCK = 0x61756463

PARTITIONS_BEFORE = 1     # monthly partitions kept ready: this many months back ...
PARTITIONS_AHEAD = 2      # ... and this many ahead of the current month
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
            await conn.execute(SCHEMA_FILE.read_text())
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
            return SCHEMA_VERSION
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{redact(url)} has schema version {version}, but this auditd knows versions up "
                f"to {SCHEMA_VERSION}: run a newer auditd")
        while version < SCHEMA_VERSION:
            log.info("migrating %s from schema version %d to %d", redact(url), version,
                     version + 1)
            await conn.execute(MIGRATIONS[version])
            version += 1
            await conn.execute("UPDATE schema_version SET version = $1", version)
        return version


# ---------------------------------------------------------------------------- partitions

def _month(year: int, month: int) -> tuple[int, int]:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return year, month


def month_bounds(year: int, month: int) -> tuple[str, int, int]:
    """(partition name, first second, first second of the next month)."""
    year, month = _month(year, month)
    next_year, next_month = _month(year, month + 1)
    return (f"actions_{year:04d}_{month:02d}", calendar.timegm((year, month, 1, 0, 0, 0)),
            calendar.timegm((next_year, next_month, 1, 0, 0, 0)))


def wanted_months(now: float | None = None) -> list[tuple[str, int, int]]:
    t = time.gmtime(time.time() if now is None else now)
    return [month_bounds(t.tm_year, t.tm_mon + delta)
            for delta in range(-PARTITIONS_BEFORE, PARTITIONS_AHEAD + 1)]


async def ensure_partitions(conn, now: float | None = None) -> list[str]:
    """Create the monthly partitions around now that are missing; returns their names. A month
    whose rows are already in actions_default (dates recorded before its partition existed)
    stays there: it is logged, not an error."""
    made = []
    for name, low, high in wanted_months(now):
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            continue
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF actions "
                                   f"FOR VALUES FROM ({low}) TO ({high})")
            made.append(name)
        except asyncpg.PostgresError as err:
            log.warning("partition %s not created (its rows stay in actions_default): %s",
                        name, err)
    return made


async def drop_empty_partitions(conn, now: float | None = None) -> list[str]:
    """Drop monthly partitions older than the ones kept ready that hold no rows (a purge emptied
    them): retention then costs no dead rows and no vacuum for those months."""
    oldest_kept = wanted_months(now)[0][1]
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'actions'::regclass AND c.relname ~ '^actions_[0-9]{4}_[0-9]{2}$'")
    dropped = []
    for (name,) in names:
        year, month = int(name[8:12]), int(name[13:15])
        if month_bounds(year, month)[2] > oldest_kept:
            continue
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                # Locked before it is looked at: no row can arrive between the look and the drop.
                await conn.execute(f"LOCK TABLE actions, {name} IN ACCESS EXCLUSIVE MODE")
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):
                    continue
                await conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
        except asyncpg.PostgresError as err:
            log.warning("empty partition %s not dropped: %s", name, err)
    return dropped
