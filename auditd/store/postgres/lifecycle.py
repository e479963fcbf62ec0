"""The data lifecycle on PostgreSQL: export, import, purge, reset, fixture loads and accounts.

- Export reads pages of actions by keyset over (start_ts, id), each page and its log lines in a
  few bounded reads, so memory stays flat whatever the database holds.
- Import and purge are writer jobs of bounded size, so the server's own writes go on between
  their batches. Purge drops whole the months whose every action it would remove (partitions.py),
  removes the rest in batches across every partition (actions_default too), then drops the
  monthly partitions it left empty.
- Reset and fixture loads are one writer job each: all of it happens or none of it does.
"""
import logging
from collections import defaultdict

import asyncpg

from ...model.actions import FINAL_STATES
from ...model.notes import ActionsRemoved
from . import bulk, tallies
from .jobs import _SQL_COLUMNS, add_edges, append_logs, insert_action, row_dict
from .partitions import drop_months
from .writer import (EXCLUSIVE, RETRYABLE, SHARED, credentials_job, lineage_mode,
                     locks_tables, require_lineage)

log = logging.getLogger("auditd.store")

_FINAL = sorted(FINAL_STATES)


# ---------------------------------------------------------------------------- export

def _export_where(filters: dict, params: list) -> list[str]:
    where = []
    for column in ("state", "namespace"):
        values = sorted(set(filters.get(column + "s") or ()))
        if values:
            params.append(values)
            where.append(f"{column} = ANY(${len(params)}::text[])")
    for key, op in (("since", ">="), ("until", "<")):
        if filters.get(key) is not None:
            params.append(filters[key])
            where.append(f"start_ts {op} ${len(params)}::bigint")
    return where


async def count_actions(store, filters: dict) -> int:
    params = []
    where = _export_where(filters, params)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return await store._fetchval(f"SELECT count(*) FROM actions{clause}", *params)


async def _graph_edges(store, object_ids) -> dict[int, list[list[str]]]:
    """For each object: every [child URI, parent URI] edge reachable upward from it."""
    ids = sorted({i for i in object_ids if i is not None})
    if not ids:
        return {}
    rows = await store._fetch(
        "WITH RECURSIVE up(start, id) AS ("
        "  SELECT id, id FROM objects WHERE id = ANY($1::bigint[]) UNION "
        "  SELECT up.start, p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id) "
        "SELECT up.start, c.uri, pu.uri FROM up "
        "JOIN object_parents p ON p.child_id = up.id "
        "JOIN objects c ON c.id = p.child_id JOIN objects pu ON pu.id = p.parent_id "
        "ORDER BY up.start, c.id, pu.id", ids)
    edges = defaultdict(list)
    for start, child, parent in rows:
        edges[start].append([child, parent])
    return edges


async def _log_rows(store, actions: list, after: int = 0, limit=None) -> list:
    """Lines of these actions up to each one's log_count as read with it."""
    return await store._fetch(
        "SELECT l.action_id, l.seq, l.ts, l.stream_type, l.line FROM "
        "unnest($1::bigint[], $2::bigint[], $3::int[]) AS r(a, s, upto) "
        "JOIN action_logs l ON l.action_id = r.a AND l.start_ts = r.s AND l.seq > $4 "
        "AND l.seq <= r.upto ORDER BY l.action_id, l.seq" + (" LIMIT $5" if limit else ""),
        [a["id"] for a in actions], [a["start_ts"] for a in actions],
        [a["log_count"] for a in actions], after, *([limit] if limit else []))


async def export_actions(store, filters: dict, with_logs: bool = True, page_size: int = 200,
                         log_chunk: int = 1000):
    """As the interface says: ("action", action, edges, logs), then ("logs", action, logs)."""
    params = []
    where = _export_where(filters, params)
    after = None
    while True:
        terms, page_params = list(where), list(params)
        if after is not None:
            page_params.extend(after)
            terms.append(f"(start_ts, id) > (${len(page_params) - 1}::bigint, "
                         f"${len(page_params)}::bigint)")
        clause = (" WHERE " + " AND ".join(terms)) if terms else ""
        page_params.append(page_size)
        rows = await store._fetch(f"SELECT {_SQL_COLUMNS}, doc FROM actions{clause} "
                                  f"ORDER BY start_ts, id LIMIT ${len(page_params)}", *page_params)
        if not rows:
            return
        page = [row_dict(r) for r in rows]
        after = [page[-1]["start_ts"], page[-1]["id"]]
        edges = await _graph_edges(store, (a["object_id"] for a in page)) if with_logs else {}
        small = [a for a in page if 0 < a["log_count"] <= log_chunk]
        logs = defaultdict(list)
        if with_logs and small:
            for action_id, *line in await _log_rows(store, small):
                logs[action_id].append(tuple(line))
        for action in page:
            object_edges = edges.get(action["object_id"], [])
            if not with_logs or action["log_count"] <= log_chunk:
                yield "action", action, object_edges, logs.get(action["id"], [])
                continue
            seq, first = 0, True
            while seq < action["log_count"]:
                chunk = [tuple(r[1:]) for r in await _log_rows(store, [action], seq,
                                                              limit=log_chunk)]
                if not chunk:
                    break
                yield ("action", action, object_edges, chunk) if first else ("logs", action, chunk)
                first, seq = False, chunk[-1][0]
            if first:   # its lines were purged meanwhile
                yield "action", action, object_edges, []


# ---------------------------------------------------------------------------- import

@lineage_mode(EXCLUSIVE)   # its edges are not foreseen
async def import_batch(ctx, items: list):
    """Writer job: an existing uuid is skipped, log lines are keyed by (action, seq); see
    `Store.import_batch`. In bulk (bulk.py) when it can be, else each record in its own
    savepoint."""
    try:
        async with ctx.conn.transaction():
            return await bulk.import_items(ctx, items, import_one), []
    except RETRYABLE:
        raise
    except (bulk.NotBulk, asyncpg.PostgresError, ValueError, LookupError) as err:
        log.debug("import batch goes record by record: %s", err)
        ctx.forget()
    return [await import_one(ctx, item) for item in items], []


async def import_one(ctx, item) -> tuple:
    """One import item in its own savepoint: (lineno, outcome, lines added, error)."""
    kind, lineno, *rest = item
    try:
        async with ctx.conn.transaction():
            if kind == "action":
                outcome, added = await _import_action(ctx, *rest)
            else:
                outcome, added = await _import_logs(ctx, *rest)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError,
            LookupError) as err:
        ctx.forget()
        return lineno, "error", 0, str(err)
    return lineno, outcome, added, None


async def _import_action(ctx, record: dict, edges: list, logs: list):
    key = await ctx.conn.fetchrow("SELECT id, start_ts FROM action_keys WHERE uuid = $1",
                                  record["uuid"])
    outcome = "skipped"
    if key is None:
        action, _ = await insert_action(ctx, dict(record, parents=[]))
        key, outcome = (action["id"], action["start_ts"]), "imported"
    await add_edges(ctx, edges)
    return outcome, await insert_logs(ctx, *key, logs)


async def _import_logs(ctx, uuid: str, logs: list):
    key = await ctx.conn.fetchrow("SELECT id, start_ts FROM action_keys WHERE uuid = $1", uuid)
    if key is None:
        raise LookupError(f"log lines for action {uuid}, which is neither in the database nor "
                          "on an earlier line of the file")
    return "logs", await insert_logs(ctx, *key, logs)


async def insert_logs(ctx, action_id: int, start_ts: int, logs: list) -> int:
    """Lines [(seq, ts, stream_type, line)] of an action; those it has already are skipped."""
    if not logs:
        return 0
    rows = list(zip(*logs))
    added = await ctx.conn.fetchval(
        "WITH new AS (INSERT INTO action_logs (action_id, start_ts, seq, ts, stream_type, line) "
        "SELECT $1, $2, * FROM unnest($3::int[], $4::bigint[], $5::text[], $6::text[]) "
        "ON CONFLICT DO NOTHING RETURNING seq) SELECT count(*) FROM new",
        action_id, start_ts, *rows)
    if added:
        # The next appended line takes log_count + 1, so log_count must cover the highest seq.
        await ctx.conn.execute(
            "UPDATE actions SET log_count = greatest(log_count, $1) WHERE id = $2 AND "
            "start_ts = $3", max(rows[0]), action_id, start_ts)
    return added


# ---------------------------------------------------------------------------- purge

_PURGEABLE = "state = ANY($1::text[]) AND end_ts < $2"


async def count_purgeable(store, cut: int) -> tuple[int, int]:
    row = await store._fetchrow(
        f"SELECT count(*), coalesce(sum(log_count), 0)::bigint FROM actions WHERE {_PURGEABLE}",
        _FINAL, cut)
    return row[0], row[1]


@lineage_mode(SHARED)   # its deletes remove filings a new edge's may be adding (lineage.py)
async def purge_batch(ctx, cut: int, max_rows: int):
    """Writer job: delete final actions that ended before `cut`, oldest first, touching about
    `max_rows` rows at most. Returns ((actions removed, log lines removed, done), no notes)."""
    conn = ctx.conn
    candidates = await conn.fetch(
        f"SELECT id, start_ts, log_count FROM actions WHERE {_PURGEABLE} "
        "ORDER BY end_ts, id LIMIT $3 FOR UPDATE", _FINAL, cut, max_rows)
    if not candidates:
        return (0, 0, True), []
    budget, removed, lines = max_rows, [], 0
    for action_id, start_ts, log_count in candidates:
        if log_count + 1 > budget:
            if not removed:   # a long log goes away in several batches, oldest lines first
                gone = _count(await conn.execute(
                    "DELETE FROM action_logs WHERE action_id = $1 AND start_ts = $2 AND seq IN "
                    "(SELECT seq FROM action_logs WHERE action_id = $1 AND start_ts = $2 "
                    "ORDER BY seq LIMIT $3)", action_id, start_ts, budget))
                lines += gone
                if gone < budget:
                    removed.append((action_id, start_ts))
            break
        removed.append((action_id, start_ts))
        budget -= log_count + 1
    if removed:
        ids, starts = [i for i, _ in removed], [s for _, s in removed]
        lines += _count(await conn.execute(
            "DELETE FROM action_logs WHERE (action_id, start_ts) IN "
            "(SELECT * FROM unnest($1::bigint[], $2::bigint[]))", ids, starts))
        gone = await conn.fetch(
            "DELETE FROM actions WHERE (id, start_ts) IN (SELECT * FROM unnest($1::bigint[], "
            '$2::bigint[])) RETURNING namespace, action, "user", is_user_action, uuid, '
            "start_ts, end_ts", ids, starts)
        if gone:   # after the DELETE's trigger took them out of the tallies
            await conn.execute(tallies.PRUNE_ACTIONS, *(list(c) for c in zip(*gone)))
        await conn.execute("DELETE FROM action_keys WHERE id = ANY($1::bigint[])", ids)
    return (len(removed), lines, False), []


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[1])


async def purge(store, cut: int, max_rows: int = 2000, on_progress=None) -> tuple[int, int]:
    """Whole months first (their partitions dropped), then what is left row by row, then the
    old months that this emptied."""
    async with store._pool.acquire() as conn:
        actions, lines = await drop_months(conn, cut, on_progress=on_progress)
    while True:
        removed, removed_lines, done = await store._write(purge_batch, cut, max_rows)
        actions += removed
        lines += removed_lines
        if done:
            break
        if on_progress is not None:
            on_progress(actions, lines)
    async with store._pool.acquire() as conn:
        await drop_months(conn, None)
    return actions, lines


# ---------------------------------------------------------------------------- reset and fixtures

@locks_tables
@lineage_mode(EXCLUSIVE)
async def reset(ctx):
    """Everything recorded, removed. Under the graph's lock held exclusively: the other
    instances' writers remember object ids, and their next batch, waiting for the lock, notices
    the objects are gone (writer.py's `floor`)."""
    require_lineage(ctx, EXCLUSIVE)
    conn = ctx.conn
    counts = {"actions": await conn.fetchval("SELECT count(*) FROM action_keys"),
              "log_lines": await conn.fetchval("SELECT count(*) FROM action_logs"),
              "objects": await conn.fetchval("SELECT count(*) FROM objects")}
    await conn.execute("TRUNCATE action_logs, action_keys, actions, object_parents, objects, "
                       "action_counts, tallies, action_ancestors")
    ctx.forget()   # the objects it knew are gone
    return counts, [ActionsRemoved()]


@lineage_mode(EXCLUSIVE)
async def load(ctx, items):
    """items: [(record, edges, lines)]; see `Store.load`."""
    loaded, notes = [], []
    for record, edges, lines in items:
        await add_edges(ctx, edges)   # first, so the action's lineage includes them
        action, action_notes = await insert_action(ctx, record)
        notes.extend(action_notes)
        if lines:
            count, log_notes = await append_logs(ctx, action["uuid"], lines, None)
            action["log_count"] = count
            notes.extend(log_notes)
        loaded.append(action)
    return loaded, notes


# ---------------------------------------------------------------------------- accounts

async def export_accounts(store) -> dict:
    users = await store._fetch(
        "SELECT u.name, u.role, u.key_hash, u.created_at, "
        "coalesce(array_agg(o.name ORDER BY o.name) FILTER (WHERE o.name IS NOT NULL), '{}') "
        "FROM users u LEFT JOIN org_members m ON m.user_id = u.id "
        "LEFT JOIN orgs o ON o.id = m.org_id GROUP BY u.id ORDER BY u.name")
    orgs = await store._fetch("SELECT name, created_at FROM orgs ORDER BY name")
    return {"users": [{"name": r[0], "role": r[1], "key_hash": r[2], "created_at": r[3],
                       "orgs": list(r[4])} for r in users],
            "orgs": [{"name": r[0], "created_at": r[1]} for r in orgs]}


@credentials_job
async def import_accounts(ctx, accounts: dict):
    conn, added = ctx.conn, {"users": 0, "orgs": 0, "memberships": 0}
    for org in accounts.get("orgs", ()):
        added["orgs"] += await conn.fetchval(
            "WITH new AS (INSERT INTO orgs (name, created_at) VALUES ($1, $2) "
            "ON CONFLICT (name) DO NOTHING RETURNING 1) SELECT count(*) FROM new",
            org["name"], org["created_at"])
    for user in accounts.get("users", ()):
        added["users"] += await conn.fetchval(
            "WITH new AS (INSERT INTO users (name, role, key_hash, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING RETURNING 1) "
            "SELECT count(*) FROM new",
            user["name"], user["role"], user["key_hash"], user["created_at"])
        for org in user["orgs"]:
            added["memberships"] += await conn.fetchval(
                "WITH new AS (INSERT INTO org_members (org_id, user_id) "
                "SELECT o.id, u.id FROM orgs o, users u WHERE o.name = $1 AND u.name = $2 "
                "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM new", org, user["name"])
    return added, []
