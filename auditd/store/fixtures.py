"""Writes for the test stand-in mode: wiping every action, and loading prepared actions with their
log lines. Both are one writer job each, so either all of it happens or none of it does."""
from . import Store, _append_logs, _insert_action, heavy_job


@heavy_job
def _reset(conn):
    counts = {
        "actions": conn.execute("SELECT count(*) FROM actions").fetchone()[0],
        "log_lines": conn.execute("SELECT count(*) FROM action_logs").fetchone()[0],
        "objects": conn.execute("SELECT count(*) FROM objects").fetchone()[0],
    }
    conn.execute("DELETE FROM action_logs")
    conn.execute("DELETE FROM actions")
    conn.execute("DELETE FROM object_parents")
    conn.execute("DELETE FROM objects")
    conn.execute("DELETE FROM action_counts")
    return counts, []


@heavy_job
def _load(conn, items):
    """items: [(record, lines)], record as made by `new_action` (its uuid kept), lines as for
    `append_logs`. Returns the stored actions, in the order given."""
    loaded, notes = [], []
    for record, lines in items:
        action, action_notes = _insert_action(conn, record)
        notes.extend(action_notes)
        if lines:
            count, log_notes = _append_logs(conn, action["uuid"], lines, None)
            action["log_count"] = count
            notes.extend(log_notes)
        loaded.append(action)
    return loaded, notes


async def reset(store: Store) -> dict:
    """Delete every action, log line and object (users and organizations stay); returns counts."""
    return await store._write(_reset)


async def load(store: Store, items) -> list[dict]:
    return await store._write(_load, items)


async def has_actions(store: Store) -> bool:
    rows = await store._read("SELECT EXISTS (SELECT 1 FROM actions)")
    return bool(rows[0][0])
