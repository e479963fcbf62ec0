"""Opening an SQLite database: connections, the schema (schema.sql beside this file) and its
migrations by version (PRAGMA user_version)."""
import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from ...model.errors import SchemaVersionError, Unavailable
from .tallies import JOURNAL_INDEX, JOURNAL_TABLE

# What a schema migration is doing, shown by every command that opens an older database
# (cli/common.py show_migrations): some take a minute on ten million actions.
progress = logging.getLogger("auditd.store.migrate")

SCHEMA_VERSION = 11
SCHEMA_FILE = Path(__file__).with_name("schema.sql")
# MIGRATIONS[v] turns a version-v database into version v+1; schema.sql is always the newest.
MIGRATIONS: dict = {
    # 2: object filters check the namespace from the index, not from each row
    1: "DROP INDEX actions_by_object; "
       "CREATE INDEX actions_by_object ON actions (object_id, namespace, start_ts, id)",
    # 3: the tamper-evident log (tree.py); the actions already there enter it as they are now
    2: "tree",
    # 4: forwarding: each sink's delivery position (auditd/tasks/forward)
    3: "CREATE TABLE IF NOT EXISTS forward_positions (sink TEXT PRIMARY KEY, "
       "position INTEGER NOT NULL, started_at INTEGER NOT NULL, "
       "delivered INTEGER NOT NULL DEFAULT 0, last_success REAL, last_error TEXT, "
       "last_error_at REAL, errors INTEGER NOT NULL DEFAULT 0)",
    # 5: tallies and one index per counted filter, for exact counts that do not scan (tallies.py)
    4: "tallies",
    # 6: every action filed under its object's ancestors, for include_related (lineage.py);
    # an index for two-digit uuid prefixes in time order
    5: "ancestors",
    # 7: the tallies' buckets a burst filled, split finer for deep offsets (tallies.py)
    6: "CREATE TABLE IF NOT EXISTS tally_splits (bucket INTEGER NOT NULL, kind TEXT NOT NULL, "
       "key TEXT NOT NULL, PRIMARY KEY (bucket, kind, key)) WITHOUT ROWID",
    # 8: the uuid-prefix tallies count three digits, not two (tallies.recount_prefixes)
    7: "prefixes",
    # 9: the object graph's version, so a walk of it is remembered across commits (reads.py)
    8: "CREATE TABLE IF NOT EXISTS graph_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
       "v INTEGER NOT NULL); INSERT OR IGNORE INTO graph_version (id, v) VALUES (1, 0); "
       "CREATE TRIGGER IF NOT EXISTS graph_version_edge AFTER INSERT ON object_parents BEGIN "
       "UPDATE graph_version SET v = v + 1 WHERE id = 1; END",
    # 10: the uuid-prefix tallies' latest changes in a journal, folded in by the thousand
    9: JOURNAL_TABLE,
    # 11: the journal's rows of one prefix found through an index, not a pass over all of them
    10: JOURNAL_INDEX,
}
_V5_INDEXES = {   # version 5's indexes (schema.sql): five widened, five new
    "actions_by_time": "start_ts, id, uuid",
    "actions_by_namespace": "namespace, start_ts, id, uuid, is_user_action",
    "actions_by_state": "state, start_ts, id, action, user, is_user_action",
    "actions_by_namespace_state": "namespace, state, start_ts, id, action, user, is_user_action",
    "actions_by_end": "end_ts, namespace, state",
    "actions_by_action": "action, start_ts, id, state",
    "actions_by_namespace_action": "namespace, action, start_ts, id, state",
    "actions_by_user": "user, start_ts, id, namespace, state",
    "actions_by_is_user_action": "is_user_action, start_ts, id, state",
    "actions_by_uuid": "uuid, start_ts, namespace, state",
}
PREFIX_INDEX = ("CREATE INDEX IF NOT EXISTS actions_by_uuid_prefix ON actions "
                "(substr(uuid, 1, 2), start_ts, id, state, uuid)")
TALLY_INDEXES = [statement for name, columns in _V5_INDEXES.items() for statement in (
    f"DROP INDEX IF EXISTS {name}", f"CREATE INDEX {name} ON actions ({columns})")]


class WriterConnection(sqlite3.Connection):
    """The write connection, with what it has learned about the object graph: object URIs to ids,
    the child -> parent edges that exist, and each object's ancestors (cleared whenever a new edge
    is added). Objects and edges are only ever added (a reset removes them, and clears this), so
    what was seen committed stays true; `forget` is called whenever something the writer did is
    rolled back."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.object_ids: dict[str, int] = {}
        self.object_edges: set[tuple[int, int]] = set()
        self.ancestors: dict[int, tuple[str, ...]] = {}   # object id -> its ancestors' URIs
        self.ancestor_ids: dict[int, tuple[int, ...]] = {}   # object id -> its ancestors' ids
        self.frontier = None          # the Merkle tree's frontier (tree.py); None: no tree

    def forget(self):
        self.object_ids.clear()
        self.object_edges.clear()
        self.ancestors.clear()
        self.ancestor_ids.clear()


OBJECT_CACHE_ENTRIES = 100_000


@contextmanager
def savepoint(conn: sqlite3.Connection, name: str):
    """Run the block in a savepoint: when it raises, everything it wrote is undone, what a writer
    connection remembered is forgotten, and the error goes on."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if conn.in_transaction:   # SQLite may have rolled the whole transaction back (disk full)
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
        if isinstance(conn, WriterConnection):
            conn.forget()
        raise
    conn.execute(f"RELEASE {name}")


def in_snapshot(conn: sqlite3.Connection, fn, *args):
    """`fn(conn, *args)` inside one read transaction: every statement sees the same snapshot."""
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


def unavailable(err: sqlite3.Error, doing: str) -> Unavailable:
    """What a database error means for the caller: 503 with SQLite's reason and what to do."""
    text = str(err)
    if "readonly" in text or "read-only" in text:
        advice = "the database file is read-only: give auditd write access to it and its folder"
    elif "full" in text:
        advice = "the disk is full: free space, and writes resume"
    elif "malformed" in text or "not a database" in text:
        advice = "the database file is damaged: run 'auditd check', then restore a backup"
    elif "locked" in text or "busy" in text:
        advice = "another process holds the database: retry shortly"
    else:
        advice = "check the disk and the database file, then retry"
    return Unavailable(f"the database could not {doing} ({text}); {advice}")


def connect(path: str, synchronous: str = "FULL", factory=sqlite3.Connection) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10,
                           factory=factory)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


# The write connection checkpoints the WAL into the database every this many pages (SQLite's
# default is 1,000). A checkpoint copies each page the WAL holds once, however often it was
# written since the last one, then syncs the file: the pages every commit writes (the tallies,
# the ends of the time-ordered indexes) are copied a quarter as often. Measured with wrk c64 on
# the 10k database: 0.19-0.21 of the trivial handler's requests a second recorded, against
# 0.176 with 1,000. The WAL grows to ~16 MB between checkpoints.
WAL_CHECKPOINT_PAGES = 4000


def connect_writer(path: str, synchronous: str) -> WriterConnection:
    conn = connect(path, synchronous, WriterConnection)
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
    return conn


def prepare_database(path: str) -> int:
    """Create or migrate the schema; refuse a database from a newer auditd. Returns the version."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise SchemaVersionError(f"{path} is not an SQLite database ({err})") from None
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path} has schema version {version}, but this auditd knows versions up to "
                f"{SCHEMA_VERSION}: run a newer auditd, or restore a backup made by this one")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise SchemaVersionError(
                    f"{path} is an SQLite database but not auditd's (no schema version): "
                    "point --db at a new file")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise SchemaVersionError(f"{path}: could not switch the database to WAL mode")
        if version == 0:
            conn.executescript("BEGIN IMMEDIATE;" + SCHEMA_FILE.read_text()
                               + f"; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            return SCHEMA_VERSION
        while version < SCHEMA_VERSION:
            progress.info("migrating %s from schema version %d to %d", path, version, version + 1)
            if MIGRATIONS[version] in ("tree", "tallies", "ancestors", "prefixes"):   # Python
                conn.execute("BEGIN IMMEDIATE")
                if MIGRATIONS[version] == "prefixes":
                    from .tallies import recount_prefixes
                    recount_prefixes(conn)
                elif MIGRATIONS[version] == "tree":
                    from .tree import migrate     # leaves for the actions there
                    migrate(conn)
                elif MIGRATIONS[version] == "ancestors":
                    from . import lineage         # file the actions there
                    for statement in lineage.SCHEMA.split(";"):
                        conn.execute(statement)
                    lineage.rebuild(conn)
                    conn.execute(PREFIX_INDEX)
                else:
                    from . import tallies         # count the actions there
                    for statement in TALLY_INDEXES:
                        conn.execute(statement)
                    conn.execute(tallies.SCHEMA)
                    tallies.rebuild(conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            else:
                conn.executescript("BEGIN IMMEDIATE;" + MIGRATIONS[version]
                                   + f"; PRAGMA user_version = {version + 1}; COMMIT;")
            version += 1
        return version
    finally:
        conn.close()

