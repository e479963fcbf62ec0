"""The monthly partitions of actions and action_logs: made ahead of time and for the months an
import brings, and dropped whole by retention.

Month M has `actions_YYYY_MM` and `action_logs_YYYY_MM`, both for start_ts in [first second of
M, first second of M+1): an action's lines are in the partition of the action's start_ts. Rows of
a month without partitions go to the DEFAULT partitions; a month whose rows are already there
keeps them there (PostgreSQL refuses its partitions; that is logged, not an error).

Retention (`drop_months`) removes a month that ended before the cut at once: its action_keys rows
go by one ranged DELETE, the counters lose the month's (namespace, state) counts, and both
partitions are dropped, in one transaction (readers wait only for the drop itself, a moment).
A month where a few actions must stay (not final, or ended after the cut) is emptied the same way
with TRUNCATE, those few put back. Whatever else is purgeable goes row by row
(lifecycle.purge_batch).
"""
import calendar
import logging
import time

import asyncpg

from ...model.actions import FINAL_STATES, STATES
from . import lineage, tallies
from .database import DB_ERRORS, LINEAGE_LOCK, SCHEMA_LOCK

log = logging.getLogger("auditd.store")

PARTITIONS_BEFORE = 1     # monthly partitions kept ready: this many months back ...
PARTITIONS_AHEAD = 2      # ... and this many ahead of the current month
LOCK_TIMEOUT = "5s"       # how long partition work waits for other transactions' locks
_MONTH_NAME = "^actions_[0-9]{4}_[0-9]{2}$"
_NOT_FINAL = sorted(set(STATES) - set(FINAL_STATES))


def _month(year: int, month: int) -> tuple[int, int]:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return year, month


def month_bounds(year: int, month: int) -> tuple[str, int, int]:
    """(partition name, first second, first second of the next month)."""
    year, month = _month(year, month)
    next_year, next_month = _month(year, month + 1)
    return (f"actions_{year:04d}_{month:02d}", calendar.timegm((year, month, 1, 0, 0, 0)),
            calendar.timegm((next_year, next_month, 1, 0, 0, 0)))


def logs_partition(name: str) -> str:
    """action_logs' partition of the month whose actions partition is `name`."""
    return "action_logs_" + name[len("actions_"):]


def wanted_months(now: float | None = None) -> list[tuple[str, int, int]]:
    t = time.gmtime(time.time() if now is None else now)
    return [month_bounds(t.tm_year, t.tm_mon + delta)
            for delta in range(-PARTITIONS_BEFORE, PARTITIONS_AHEAD + 1)]


def months_of(starts) -> list[tuple[str, int, int]]:
    """The months these start times fall in."""
    days = {ts // 86400 for ts in starts}
    return sorted({month_bounds(*time.gmtime(day * 86400)[:2]) for day in days})


async def create_months(conn, months, refused: set | None = None) -> list[str]:
    """Create the partitions of these months [(name, low, high)] that are missing, each month in
    its own short transaction; returns the names made. A month PostgreSQL refuses (its rows are
    in the DEFAULT partitions) is logged and added to `refused`, and not tried again."""
    wanted = {name: (low, high) for name, low, high in months
              if refused is None or name not in refused}
    if not wanted:
        return []
    missing = await conn.fetch(
        "SELECT m FROM unnest($1::text[]) AS m WHERE to_regclass(m) IS NULL "
        "OR to_regclass('action_logs_' || substr(m, 9)) IS NULL ORDER BY m", list(wanted))
    made = []
    for (name,) in missing:
        low, high = wanted[name]
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                for table, parent in ((name, "actions"), (logs_partition(name), "action_logs")):
                    await conn.execute(f"CREATE TABLE IF NOT EXISTS {table} PARTITION OF "
                                       f"{parent} FOR VALUES FROM ({low}) TO ({high})")
            made.append(name)
        except asyncpg.PostgresError as err:
            log.warning("partitions of %s not created (its rows stay in the default "
                        "partitions): %s", name[len("actions_"):], err)
            if refused is not None:
                refused.add(name)
    return made


async def ensure_partitions(conn, now: float | None = None) -> list[str]:
    """The partitions of the months around now that are missing; returns their names."""
    return await create_months(conn, wanted_months(now))


async def monthly_partitions(conn) -> list[tuple[str, int, int]]:
    """Every month that has an actions partition, oldest first."""
    names = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'actions'::regclass AND c.relname ~ $1 ORDER BY c.relname",
        _MONTH_NAME)
    return [month_bounds(int(name[8:12]), int(name[13:15])) for (name,) in names]


class _Inconsistent(Exception):
    """The month's keys do not match its rows: leave it to the row-by-row purge."""


# An action retention keeps; $1 the states that are not final, $2 the cut.
_KEPT = "(state = ANY($1::text[]) OR end_ts >= $2 OR end_ts IS NULL)"
KEEP_AT_MOST = 0.25     # a month is emptied at once while it keeps at most this share of its rows


async def drop_month(conn, name: str, low: int, high: int, cut: int | None):
    """Remove every action of the month that is final and ended before `cut` (`cut` None: only
    a month without actions), with its lines, keys and counts, all at once: when nothing stays,
    both partitions are dropped; when a few actions stay (a stuck Pending one, say: at most
    KEEP_AT_MOST of the rows), they are set aside, both partitions are truncated and they are put
    back. Returns (actions, log lines) removed, or None when the month is left to the row-by-row
    purge."""
    logs = logs_partition(name)
    month = name[len("actions_"):]
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            # its filings go (FORGET_MONTH) while no new edge files the month's actions again
            await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", LINEAGE_LOCK)
            # From here no write reaches the month; reads go on until the drop or truncate.
            await conn.execute(f"LOCK TABLE {name}, {logs} IN SHARE MODE")
            if cut is None:
                if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name})"):
                    return None
                kept = 0
            else:
                kept = await conn.fetchval(f"SELECT count(*) FROM {name} WHERE {_KEPT}",
                                           _NOT_FINAL, cut)
            groups = await conn.fetch(f"SELECT namespace, state, count(*) FROM {name} "
                                      "GROUP BY namespace, state")
            actions = sum(n for *_, n in groups)
            if kept > actions * KEEP_AT_MOST or (actions and kept == actions):
                return None
            lines = await conn.fetchval(f"SELECT count(*) FROM {logs}")
            await conn.execute(lineage.FORGET_MONTH, low, high)   # kept ones: filed again
            if kept:
                lines -= await _set_aside(conn, name, logs, cut)
                keys = await conn.execute(
                    "DELETE FROM action_keys k WHERE start_ts >= $1 AND start_ts < $2 AND NOT "
                    "EXISTS (SELECT 1 FROM auditd_kept_actions a WHERE a.id = k.id)", low, high)
            else:
                keys = await conn.execute("DELETE FROM action_keys WHERE start_ts >= $1 AND "
                                          "start_ts < $2", low, high)
            if int(keys.rsplit(" ", 1)[1]) != actions - kept:
                raise _Inconsistent(f"{keys} for {actions - kept} actions")
            # Readers of the month wait from here to the commit, a moment.
            await conn.execute(tallies.subtract_month(name))   # no trigger sees a drop
            await conn.execute(f"TRUNCATE {name}, {logs}" if kept else f"DROP TABLE {name}, {logs}")
            if groups:
                await conn.execute(
                    "UPDATE action_counts c SET n = c.n - g.n FROM unnest($1::text[], "
                    "$2::text[], $3::bigint[]) AS g(namespace, state, n) "
                    "WHERE c.namespace = g.namespace AND c.state = g.state", *zip(*groups))
            if kept:    # back through the parent, counted again by the triggers
                await conn.execute("INSERT INTO actions SELECT * FROM auditd_kept_actions; "
                                   f"INSERT INTO {logs} SELECT * FROM auditd_kept_logs")
    except _Inconsistent as err:
        log.error("month %s not removed at once: its keys do not match its actions (%s); "
                  "'auditd check' says more", month, err)
        return None
    # The tallies that only the month counted go, after the commit: readers do not wait for it.
    try:
        await conn.execute(f"{tallies.PRUNE_MONTH}; DROP TABLE {tallies.MONTH_KEYS}")
    except DB_ERRORS as err:   # the counts are right; some tallies stay, at zero
        log.warning("the tallies of month %s that it left at zero stay: %s", month, err)
        await conn.execute(f"DROP TABLE IF EXISTS {tallies.MONTH_KEYS}")
    if kept:
        log.info("retention emptied the partitions of %s at once but for %d actions that stay: "
                 "%d actions, %d log lines removed", month, kept, actions - kept, lines)
    else:
        log.info("retention dropped the partitions of %s: %d actions, %d log lines",
                 month, actions, lines)
    return actions - kept, lines


async def _set_aside(conn, name: str, logs: str, cut: int) -> int:
    """Copy the month's actions that stay, and their lines, to temporary tables (gone at
    commit); returns how many lines stay."""
    await conn.execute(f"CREATE TEMP TABLE auditd_kept_actions ON COMMIT DROP AS "
                       f"SELECT * FROM {name} WHERE {_KEPT}", _NOT_FINAL, cut)
    await conn.execute(f"CREATE TEMP TABLE auditd_kept_logs ON COMMIT DROP AS SELECT l.* FROM "
                       f"{logs} l JOIN auditd_kept_actions a ON a.id = l.action_id")
    return await conn.fetchval("SELECT count(*) FROM auditd_kept_logs")


async def drop_months(conn, cut: int | None, now: float | None = None,
                      on_progress=None) -> tuple[int, int]:
    """`drop_month`, oldest first, for each month older than the ones kept ready that ended
    before `cut` (`cut` None: each such month that is empty). Returns (actions, log lines)
    removed. A month whose locks do not come within LOCK_TIMEOUT stays for the row-by-row purge,
    or the next pass."""
    oldest_kept = wanted_months(now)[0][1]
    actions = lines = 0
    for name, low, high in await monthly_partitions(conn):
        if high > oldest_kept or (cut is not None and high > cut):
            break
        try:
            dropped = await drop_month(conn, name, low, high, cut)
        except DB_ERRORS as err:
            log.warning("month %s not dropped whole (left to the row-by-row purge): %s",
                        name[len("actions_"):], err)
            continue
        if dropped:
            actions += dropped[0]
            lines += dropped[1]
            if on_progress is not None and dropped[0]:
                on_progress(actions, lines)
    return actions, lines
