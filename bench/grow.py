"""A bigger benchmark database from the 1M one, for the growth figures (bench/filters.py).

    .venv/bin/python -m bench.grow 10000000

Building 10M actions through the store's API (bench/build.py) takes over an hour here, so the
10M database is the 1M one ten times over, in SQL: every copy keeps its original's namespace,
user, action, object, state and times, so the same year holds ten times the actions and every
query's answer grows tenfold; each copy's uuid is its original's with the first hex digit moved on
by k (copy k), so uuids stay unique and uniformly spread for the prefix queries; its document is its original's with the uuid replaced.
The tallies are the original's times ten (they do not depend on the uuid) and the uuid-prefix
tallies are counted again; every action is filed under its object's ancestors again. Log lines and the tamper-evident log cover the first million only
(`auditd verify` says so on this file); nothing the list queries read depends on them.
"""
import os
import sqlite3
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import build, procs  # noqa: E402

SOURCE = 1_000_000
_HEX = "0123456789abcdef"
COLUMNS = ("uuid", "namespace", "state", "action", "method", "path", "object", "object_id",
           "user", "user_agent", "ip", "location", "body", "start_ts", "end_ts",
           "is_user_action", "cancelable", "retriable", "log_count", "doc")


def _new_uuid(k: int) -> str:
    """SQL for copy k's uuid: its original's with the first hex digit moved k places on, so no
    copy meets its original or another copy, and prefixes stay uniformly spread."""
    return (f"substr('{_HEX}', (instr('{_HEX}', substr(uuid, 1, 1)) + {k - 1}) % 16 + 1, 1) "
            "|| substr(uuid, 2)")


def grow(size: int, log=print) -> Path:
    factor = size // SOURCE
    if factor * SOURCE != size or factor < 2 or factor > 10:
        raise SystemExit(f"--size {size:,}: a multiple of {SOURCE:,} up to ten of them")
    path = build.db_path(size)
    if path.exists():
        return path
    source = build.ensure_database(SOURCE, log)
    partial = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    sys.path.insert(0, str(procs.REPO))
    from auditd.store.sqlite.database import prepare_database
    prepare_database(str(source))           # the source at the current schema (tallies)
    log(f"copying {source.name} ({source.stat().st_size / 1e9:.1f} GB)")
    import shutil
    shutil.copyfile(source, partial)
    conn = sqlite3.connect(partial, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                           "AND tbl_name = 'actions' AND sql IS NOT NULL").fetchall()
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                            "AND tbl_name = 'actions'").fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    cols = ", ".join(COLUMNS)
    started = time.monotonic()
    for k in range(1, factor):
        values = list(COLUMNS)
        values[COLUMNS.index("uuid")] = _new_uuid(k)
        values[COLUMNS.index("doc")] = f"replace(doc, uuid, {_new_uuid(k)})"
        values[COLUMNS.index("log_count")] = "0"
        conn.execute(f"INSERT INTO actions (id, {cols}) SELECT id + {k * SOURCE}, "
                     f"{', '.join(values)} FROM actions WHERE id <= {SOURCE} ORDER BY id")
        log(f"  copy {k} of {factor - 1}: {time.monotonic() - started:.0f} s")
    log("counting: action_counts and tallies times ten, uuid prefixes again")
    conn.execute(f"UPDATE action_counts SET n = n * {factor}")
    conn.execute(f"UPDATE tallies SET pending = pending * {factor}, in_progress = in_progress * "
                 f"{factor}, canceling = canceling * {factor}, canceled = canceled * {factor}, "
                 f"success = success * {factor}, failed = failed * {factor} "
                 "WHERE kind NOT IN ('p', 'np')")
    from auditd.store.sqlite.tallies import recount_prefixes
    recount_prefixes(conn)
    for name, sql in indexes:
        log(f"  index {name}: {time.monotonic() - started:.0f} s")
        conn.execute(sql)
    for _, sql in triggers:
        conn.execute(sql)
    log(f"  filing the actions under their objects' ancestors: {time.monotonic() - started:.0f} s")
    from auditd.store.sqlite import lineage
    lineage.rebuild(conn)
    conn.execute("COMMIT")
    conn.close()
    os.replace(partial, path)
    log(f"{path.name}: {size:,} actions in {time.monotonic() - started:.0f} s")
    return path


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(grow(int(arg)))
