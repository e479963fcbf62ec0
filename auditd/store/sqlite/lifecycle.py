"""The SQL of the data lifecycle: export, import, purge, reset and fixture loads.

- Export reads pages of actions by keyset over (start_ts, id), each page and its log lines in a few
  bounded reads, so memory stays flat whatever the database holds.
- Import and purge are writer jobs of bounded size: each runs inside the writer's group-commit
  transaction and leaves the writer free for the server's own writes between batches.
- Reset and fixture loads are one writer job each, so either all of it happens or none of it does.

The store (`__init__.py`) calls these with itself; they use its private readers and writer, which
is why they live inside the backend.
"""
import sqlite3
from collections import defaultdict

from ... import leaves
from ...model import dates
from ...model.actions import FINAL_STATES
from ...model.notes import ActionsRemoved
from . import lineage, tallies, tree
from .database import savepoint
from .jobs import STORED_COLUMNS, add_parent, append_logs, insert_action, object_id, stored
from .writer import heavy_job

_FINAL = tuple(sorted(FINAL_STATES))


# ---------------------------------------------------------------------------- export

def _export_where(filters: dict) -> tuple[list[str], list]:
    """WHERE terms for export filters: states, namespaces (lists), since, until (Unix seconds).

    A filter on several states or namespaces gets a unary `+` so SQLite walks (start_ts, id) in
    order instead of merging several index ranges and sorting every page."""
    where, params = [], []
    for column in ("state", "namespace"):
        values = sorted(set(filters.get(column + "s") or ()))
        if len(values) == 1:
            where.append(f"{column} = ?")
        elif values:
            where.append(f"+{column} IN ({', '.join('?' * len(values))})")
        params.extend(values)
    if filters.get("since") is not None:
        where.append("start_ts >= ?")
        params.append(filters["since"])
    if filters.get("until") is not None:
        where.append("start_ts < ?")
        params.append(filters["until"])
    return where, params


async def count_actions(store, filters: dict) -> int:
    where, params = _export_where(filters)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return (await store._read(f"SELECT count(*) FROM actions{clause}", params))[0][0]


async def _graph_edges(store, object_ids) -> dict[int, list[list[str]]]:
    """For each object: every [child URI, parent URI] edge reachable upward from it."""
    ids = sorted({i for i in object_ids if i is not None})
    if not ids:
        return {}
    rows = await store._read(
        "WITH RECURSIVE up(start, id) AS ("
        f"  SELECT id, id FROM objects WHERE id IN ({', '.join('?' * len(ids))}) UNION "
        "  SELECT up.start, p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id) "
        "SELECT up.start, c.uri, pu.uri FROM up "
        "JOIN object_parents p ON p.child_id = up.id "
        "JOIN objects c ON c.id = p.child_id JOIN objects pu ON pu.id = p.parent_id "
        "ORDER BY up.start, c.id, pu.id", ids)
    edges = defaultdict(list)
    for start, child, parent in rows:
        edges[start].append([child, parent])
    return edges


async def _log_chunks(store, action: dict, chunk: int):
    """One action's log lines [(seq, ts, stream_type, line)] in chunks of at most `chunk`, up to
    the log_count read with the action (lines appended since belong to a later export)."""
    after = 0
    while after < action["log_count"]:
        rows = await store._read(
            "SELECT seq, ts, stream_type, line FROM action_logs "
            "WHERE action_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (action["id"], after, action["log_count"], chunk))
        if not rows:
            return
        yield rows
        after = rows[-1][0]


async def _logs_of_group(store, group: list[dict]) -> dict[int, list]:
    ids = [a["id"] for a in group if a["log_count"]]
    if not ids:
        return {}
    rows = await store._read(
        "SELECT l.action_id, l.seq, l.ts, l.stream_type, l.line FROM action_logs l "
        f"WHERE l.action_id IN ({', '.join('?' * len(ids))}) "
        "AND l.seq <= (SELECT log_count FROM actions a WHERE a.id = l.action_id) "
        "ORDER BY l.action_id, l.seq", ids)
    logs = defaultdict(list)
    for action_id, *line in rows:
        logs[action_id].append(tuple(line))
    return logs


async def export_actions(store, filters: dict, with_logs: bool = True, page_size: int = 200,
                         log_chunk: int = 1000):
    """Every matching action, oldest first, as:

    ("action", action, edges, logs) -- the action's columns (and `doc`), its object's graph edges
        and its first log lines (all of them unless it has more than `log_chunk`);
    ("logs", action, logs) -- the next `log_chunk` lines of the action just yielded.
    """
    where, params = _export_where(filters)
    after = None
    while True:
        terms, page_params = list(where), list(params)
        if after is not None:
            terms.append("(start_ts, id) > (?, ?)")
            page_params.extend(after)
        clause = (" WHERE " + " AND ".join(terms)) if terms else ""
        rows = await store._read(
            f"SELECT {', '.join(STORED_COLUMNS)} FROM actions{clause} "
            "ORDER BY start_ts, id LIMIT ?", [*page_params, page_size])
        if not rows:
            return
        page = [stored(row) for row in rows]
        after = (page[-1]["start_ts"], page[-1]["id"])
        edges = await _graph_edges(store, (a["object_id"] for a in page)) if with_logs else {}
        # Log lines are read for groups of actions holding at most `log_chunk` lines together;
        # an action with more is read alone, chunk by chunk.
        group, group_lines = [], 0
        for i, action in enumerate(page):
            group.append(action)
            group_lines += action["log_count"]
            last = i == len(page) - 1
            if not last and group_lines + page[i + 1]["log_count"] <= log_chunk:
                continue
            small = await _logs_of_group(store, [a for a in group if a["log_count"] <= log_chunk]) \
                if with_logs else {}
            for member in group:
                object_edges = edges.get(member["object_id"], [])
                if not with_logs or member["log_count"] <= log_chunk:
                    yield "action", member, object_edges, small.get(member["id"], [])
                    continue
                first = True
                async for chunk in _log_chunks(store, member, log_chunk):
                    if first:
                        yield "action", member, object_edges, chunk
                        first = False
                    else:
                        yield "logs", member, chunk
                if first:   # its lines were purged meanwhile
                    yield "action", member, object_edges, []
            group, group_lines = [], 0


# ---------------------------------------------------------------------------- import

@heavy_job
def import_batch(conn, items: list):
    """Writer job: import parsed records, each in its own savepoint; an existing uuid is skipped.

    items: ("action", lineno, record, edges, logs) or ("logs", lineno, uuid, logs), where record is
    a complete action (as `new_action` makes), edges [[child URI, parent URI]] and logs
    [(seq, ts, stream_type, line)]. Log lines are keyed by (action, seq), so lines already there
    are left alone: importing a file again adds nothing, and a resumed import completes the logs.
    Returns ([(lineno, outcome, lines_added, error)], no notes); outcome is imported, skipped or
    error.
    """
    results = []
    for kind, lineno, *rest in items:
        try:
            with savepoint(conn, "import_record"):
                if kind == "action":
                    outcome, added = _import_action(conn, *rest)
                else:
                    outcome, added = _import_logs(conn, *rest)
        except (sqlite3.IntegrityError, LookupError) as err:
            results.append((lineno, "error", 0, str(err)))
            continue
        results.append((lineno, outcome, added, None))
    return results, []


def _import_action(conn, record: dict, edges: list, logs: list):
    row = conn.execute("SELECT id FROM actions WHERE uuid = ?", (record["uuid"],)).fetchone()
    outcome = "skipped"
    if row is None:
        action, _ = insert_action(conn, dict(record, parents=[]))
        row, outcome = (action["id"],), "imported"
    _add_edges(conn, edges)
    return outcome, _insert_logs(conn, row[0], logs)


def _add_edges(conn, edges: list):
    for child_uri, parent_uri in edges:
        child, parent = object_id(conn, child_uri), object_id(conn, parent_uri)
        if child is not None and parent is not None and child != parent:
            add_parent(conn, child, parent)


def _import_logs(conn, uuid: str, logs: list):
    row = conn.execute("SELECT id FROM actions WHERE uuid = ?", (uuid,)).fetchone()
    if row is None:
        raise LookupError(f"log lines for action {uuid}, which is neither in the database nor "
                          "on an earlier line of the file")
    return "logs", _insert_logs(conn, row[0], logs)


def _insert_logs(conn, action_id: int, logs: list) -> int:
    if not logs:
        return 0
    before = conn.total_changes
    had = conn.execute("SELECT log_count, uuid FROM actions WHERE id = ?", (action_id,)).fetchone()
    conn.executemany("INSERT OR IGNORE INTO action_logs (action_id, seq, ts, stream_type, line) "
                     "VALUES (?, ?, ?, ?, ?)", [(action_id, *line) for line in logs])
    added = conn.total_changes - before
    new = sorted(line for line in logs if line[0] > had[0])
    if new and [line[0] for line in new] == list(range(had[0] + 1, had[0] + 1 + len(new))):
        # the lines that continue the log enter the tree as one batch (a gap, as a resumed
        # import of a partial file may leave, does not: `auditd verify` names such an action)
        tree.add(conn, action_id, leaves.logs_leaf(had[1], had[0] + 1,
                                                   [line[1:] for line in new]))
    if added:
        # The next appended line takes log_count + 1, so log_count must cover the highest seq.
        conn.execute("UPDATE actions SET log_count = max(log_count, ?) WHERE id = ?",
                     (max(line[0] for line in logs), action_id))
    return added


# ---------------------------------------------------------------------------- purge

# The unary + keeps SQLite on actions_by_end: each batch then starts at the oldest end date
# instead of sorting every final action again.
_PURGEABLE = f"+state IN ({', '.join('?' * len(_FINAL))}) AND end_ts < ?"


async def count_purgeable(store, cut: int) -> tuple[int, int]:
    """(actions, log lines) that a purge of final actions ended before `cut` would remove."""
    rows = await store._read(
        f"SELECT count(*), coalesce(sum(log_count), 0) FROM actions WHERE {_PURGEABLE}",
        (*_FINAL, cut))
    return rows[0][0], rows[0][1]


@heavy_job
def purge_batch(conn, cut: int, max_rows: int):
    """Writer job: delete final actions that ended before `cut`, oldest first, touching at most
    about `max_rows` rows (actions plus log lines), so the writer is never held long.
    Returns ((actions removed, log lines removed, done), no notes)."""
    candidates = conn.execute(
        f"SELECT id, log_count, {', '.join(tallies.TALLY_FIELDS)}, object_id FROM actions "
        f"WHERE {_PURGEABLE} ORDER BY end_ts, id LIMIT ?",
        (*_FINAL, cut, max_rows)).fetchall()
    if not candidates:
        return (0, 0, True), []
    budget, removed_actions, removed_lines = max_rows, [], 0
    uuids = {row[0]: row[2] for row in candidates}
    gone = {row[0]: tallies.tallied(row[2:]) for row in candidates}
    for action_id, log_count, *_ in candidates:
        if log_count + 1 > budget:
            if not removed_actions:   # a long log goes away in several batches, oldest lines first
                lines = conn.execute(
                    "DELETE FROM action_logs WHERE action_id = ? AND seq IN (SELECT seq FROM "
                    "action_logs WHERE action_id = ? ORDER BY seq LIMIT ?)",
                    (action_id, action_id, budget)).rowcount
                removed_lines += lines
                if lines < budget:    # those were its last lines (log_count stays as it was)
                    conn.execute("DELETE FROM actions WHERE id = ?", (action_id,))
                    removed_actions.append(action_id)
            break
        lines = conn.execute("DELETE FROM action_logs WHERE action_id = ?", (action_id,)).rowcount
        conn.execute("DELETE FROM actions WHERE id = ?", (action_id,))
        removed_actions.append(action_id)
        removed_lines += lines
        budget -= lines + 1
    tallies.apply(conn, [(gone[a], None) for a in removed_actions], prune=True)
    filed = {row[0]: (row[-1], gone[row[0]]["start_ts"], gone[row[0]]["namespace"])
             for row in candidates}
    lineage.unfile(conn, [(a, *filed[a]) for a in removed_actions])
    tree.purge_actions(conn, [(a, uuids[a]) for a in removed_actions], dates.now())
    return (len(removed_actions), removed_lines, False), []


async def purge(store, cut: int, max_rows: int = 2000, on_progress=None) -> tuple[int, int]:
    """Remove every final action that ended before `cut` with its log lines, batch by batch.
    Returns (actions removed, log lines removed)."""
    actions = lines = 0
    while True:
        removed, removed_lines, done = await store._write(purge_batch, cut, max_rows)
        actions += removed
        lines += removed_lines
        if done:
            return actions, lines
        if on_progress is not None:
            on_progress(actions, lines)


# ---------------------------------------------------------------------------- reset and fixtures

@heavy_job
def reset(conn):
    counts = {
        "actions": conn.execute("SELECT count(*) FROM actions").fetchone()[0],
        "log_lines": conn.execute("SELECT count(*) FROM action_logs").fetchone()[0],
        "objects": conn.execute("SELECT count(*) FROM objects").fetchone()[0],
    }
    conn.execute("DELETE FROM action_logs")
    conn.execute("DELETE FROM actions")
    conn.execute("DELETE FROM object_parents")
    conn.execute("DELETE FROM objects")
    conn.execute("UPDATE graph_version SET v = v + 1")   # object ids will be given again
    conn.execute("DELETE FROM action_counts")
    conn.execute("DELETE FROM tallies")
    conn.execute("DELETE FROM prefix_journal")
    conn.execute("DELETE FROM tally_splits")
    conn.execute("DELETE FROM action_ancestors")
    conn.execute("DELETE FROM ancestor_counts")
    tree.clear(conn)              # a stand-in reset: the history goes with every action
    if hasattr(conn, "forget"):   # the objects it knew are gone
        conn.forget()
    return counts, [ActionsRemoved()]


@heavy_job
def load(conn, items):
    """items: [(record, edges, lines)]: a record as `new_action` makes it (its uuid kept), graph
    edges [child URI, parent URI], lines as for `append_logs`. Returns the stored actions, in the
    order given."""
    loaded, notes = [], []
    for record, edges, lines in items:
        _add_edges(conn, edges)   # first, so the action's lineage includes them
        action, action_notes = insert_action(conn, record)
        notes.extend(action_notes)
        if lines:
            count, log_notes = append_logs(conn, action["uuid"], lines, None)
            action["log_count"] = count
            notes.extend(log_notes)
        loaded.append(action)
    return loaded, notes
