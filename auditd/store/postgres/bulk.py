"""Import in bulk (`Store.import_batch`, hence `auditd import` and `auditd migrate`): a batch of
records written by a handful of set-based statements and COPY, instead of a savepoint and a
dozen statements per record.

It writes what the record-by-record path (lifecycle.import_one) writes: the same rows, the same
rendered doc, objects created in the same order (so their ids sort the same) and action ids in
record order. Records it does not create (already stored, or seen earlier in the batch) and
`logs_of` items go through the record-by-record path afterwards, in order. Anything unusual
(a `logs_of` item before its action, a value PostgreSQL refuses, a uuid another instance just
stored) raises, and the caller runs the whole batch record by record instead, where each record
meets its own error.
"""
from ...model.document import render_action
from ...model.uris import normalize_object_uri
from .jobs import _INSERTED, KEY_COLUMNS, LOG_COLUMNS, OBJECT_CACHE_ENTRIES, key_row
from .writer import EXCLUSIVE, SHARED, require_lineage


class NotBulk(Exception):
    """This batch is for the record-by-record path."""


async def _object_ids(ctx, uris: list[str]):
    """Make sure every URI (raw, as recorded) has its object, created in this order when new;
    ctx.object_ids then knows them all."""
    if len(ctx.object_ids) + len(uris) >= OBJECT_CACHE_ENTRIES:
        ctx.forget()
    wanted, normalized = [], {}
    for uri in uris:
        if uri in ctx.object_ids or uri in normalized:
            continue
        normalized[uri] = normalize_object_uri(uri)
        if normalized[uri] and normalized[uri] not in wanted:
            wanted.append(normalized[uri])
    if not normalized:
        return
    ids = {}
    if wanted:
        await ctx.conn.execute(
            "INSERT INTO objects (uri) SELECT u FROM unnest($1::text[]) WITH ORDINALITY AS t(u, n) "
            "ORDER BY n ON CONFLICT (uri) DO NOTHING", wanted)
        ids = dict(await ctx.conn.fetch("SELECT uri, id FROM objects WHERE uri = ANY($1::text[])",
                                        wanted))
    for uri, norm in normalized.items():
        ctx.object_ids[uri] = ids[norm] if norm else None


async def import_items(ctx, items: list, import_one) -> list[tuple]:
    """Results [(lineno, outcome, lines added, error)] in item order; see the module's text."""
    conn = ctx.conn
    uuids = [item[2]["uuid"] for item in items if item[0] == "action"]
    stored = {r[0] for r in await conn.fetch(
        "SELECT uuid FROM action_keys WHERE uuid = ANY($1::text[])", uuids)}
    new, first_new, uris, edges = [], {}, [], []
    for at, item in enumerate(items):
        if item[0] != "action":
            continue
        record, record_edges = item[2], item[3]
        if record["uuid"] not in stored and record["uuid"] not in first_new:
            first_new[record["uuid"]] = at
            new.append(at)
            uris.append(record["object"])
        for child, parent in record_edges:
            uris += [child, parent]
            edges.append((child, parent))
    if any(item[0] != "action" and first_new.get(item[2], at) > at
           for at, item in enumerate(items)):
        raise NotBulk("log lines before their action")
    await _object_ids(ctx, [uri for uri in uris if uri])
    await _edges(ctx, edges)
    results = await _insert_new(ctx, [(at, items[at]) for at in new]) if new else {}
    return [results[at] if at in results else await import_one(ctx, item)
            for at, item in enumerate(items)]


async def _edges(ctx, edges: list):
    pairs = []
    for child_uri, parent_uri in edges:
        child, parent = ctx.object_ids.get(child_uri), ctx.object_ids.get(parent_uri)
        if child is None or parent is None or child == parent:
            continue
        if (child, parent) not in ctx.object_edges and (child, parent) not in pairs:
            pairs.append((child, parent))
    if pairs:
        require_lineage(ctx, EXCLUSIVE)   # they may be new (lineage.py)
        await ctx.conn.execute(
            "INSERT INTO object_parents (child_id, parent_id) SELECT * FROM "
            "unnest($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING", *zip(*pairs))
        ctx.object_edges.update(pairs)
        ctx.ancestors.clear()


async def _insert_new(ctx, new: list) -> dict:
    """The new actions [(position in the batch, item)] with their lines, by COPY; their results
    by position."""
    require_lineage(ctx, SHARED)
    conn = ctx.conn
    ids = sorted(r[0] for r in await conn.fetch(
        "SELECT nextval('actions_id_seq') FROM generate_series(1, $1)", len(new)))
    keys, rows, lines, results = [], [], [], {}
    for new_id, (at, (_, lineno, record, _, logs)) in zip(ids, new):
        action = {k: v for k, v in record.items() if k != "parents"}
        action["id"] = new_id
        action["object_id"] = ctx.object_ids.get(action["object"]) if action["object"] else None
        for flag in ("is_user_action", "cancelable", "retriable"):
            action[flag] = int(bool(action[flag]))
        seqs = {}
        for seq, ts, stream_type, line in logs:      # the first of a repeated seq is kept
            seqs.setdefault(seq, (new_id, action["start_ts"], seq, ts, stream_type, line))
        action["log_count"] = max(seqs) if seqs else 0
        action["doc"] = render_action(action)
        keys.append(key_row(action))
        rows.append((new_id, *(action[c] for c in _INSERTED)))
        lines += seqs.values()
        results[at] = (lineno, "imported", len(seqs), None)
    await conn.copy_records_to_table("action_keys", columns=KEY_COLUMNS, records=keys)
    await conn.copy_records_to_table("actions", columns=("id", *_INSERTED), records=rows)
    if lines:
        await conn.copy_records_to_table("action_logs", columns=LOG_COLUMNS, records=lines)
    return results
