"""The PostgreSQL backend (`--db postgresql://...`): the same contract as the SQLite one, for
several auditd instances on one database.

- Writes go through one write connection per instance with group commit (`writer.Writer`):
  every write waiting when a transaction starts joins it in its own savepoint, the transaction
  commits once with synchronous_commit on, and only then is each caller answered. Rows that a
  write changes depending on what it read are locked (FOR UPDATE), so two instances writing the
  same action take turns; a deadlock between them reruns the losing batch. The jobs are in
  `jobs.py`; the rules they apply are `auditd.model`'s.
- Reads use a small asyncpg pool; a list page and its total_count are one statement, so one
  snapshot (`listing.py`, `reads.py`); the tallies (`tallies.py`) count the filters' totals
  and find deep offsets. Actions are partitioned by month of start_ts (`database.py`);
  `action_counts`, kept by triggers in the writing transaction, makes total_count exact without
  scanning.
- Each commit writes a `changes` row (pointers only) and NOTIFYs; every instance turns other
  instances' rows into the same notes its own commits make (`changes.py`), so live streams on one
  instance see writes made through another.
- Credentials are cached for CREDENTIALS_TTL at most; a change through any instance drops every
  instance's cache at once (NOTIFY auditd_credentials, and a row in the change log).
- Export, import, purge, reset, fixture loads and accounts are in `lifecycle.py`; exists,
  describe, backup (pg_dump's job) and check in `files.py`.
"""
import asyncio
import logging
import time
import uuid as uuidlib

import asyncpg

from ...model.access import (Principal, check_name, check_role, check_visible, hash_key,
                             key_matches, new_key, principal_for)
from ...model.actions import STATES
from ...model.errors import Unavailable
from ..interface import Store, built
from . import jobs, lifecycle
from .changes import ChangeFeed
from .database import DB_ERRORS, SCHEMA_VERSION, connect, prepare_database, redact
from .files import backup, check, describe, exists
from .reads import ListReads
from .partitions import create_months, ensure_partitions, months_of
from .writer import Writer

__all__ = ["PostgresStore", "SCHEMA_VERSION", "backup", "check", "create", "describe", "exists"]

log = logging.getLogger("auditd.store")

CREDENTIALS_TTL = 1.0          # seconds a cached credential is trusted without a notification
CACHE_ENTRIES = 4096
POOL_SIZE = 4                  # read connections: more only add contention (BENCHMARKS.md)
# Reads are prepared statements. With a few years of monthly partitions, planning a list page
# costs more than running it (2 ms against 0.5 ms at 1M actions in 18 partitions), and left to
# itself the planner makes a fresh custom plan every time; a generic plan is made once per
# connection and prunes partitions when it runs. A generic plan's cost is a guess for every
# partition, which often passes jit_above_cost: compiling it took 150-180 ms of a page that runs
# in 5 ms (an object's related actions at 1M), so no JIT; nor parallel workers, whose start
# costs more than the few hundred rows a list reads.
READ_SETTINGS = {"plan_cache_mode": "force_generic_plan", "jit": "off",
                 "max_parallel_workers_per_gather": "0"}
PARTITION_UPKEEP = 6 * 3600    # seconds between two looks at the monthly partitions


async def _nothing_to_reset(conn):
    """A read connection goes back to the pool as it is: reads never LISTEN, SET (but SET LOCAL),
    take session advisory locks or keep cursors, so asyncpg's default reset (four statements, a
    round trip on every release) has nothing to undo. asyncpg still rolls back an open
    transaction."""


def create(config, serving: bool = False) -> "PostgresStore":
    return PostgresStore(config.db, group_commit=config.group_commit)


class PostgresStore(ListReads, Store):
    def __init__(self, url: str, group_commit: bool = True, pool_size: int = POOL_SIZE):
        self.url = url
        self.group_commit = group_commit
        self.pool_size = pool_size
        self.on_commit = None
        self.schema_version = None
        self.origin = uuidlib.uuid4().hex      # this instance, in the change log
        self._pool: asyncpg.Pool | None = None
        self._writer: Writer | None = None
        self.feed = ChangeFeed(self)
        self._credentials: dict = {}            # name -> (read at, (key hash, Principal))
        self._credentials_generation = 0
        self._upkeep: asyncio.Task | None = None
        self._refused_months: set[str] = set()  # months whose rows are in the default partition
        self._windows: dict = {}                # where list pages look first (listing.py)

    # -- lifecycle

    async def open(self):
        conn = await connect(self.url)
        try:
            self.schema_version = await prepare_database(conn, self.url)
            await ensure_partitions(conn)
        finally:
            await conn.close()
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size, timeout=10, command_timeout=60,
                server_settings=READ_SETTINGS, reset=_nothing_to_reset)
        except DB_ERRORS as err:
            raise Unavailable(f"cannot connect to PostgreSQL at {redact(self.url)}: {err}") \
                from None
        self._writer = Writer(self.url, self.origin, self.group_commit, self.feed)
        await self._writer.open()
        await self.feed.start()
        self._upkeep = asyncio.create_task(self._partition_upkeep(), name="auditd-pg-partitions")
        return self

    async def close(self):
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
        if self._writer is not None:
            writer, self._writer = self._writer, None   # no new writes from here on
            await writer.close()
        await self.feed.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _partition_upkeep(self):
        while True:
            await asyncio.sleep(PARTITION_UPKEEP)
            try:
                async with self._pool.acquire() as conn:
                    await ensure_partitions(conn)
            except DB_ERRORS as err:
                log.warning("partition upkeep failed (will retry): %s", err)

    async def _write(self, fn, *args):
        if self._writer is None:
            raise Unavailable("the store is closed: the server is shutting down")
        return await self._writer.submit(fn, args)

    async def _fetch(self, sql: str, *params):
        try:
            return await self._pool.fetch(sql, *params)
        except DB_ERRORS as err:
            raise self._unavailable(err) from None

    @staticmethod
    def _unavailable(err) -> Unavailable:
        log.error("read failed: %s", err)
        return Unavailable(f"the database could not be read ({err}); retry shortly")

    async def _fetchrow(self, sql: str, *params):
        rows = await self._fetch(sql, *params)
        return rows[0] if rows else None

    async def _fetchval(self, sql: str, *params):
        row = await self._fetchrow(sql, *params)
        return row[0] if row else None

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer else 0

    # -- users, organizations, credentials

    def _graph_changed(self):
        if self._writer is not None and self._writer.ctx is not None:
            self._writer.ctx.ancestors.clear()

    def _forget_credentials(self):
        self._credentials.clear()
        self._credentials_generation += 1

    async def authenticate(self, name: str, key: str) -> Principal | None:
        now = time.monotonic()
        known = self._credentials.get(name)
        if known is None or now - known[0] > CREDENTIALS_TTL:
            generation = self._credentials_generation
            known = (now, await self._load_principal(name))
            # A read that a change overtook is used once, not remembered.
            if generation == self._credentials_generation:
                if len(self._credentials) >= CACHE_ENTRIES:
                    self._credentials.clear()
                self._credentials[name] = known
        found = known[1]
        if not key_matches(key, found[0] if found else None):
            return None
        return found[1]

    async def _load_principal(self, name: str):
        row = await self._fetchrow(
            "SELECT role, key_hash, ARRAY(SELECT o.name FROM org_members m JOIN orgs o "
            "ON o.id = m.org_id WHERE m.user_id = users.id) FROM users WHERE name = $1", name)
        if row is None:
            return None
        return row[1], principal_for(name, row[0], row[2])

    async def add_user(self, name: str, role: str = "user", key: str | None = None) -> str:
        check_name(name, "user")
        check_role(role)
        key = key or new_key()
        await self._write(jobs.add_user, name, role, hash_key(key))
        return key

    async def rotate_key(self, name: str) -> str:
        key = new_key()
        await self._write(jobs.rotate_key, name, hash_key(key))
        return key

    async def remove_user(self, name: str):
        await self._write(jobs.remove_user, name)

    async def list_users(self) -> list[dict]:
        accounts = await lifecycle.export_accounts(self)
        return [{"name": u["name"], "role": u["role"], "created_at": u["created_at"],
                 "orgs": u["orgs"]} for u in accounts["users"]]

    async def count_users(self) -> int:
        return await self._fetchval("SELECT count(*) FROM users")

    async def add_org(self, name: str):
        check_name(name, "organization")
        await self._write(jobs.add_org, name)

    async def add_member(self, org: str, user: str):
        await self._write(jobs.set_member, org, user, True)

    async def remove_member(self, org: str, user: str):
        await self._write(jobs.set_member, org, user, False)

    async def list_orgs(self) -> list[dict]:
        rows = await self._fetch(
            "SELECT o.name, coalesce(array_agg(u.name ORDER BY u.name) "
            "FILTER (WHERE u.name IS NOT NULL), '{}') FROM orgs o "
            "LEFT JOIN org_members m ON m.org_id = o.id LEFT JOIN users u ON u.id = m.user_id "
            "GROUP BY o.id ORDER BY o.name")
        return [{"name": r[0], "members": list(r[1])} for r in rows]

    async def export_accounts(self) -> dict:
        return await lifecycle.export_accounts(self)

    async def import_accounts(self, accounts: dict) -> dict:
        return await self._write(lifecycle.import_accounts, accounts)

    # -- actions: writes

    async def record_action(self, record) -> dict:
        # built here, on the event loop, where this store's writes run too
        return await self._write(jobs.insert_action, built(record))

    async def change_state(self, uuid: str, state: str, namespaces) -> dict:
        return await self._write(jobs.change_state, uuid.lower(), state, namespaces)

    async def cancel(self, uuid: str, namespaces) -> dict:
        return await self._write(jobs.cancel, uuid.lower(), namespaces)

    async def retry(self, uuid: str, namespaces, caller: dict) -> dict:
        return await self._write(jobs.retry, uuid.lower(), namespaces, caller)

    async def append_logs(self, uuid: str, lines: list, namespaces) -> int:
        return await self._write(jobs.append_logs, uuid.lower(), lines, namespaces)

    # -- actions: reads

    async def get_action_doc(self, uuid: str, namespaces) -> str:
        row = await self._fetchrow("SELECT doc, namespace FROM actions" + jobs.BY_UUID,
                                   uuid.lower())
        check_visible(uuid, row[1] if row else None, namespaces)
        return row[0]

    async def get_action(self, uuid: str, namespaces) -> dict:
        row = await self._fetchrow(jobs.SELECT_STORED + jobs.BY_UUID, uuid.lower())
        check_visible(uuid, row["namespace"] if row else None, namespaces)
        return jobs.row_dict(row)

    async def read_logs(self, action_id: int, after_seq: int, limit: int) -> list[tuple]:
        return [tuple(r) for r in await self._fetch(
            "SELECT seq, ts, stream_type, line FROM action_logs WHERE action_id = $1 "
            "AND start_ts = (SELECT start_ts FROM action_keys WHERE id = $1) "   # one partition
            "AND seq > $2 ORDER BY seq LIMIT $3", action_id, after_seq,
            limit)]

    async def counts_by_state(self) -> dict[str, int]:
        rows = await self._fetch("SELECT state, sum(n)::bigint FROM action_counts GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: n for state, n in rows})
        return counts

    async def database_size(self) -> int:
        return await self._fetchval("SELECT pg_database_size(current_database())")

    async def ping(self):
        await self._fetchval("SELECT 1")

    async def health(self) -> str | None:
        if self._writer is None:
            return "the database is closed: the server is stopping"
        try:
            await self._fetchval("SELECT (SELECT count(*) FROM users) + "
                                 "(SELECT count(*) FROM (SELECT 1 FROM actions "
                                 "ORDER BY start_ts DESC LIMIT 25) AS newest)")
        except Exception as err:   # noqa: BLE001 - whatever it is, it is the reason
            return "the database did not answer: " + (getattr(err, "message", None) or str(err)
                                                      or repr(err))
        return None

    # -- the data lifecycle (lifecycle.py)

    async def count_actions(self, filters: dict) -> int:
        return await lifecycle.count_actions(self, filters)

    def export_actions(self, filters: dict, with_logs: bool = True, log_chunk: int = 1000):
        return lifecycle.export_actions(self, filters, with_logs=with_logs, log_chunk=log_chunk)

    async def import_batch(self, items: list) -> list[tuple]:
        # The months an import brings get their partitions first (each in its own short
        # transaction), so that retention can drop them whole later.
        starts = [item[2]["start_ts"] for item in items if item[0] == "action"]
        if starts:
            try:
                async with self._pool.acquire() as conn:
                    await create_months(conn, months_of(starts), self._refused_months)
            except DB_ERRORS as err:
                log.warning("partitions for imported months not made: %s", err)
        return await self._write(lifecycle.import_batch, items)

    async def count_purgeable(self, cut: int) -> tuple[int, int]:
        return await lifecycle.count_purgeable(self, cut)

    async def purge(self, cut: int, on_progress=None) -> tuple[int, int]:
        return await lifecycle.purge(self, cut, on_progress=on_progress)

    async def reset(self) -> dict:
        return await self._write(lifecycle.reset)

    async def load(self, items: list) -> list[dict]:
        return await self._write(lifecycle.load, items)

    async def has_actions(self) -> bool:
        return await self._fetchval("SELECT EXISTS (SELECT 1 FROM action_keys)")

    PLANNER_STATISTICS = True

    async def analyze(self):
        try:
            await self._pool.execute("VACUUM (ANALYZE)")
        except DB_ERRORS as err:
            raise self._unavailable(err) from None
