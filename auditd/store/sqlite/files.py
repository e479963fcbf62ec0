"""Backup and check: they work on the database file with their own sqlite3 connection, and must
not create, migrate or otherwise change the database they look at."""
import fcntl
import os
import sqlite3
from pathlib import Path

from ...model.actions import STATES
from ...model.errors import AuditdError, SchemaVersionError
from . import lineage, tallies
from .database import SCHEMA_VERSION


def _open_existing(path: str) -> sqlite3.Connection:
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def backup(source: str, target: str) -> dict:
    """A consistent copy of `source` at `target` (which must not exist), made with SQLite's online
    backup API in one step: one read snapshot, so writers go on and the copy never restarts.
    The copy is switched out of WAL mode so that it is one self-contained file. Returns its
    schema version and counts."""
    partial = Path(target + ".partial")
    partial.unlink(missing_ok=True)
    src = _open_existing(source)
    try:
        dest = sqlite3.connect(partial, isolation_level=None)
        try:
            src.backup(dest)   # pages=-1: all of it from one snapshot
            dest.execute("PRAGMA journal_mode = DELETE")
            problems = [r[0] for r in dest.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("the copy fails its check: " + "; ".join(problems[:5]))
            summary = _summary(dest)
        finally:
            dest.close()
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
        return summary
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()


def _summary(conn) -> dict:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    counts = {}
    for table in ("actions", "action_logs", "users", "orgs", "objects"):
        counts[table] = (conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                         if table in tables else None)
    states = dict.fromkeys(STATES, 0)
    if "actions" in tables:
        states.update(conn.execute("SELECT state, count(*) FROM actions GROUP BY state").fetchall())
    return {"schema_version": version, "counts": counts, "states": states}


def check(path: str, say=lambda message: None) -> dict:
    """Integrity of an auditd database file: SQLite's own checks plus auditd's invariants (the
    counts, the tallies and include_related's filing against the actions, the log lines against
    their actions), all read in one snapshot, so a server may go on writing; each step said as
    it starts. Returns {"problems": [...], "schema_version", "counts", "states"}; nothing is
    changed."""
    conn = _open_existing(path)
    try:
        problems = []
        try:
            conn.execute("BEGIN")
            say(f"every page with SQLite's integrity check ({Path(path).stat().st_size / 1e6:,.1f}"
                " MB: the longest step)")
            integrity = [r[0] for r in conn.execute("PRAGMA integrity_check(100)")]
        except sqlite3.DatabaseError as err:
            what = ("it is not an SQLite database: is --db the file 'auditd serve' uses?"
                    if "not a database" in str(err) else f"SQLite cannot read it: {err}")
            return {"problems": [what],
                    "schema_version": None, "counts": {}, "states": {}}
        if integrity != ["ok"]:
            problems.extend(f"integrity: {line}" for line in integrity)
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"foreign key: {table} row {rowid} points to a missing {parent} row")
        try:
            summary = _summary(conn)
        except sqlite3.DatabaseError as err:
            problems.append(f"counting rows failed: {err}")
            return {"problems": problems, "schema_version": None, "counts": {}, "states": {}}
        version = summary["schema_version"]
        if version == 0:
            problems.append("no schema version: this is not an auditd database")
        elif version > SCHEMA_VERSION:
            problems.append(f"schema version {version} is newer than this auditd knows "
                            f"({SCHEMA_VERSION}): check it with a newer auditd")
        elif summary["counts"]["actions"] is not None:
            say("the counts per namespace and state")
            problems.extend(_count_mismatches(conn))
            if version == SCHEMA_VERSION:      # an older one gets these when it is migrated
                problems.extend(tallies.mismatches(conn, say))
                say("include_related's filing, against the object graph")
                problems.extend(lineage.mismatches(conn))
                say("the log lines, against their actions")
                problems.extend(_log_mismatches(conn))
        return {"problems": problems, **summary}
    finally:
        conn.close()


def _count_mismatches(conn) -> list[str]:
    """action_counts (kept by triggers, used for total_count) against the actions themselves."""
    rows = conn.execute(
        "SELECT namespace, state, sum(kept), sum(real) FROM ("
        "  SELECT namespace, state, n AS kept, 0 AS real FROM action_counts UNION ALL "
        "  SELECT namespace, state, 0, count(*) FROM actions GROUP BY namespace, state) "
        "GROUP BY namespace, state HAVING sum(kept) != sum(real)").fetchall()
    return [f"action_counts says {kept} {state} actions in namespace '{ns}', there are {real}"
            for ns, state, kept, real in rows]


def _log_mismatches(conn) -> list[str]:
    beyond = conn.execute("SELECT count(*) FROM action_logs l JOIN actions a ON a.id = "
                          "l.action_id WHERE l.seq > a.log_count").fetchone()[0]
    return [f"{beyond} log lines are numbered beyond their action's log_count"] if beyond else []


def quick_check(path: str):
    """SQLite's quick_check, for `serve --check-on-start`: SchemaVersionError (the start stops)
    naming what is wrong."""
    conn = _open_existing(path)
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(20)")]
    except sqlite3.DatabaseError as err:
        problems = [str(err)]
    finally:
        conn.close()
    if problems != ["ok"]:
        raise SchemaVersionError(f"{path} fails SQLite's quick_check ({'; '.join(problems[:3])}): "
                                 f"run 'auditd check --db {path}', then restore a backup")


# ---------------------------------------------------------------------------- one server a file

class Claim:
    """An exclusive lock on `<db>.lock`, held by the one `auditd serve` of a database file: two
    servers on one SQLite file would not see each other's commits (a follower on one would wait
    forever for lines written through the other). The admin commands do not take it."""

    def __init__(self, db: str, holder: str):
        self.path = Path(db).with_name(Path(db).name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self.fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(self.fd)
            raise AuditdError(
                f"{db} is already served by another auditd ({other}; lock file {self.path}): "
                "stop that server first, or give this one another --db") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, holder.encode(), 0)

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)     # closing drops the lock
            self.fd = None


def claim(db: str, holder: str) -> Claim:
    return Claim(db, holder)
