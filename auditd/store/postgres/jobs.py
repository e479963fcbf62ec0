"""Writer jobs: each runs on the write connection inside a savepoint (see writer.py) and returns
(result, notes). The rules come from `auditd.model`; only the SQL is here. Rows a job changes
depending on what it read are locked first (FOR UPDATE), because another instance may be writing
the same action at the same time."""
import asyncpg

from ...model import dates
from ...model.access import check_visible
from ...model.actions import cancel_state, check_move, moved, retry_record
from ...model.document import render_action
from ...model.errors import Conflict, NotFound
from ...model.notes import ActionChanged, LinesAppended
from ...model.uris import normalize_object_uri
from .writer import (
    EXCLUSIVE,
    SHARED,
    credentials_job,
    lineage_mode,
    locks_action,
    require_lineage,
)

ACTION_COLUMNS = ("id", "uuid", "namespace", "state", "action", "method", "path", "object",
                  "object_id", "user", "user_agent", "ip", "location", "body", "start_ts",
                  "end_ts", "is_user_action", "cancelable", "retriable", "log_count")
STORED_COLUMNS = ACTION_COLUMNS + ("doc",)
LOG_COLUMNS = ("action_id", "start_ts", "seq", "ts", "stream_type", "line")
_SQL_COLUMNS = ", ".join('"user"' if c == "user" else c for c in ACTION_COLUMNS)
SELECT_ACTION = f"SELECT {_SQL_COLUMNS} FROM actions"
SELECT_STORED = f"SELECT {_SQL_COLUMNS}, doc FROM actions"
# One action by uuid: the key table finds its partition.
BY_UUID = " a WHERE (a.id, a.start_ts) = (SELECT id, start_ts FROM action_keys WHERE uuid = $1)"
OBJECT_CACHE_ENTRIES = 100_000

# nearest first; the walk is a function, planned by index (lineage.BY_INDEX)
ANCESTORS_SQL = "SELECT uri FROM object_lineage($1::bigint) ORDER BY depth, id"


def row_dict(row, columns=STORED_COLUMNS) -> dict:
    return dict(zip(columns, row))


# ---------------------------------------------------------------------------- users and orgs

_NO_USER = "no user '{}' ('auditd user list' shows them)"


@credentials_job
async def add_user(ctx, name, role, key_hash):
    conn = ctx.conn
    if await conn.fetchval("SELECT 1 FROM orgs WHERE name = $1", name):
        raise Conflict(f"'{name}' is already an organization: users and organizations share "
                       "namespace names")
    try:
        await conn.execute("INSERT INTO users (name, role, key_hash, created_at) "
                           "VALUES ($1, $2, $3, $4)", name, role, key_hash, dates.now())
    except asyncpg.UniqueViolationError:
        raise Conflict(f"user '{name}' already exists: use 'auditd user rotate-key {name}' "
                       "for a new key") from None
    return None, []


@credentials_job
async def rotate_key(ctx, name, key_hash):
    if await ctx.conn.execute("UPDATE users SET key_hash = $1 WHERE name = $2",
                              key_hash, name) == "UPDATE 0":
        raise NotFound(_NO_USER.format(name))
    return None, []


@credentials_job
async def remove_user(ctx, name):
    if await ctx.conn.execute("DELETE FROM users WHERE name = $1", name) == "DELETE 0":
        raise NotFound(_NO_USER.format(name))
    return None, []


async def add_org(ctx, name, created_at=None):
    conn = ctx.conn
    if await conn.fetchval("SELECT 1 FROM users WHERE name = $1", name):
        raise Conflict(f"'{name}' is already a user: users and organizations share namespace names")
    try:
        await conn.execute("INSERT INTO orgs (name, created_at) VALUES ($1, $2)",
                           name, dates.now() if created_at is None else created_at)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"organization '{name}' already exists") from None
    return None, []


@credentials_job
async def set_member(ctx, org, user, member: bool):
    conn = ctx.conn
    org_id = await conn.fetchval("SELECT id FROM orgs WHERE name = $1", org)
    if org_id is None:
        raise NotFound(f"no organization '{org}' (create it with 'auditd org add {org}')")
    user_id = await conn.fetchval("SELECT id FROM users WHERE name = $1", user)
    if user_id is None:
        raise NotFound(f"no user '{user}' (create it with 'auditd user add {user}')")
    if member:
        await conn.execute("INSERT INTO org_members (org_id, user_id) VALUES ($1, $2) "
                           "ON CONFLICT DO NOTHING", org_id, user_id)
    elif await conn.execute("DELETE FROM org_members WHERE org_id = $1 AND user_id = $2",
                            org_id, user_id) == "DELETE 0":
        raise NotFound(f"'{user}' is not a member of '{org}'")
    return None, []


# ---------------------------------------------------------------------------- the object graph

async def object_id(ctx, uri: str):
    """The id of the object a URI names (created when new), or None for no URI."""
    if not uri:
        return None
    if uri in ctx.object_ids:
        return ctx.object_ids[uri]
    normalized = normalize_object_uri(uri)
    if not normalized:
        return None
    # Another instance may insert the same URI at the same moment: ON CONFLICT waits for it.
    found = await ctx.conn.fetchval(
        "WITH new AS (INSERT INTO objects (uri) VALUES ($1) ON CONFLICT (uri) DO NOTHING "
        "RETURNING id) SELECT id FROM new UNION ALL SELECT id FROM objects WHERE uri = $1",
        normalized)
    if len(ctx.object_ids) >= OBJECT_CACHE_ENTRIES:
        ctx.forget()
    ctx.object_ids[uri] = found
    return found


async def add_parent(ctx, child: int, parent: int):
    if (child, parent) in ctx.object_edges:
        return
    status = await ctx.conn.execute("INSERT INTO object_parents (child_id, parent_id) "
                                    "VALUES ($1, $2) ON CONFLICT DO NOTHING", child, parent)
    if status != "INSERT 0 0":    # a new edge: its filing must not race an action's (lineage.py)
        require_lineage(ctx, EXCLUSIVE)
    ctx.object_edges.add((child, parent))
    ctx.ancestors.clear()   # some object's ancestors may have grown


async def add_edges(ctx, edges: list):
    for child_uri, parent_uri in edges:
        child, parent = await object_id(ctx, child_uri), await object_id(ctx, parent_uri)
        if child is not None and parent is not None and child != parent:
            await add_parent(ctx, child, parent)


async def lineage(conn, action: dict, cache: dict | None = None) -> tuple[str, ...]:
    """The action's object, then its ancestors' URIs, nearest first (remembered in `cache`)."""
    if not action["object"]:
        return ()
    oid = action["object_id"]
    if oid is None:
        return (action["object"],)
    ancestors = cache.get(oid) if cache is not None else None
    if ancestors is None:
        ancestors = tuple(r[0] for r in await conn.fetch(ANCESTORS_SQL, oid))
        if cache is not None:
            if len(cache) >= OBJECT_CACHE_ENTRIES:
                cache.clear()
            cache[oid] = ancestors
    return (action["object"], *ancestors)


async def _changed(ctx, kind: str, action: dict) -> list:
    return [ActionChanged(kind, action, await lineage(ctx.conn, action, ctx.ancestors))]


# ---------------------------------------------------------------------------- actions

_INSERTED = [c for c in ACTION_COLUMNS if c != "id"] + ["doc"]
_INSERT_ACTION = (
    "WITH k AS (INSERT INTO action_keys (uuid, id, start_ts, object_id, namespace) "
    f"VALUES ($1, nextval('actions_id_seq'), ${_INSERTED.index('start_ts') + 1}, "
    f"${_INSERTED.index('object_id') + 1}, CASE WHEN ${_INSERTED.index('object_id') + 1}::bigint "
    f"IS NULL THEN NULL ELSE ${_INSERTED.index('namespace') + 1} END) RETURNING id) "
    f"INSERT INTO actions (id, {', '.join(chr(34) + c + chr(34) for c in _INSERTED)}) "
    f"VALUES ((SELECT id FROM k), {', '.join(f'${i + 1}' for i in range(len(_INSERTED)))}) "
    "RETURNING id")


KEY_COLUMNS = ("uuid", "id", "start_ts", "object_id", "namespace")


def key_row(action: dict) -> tuple:
    """The action's action_keys row (KEY_COLUMNS): the object's namespace only with an object."""
    oid = action["object_id"]
    return (action["uuid"], action["id"], action["start_ts"], oid,
            None if oid is None else action["namespace"])


def foreseen_lineage(ctx, record: dict) -> int:
    """The graph's lock recording `record` needs (writer.py): SHARED when every edge it names is
    one this writer has seen, else EXCLUSIVE (the edge may be new)."""
    parents = record.get("parents", ())
    if not parents:
        return SHARED
    child = ctx.object_ids.get(record["object"]) if record["object"] else None
    if record["object"] and child is None:
        return EXCLUSIVE
    for uri in parents:
        parent = ctx.object_ids.get(uri)
        if parent is None:
            return EXCLUSIVE
        if child is not None and child != parent and (child, parent) not in ctx.object_edges:
            return EXCLUSIVE
        child = parent
    return SHARED


async def _prepared_action(ctx, record: dict) -> dict:
    """The row for a new action, its object and parent edges recorded, its JSON rendered."""
    require_lineage(ctx, SHARED)
    action = {k: v for k, v in record.items() if k != "parents"}
    action["object_id"] = await object_id(ctx, action["object"])
    child = action["object_id"]
    for parent_uri in record.get("parents", ()):
        parent = await object_id(ctx, parent_uri)
        if parent is None or parent == child:
            continue
        if child is not None:
            await add_parent(ctx, child, parent)
        child = parent
    action["log_count"] = 0
    for flag in ("is_user_action", "cancelable", "retriable"):
        action[flag] = int(bool(action[flag]))
    action["doc"] = render_action(action)
    return action


@lineage_mode(foreseen_lineage)
async def insert_action(ctx, record: dict):
    action = await _prepared_action(ctx, record)
    try:
        action["id"] = await ctx.conn.fetchval(_INSERT_ACTION, *(action[c] for c in _INSERTED))
    except asyncpg.UniqueViolationError:
        raise Conflict(f"an action with uuid {action['uuid']} already exists") from None
    return action, await _changed(ctx, "create", action)


async def insert_actions(ctx, jobs: list[tuple]) -> list:
    """`insert_action` for many records: ids drawn at once, keys and rows written by COPY.
    Raises on any conflict; the writer then runs the records one by one."""
    actions = [await _prepared_action(ctx, record) for (record,) in jobs]
    ids = await ctx.conn.fetch("SELECT nextval('actions_id_seq') FROM generate_series(1, $1)",
                               len(actions))
    for action, (new_id,) in zip(actions, ids):
        action["id"] = new_id
    await ctx.conn.copy_records_to_table(
        "action_keys", columns=KEY_COLUMNS, records=[key_row(a) for a in actions])
    await ctx.conn.copy_records_to_table(
        "actions", columns=("id", *_INSERTED),
        records=[(a["id"], *(a[c] for c in _INSERTED)) for a in actions])
    return [(action, await _changed(ctx, "create", action)) for action in actions]


insert_action.bulk = insert_actions   # consecutive records in one batch go in together


async def load_action(ctx, uuid: str, namespaces, columns=ACTION_COLUMNS) -> dict:
    """The action, its row locked until the transaction ends; NotFound when it is not visible."""
    row = await ctx.conn.fetchrow(
        f"SELECT {', '.join(chr(34) + c + chr(34) for c in columns)} FROM actions" + BY_UUID
        + " FOR UPDATE", uuid)
    check_visible(uuid, row["namespace"] if row else None, namespaces)
    return row_dict(row, columns)


async def set_state(ctx, action: dict, state: str):
    action = moved(action, state)
    action["doc"] = render_action(action)
    await ctx.conn.execute(
        "UPDATE actions SET state = $1, end_ts = $2, doc = $3 WHERE id = $4 AND start_ts = $5",
        state, action["end_ts"], action["doc"], action["id"], action["start_ts"])
    return action, await _changed(ctx, "update", action)


@locks_action
async def change_state(ctx, uuid, state, namespaces):
    action = await load_action(ctx, uuid, namespaces)
    check_move(action, state)
    return await set_state(ctx, action, state)


@locks_action
async def cancel(ctx, uuid, namespaces):
    action = await load_action(ctx, uuid, namespaces)
    return await set_state(ctx, action, cancel_state(action))


@locks_action
@lineage_mode(SHARED)
async def retry(ctx, uuid, namespaces, caller):
    original = await load_action(ctx, uuid, namespaces)
    return await insert_action(ctx, retry_record(original, caller))


@locks_action
async def append_logs(ctx, uuid, lines, namespaces):
    # FOR UPDATE: two instances appending to one action number their lines one after the other.
    row = await ctx.conn.fetchrow(
        "SELECT id, start_ts, namespace, log_count FROM actions" + BY_UUID + " FOR UPDATE", uuid)
    check_visible(uuid, row["namespace"] if row else None, namespaces)
    action_id, start_ts, first = row["id"], row["start_ts"], row["log_count"] + 1
    stored = [(action_id, start_ts, first + i, ts, stream, line)
              for i, (ts, stream, line) in enumerate(lines)]
    if stored:
        await ctx.conn.copy_records_to_table(
            "action_logs", records=stored, columns=LOG_COLUMNS) if len(stored) > 50 else \
            await ctx.conn.executemany(
                "INSERT INTO action_logs (action_id, start_ts, seq, ts, stream_type, line) "
                "VALUES ($1, $2, $3, $4, $5, $6)", stored)
        await ctx.conn.execute("UPDATE actions SET log_count = $1 WHERE id = $2 AND start_ts = $3",
                               row["log_count"] + len(lines), action_id, start_ts)
    return len(lines), [LinesAppended(action_id, [s[2:] for s in stored])] if stored else []


async def append_many(ctx, jobs: list[tuple]) -> list:
    """`append_logs` for a run of appends (to one action or several): the actions read and
    locked at once, every line written by one COPY, every log_count set by one UPDATE. Raises
    when any append fails; the writer then runs them one by one."""
    rows = await ctx.conn.fetch(
        "SELECT k.uuid, a.id, a.start_ts, a.namespace, a.log_count FROM action_keys k "
        "JOIN actions a ON (a.id, a.start_ts) = (k.id, k.start_ts) "
        "WHERE k.uuid = ANY($1::text[]) FOR UPDATE OF a", sorted({job[0] for job in jobs}))
    known = {r["uuid"]: dict(r) for r in rows}
    results, stored_all = [], []
    for uuid, lines, namespaces in jobs:
        row = known.get(uuid)
        check_visible(uuid, row["namespace"] if row else None, namespaces)
        first = row["log_count"] + 1
        stored = [(row["id"], row["start_ts"], first + i, ts, stream, line)
                  for i, (ts, stream, line) in enumerate(lines)]
        row["log_count"] += len(lines)
        stored_all += stored
        results.append((len(lines), [LinesAppended(row["id"], [s[2:] for s in stored])]
                        if stored else []))
    if stored_all:
        await ctx.conn.copy_records_to_table("action_logs", records=stored_all,
                                             columns=LOG_COLUMNS)
        await ctx.conn.execute(
            "UPDATE actions SET log_count = u.n FROM unnest($1::bigint[], $2::bigint[], "
            "$3::int[]) AS u(id, s, n) WHERE actions.id = u.id AND actions.start_ts = u.s",
            [r["id"] for r in known.values()], [r["start_ts"] for r in known.values()],
            [r["log_count"] for r in known.values()])
    return results


append_logs.bulk = append_many
