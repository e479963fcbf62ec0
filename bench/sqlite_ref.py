"""The disk reference: Python's sqlite3 inserting the same action rows, in batches, synchronous=FULL.

Same schema (indexes and count triggers included), same columns and rendered JSON as auditd stores,
WAL mode like the server; one transaction per batch. This is what the disk allows, with no HTTP and
no event loop in the way.
"""
import sqlite3
import time
import uuid as uuidlib
from pathlib import Path



def sample_rows(source: Path, count: int = 2000) -> tuple[list[str], list[tuple]]:
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    cursor = conn.execute("SELECT * FROM actions WHERE object_id IS NOT NULL LIMIT ?", (count,))
    columns = [d[0] for d in cursor.description if d[0] != "id"]
    rows = [tuple(r[1:]) for r in cursor.fetchall()]
    conn.close()
    return columns, rows


def insert_rate(source: Path, target: Path, batch: int, seconds: float) -> float:
    """Rows/s inserting `batch` rows per transaction for about `seconds`."""
    columns, rows = sample_rows(source)
    uuid_at = columns.index("uuid")
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    from . import procs
    conn.executescript((procs.REPO / "schema.sql").read_text())
    sql = (f"INSERT INTO actions ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' * len(columns))})")
    done, at, began = 0, 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        chunk = []
        for _ in range(batch):
            row = list(rows[at % len(rows)])
            row[uuid_at] = str(uuidlib.uuid4())
            chunk.append(row)
            at += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, chunk)
        conn.execute("COMMIT")
        done += batch
    elapsed = time.perf_counter() - began
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    return done / elapsed
