"""The tallies table (auditd/model/tally.py says what it counts): kept by the writer jobs in the
transaction that changes the actions, read by list queries for exact counts and deep offsets."""
import logging
import time

from ...model import tally, tallyplan
from ...model.actions import STATES

progress = logging.getLogger("auditd.store.migrate")   # shown by the CLI: database.py

_COLUMNS = ", ".join(tally.STATE_COLUMNS)
_ADD = (" ON CONFLICT (kind, key, bucket) DO UPDATE SET "     # an upsert's: counts add up
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in tally.STATE_COLUMNS))
_UPSERT = (f"INSERT INTO tallies (kind, key, bucket, {_COLUMNS}) VALUES (?, ?, ?, "
           f"{', '.join('?' * len(STATES))}){_ADD}")
TALLY_FIELDS = ("uuid", "namespace", "state", "action", "user", "is_user_action", "start_ts",
                "end_ts")
SELECT_TALLIED = f"SELECT {', '.join(TALLY_FIELDS)} FROM actions"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tallies (
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    bucket  INTEGER NOT NULL,
    {', '.join(f'{c} INTEGER NOT NULL DEFAULT 0' for c in tally.STATE_COLUMNS)},
    PRIMARY KEY (kind, key, bucket)
) WITHOUT ROWID"""


# A tally that counts nothing any more (its actions were purged) is deleted: kept at zero, the
# tallies of every hour ever recorded would outlive the actions by years (3.4 tallies an action
# in the benchmark's 1M database).
_PRUNE = ("DELETE FROM tallies WHERE kind = ? AND key = ? AND bucket = ? AND "
          + " AND ".join(f"{c} = 0" for c in tally.STATE_COLUMNS))


def apply(conn, changes, prune: bool = False):
    """Count the (before, after) action pairs' change into the tallies (None: not there), the
    split buckets' finer levels too. `prune`: delete the tallies the change left at zero (a
    purge's; a record only adds, and a change of state moves a count within a tally)."""
    deltas = tally.delta(changes)
    firsts = tuple({a["start_ts"] >> tally.SHIFTS[0] for pair in changes for a in pair
                    if a is not None})
    split = set(conn.execute("SELECT kind, key, bucket FROM tally_splits WHERE bucket IN "
                             f"({', '.join('?' * len(firsts))})", firsts)) if firsts else ()
    if split:
        deltas.update(tally.fine_delta(changes, split))
    if not deltas:
        return
    prefixed = [(k[0], k[1], *v) for k, v in deltas.items() if k[0] in tally.PREFIX_KINDS]
    timed = [(k, v) for k, v in deltas.items() if k[0] not in tally.PREFIX_KINDS]
    conn.executemany(_UPSERT, [(*k, *v) for k, v in timed])
    if prune:
        conn.executemany(_PRUNE, [k for k, v in timed if sum(v) < 0])
    if prefixed:
        conn.executemany(_JOURNAL, prefixed)
        if conn.execute("SELECT max(rowid) FROM prefix_journal").fetchone()[0] >= JOURNAL_ROWS:
            fold(conn)


# The uuid-prefix kinds' changes are appended to prefix_journal, and added into their tallies
# once it holds this many rows (`fold`): a record's prefixes are random, so counting each
# commit's straight into the tallies wrote a page of them a record, per kind (45 of a 31-record
# commit's 191 WAL frames: BENCHMARKS.md); folded, a page takes many records' counts at once.
# A reader adds the journal's rows of its prefix to the tallies' (`prefix_sum_sql`), found
# through an index of their keys: a pass over a full journal made a prefix count ~90 us
# slower, the index ~5 us, for ~3 more WAL frames a commit (BENCHMARKS.md).
JOURNAL_ROWS = 1024
JOURNAL_TABLE = f"""
CREATE TABLE IF NOT EXISTS prefix_journal (
    kind    TEXT    NOT NULL,
    key     TEXT    NOT NULL,
    {', '.join(f'{c} INTEGER NOT NULL' for c in tally.STATE_COLUMNS)}
)"""
JOURNAL_INDEX = "CREATE INDEX IF NOT EXISTS prefix_journal_by_key ON prefix_journal (kind, key)"
_JOURNAL = (f"INSERT INTO prefix_journal (kind, key, {_COLUMNS}) VALUES (?, ?, "
            f"{', '.join('?' * len(STATES))})")


def fold(conn):
    """Add prefix_journal's rows into the tallies and empty it, deleting the uuid-prefix tallies
    left at zero (a purge's). A writer job's part, in its transaction."""
    sums = ", ".join(f"sum({c})" for c in tally.STATE_COLUMNS)
    conn.execute(f"INSERT INTO tallies (kind, key, bucket, {_COLUMNS}) SELECT kind, key, "
                 f"{tally.ALL_TIME}, {sums} FROM prefix_journal WHERE true GROUP BY kind, key"
                 + _ADD)
    conn.execute(f"DELETE FROM tallies WHERE bucket = {tally.ALL_TIME} AND (kind, key) IN "
                 "(SELECT kind, key FROM prefix_journal) AND "
                 + " AND ".join(f"{c} = 0" for c in tally.STATE_COLUMNS))
    conn.execute("DELETE FROM prefix_journal")


def _empty_journal(conn):
    """Empty prefix_journal before the uuid-prefix tallies are counted anew, making it first
    in a migration from a schema that did not have it."""
    conn.execute(JOURNAL_TABLE)
    conn.execute(JOURNAL_INDEX)
    conn.execute("DELETE FROM prefix_journal")


# The columns of a start-time kind's key, in the key's order (split by tally.SEP).
_KEY_COLUMNS = {"": (), "a": ("action",), "u": ("user",), "i": ("is_user_action",)}
_KEY_COLUMNS.update({"n" + k: ("namespace", *v) for k, v in list(_KEY_COLUMNS.items())})


def _key_values(kind: str, key: str) -> list:
    """A start-time kind's key as the values of its columns (_KEY_COLUMNS)."""
    columns = _KEY_COLUMNS[kind]
    values = key.split(tally.SEP) if columns else []
    return [int(v) if c == "is_user_action" else v for c, v in zip(columns, values)]


def split(conn, kind: str, keys: tuple, firsts: tuple):
    """Split the 68-minute buckets `firsts` of a start-time kind's keys: count their actions
    into the finer levels, from the rows (through the index of each state and the key's columns),
    and keep them so (`apply`). A writer job; a bucket and key split already is left as it is."""
    columns = _KEY_COLUMNS[kind]
    where = " AND ".join([f"{c} = ?" for c in columns] + ["state = ?", "start_ts >= ?",
                                                           "start_ts < ?"])
    sql = f"SELECT start_ts, count(*) FROM actions WHERE {where} GROUP BY start_ts"
    for first in firsts:
        done = _split_keys(conn, kind, keys, first)
        start, stop = first << tally.SHIFTS[0], (first + 1) << tally.SHIFTS[0]
        for key in keys:
            if key in done:
                continue
            values = _key_values(kind, key)
            counts: dict[tuple, list] = {}
            for column, state in enumerate(tally.STATE_COLUMN):
                for ts, n in conn.execute(sql, (*values, state, start, stop)):
                    for fine in tally.fine_buckets(ts):
                        row = counts.setdefault((kind, key, fine), [0] * len(STATES))
                        row[column] += n
            conn.executemany(_UPSERT, [(*k, *v) for k, v in counts.items()])
            conn.execute("INSERT INTO tally_splits (bucket, kind, key) VALUES (?, ?, ?)",
                         (first, kind, key))
    return None, []


split.heavy = True   # writer.heavy_job: it may read a million rows, off the event loop


def _split_keys(conn, kind: str, keys, first: int) -> set:
    """Which of the keys the 68-minute bucket `first` is split for."""
    return {k for (k,) in conn.execute(
        f"SELECT key FROM tally_splits WHERE bucket = ? AND kind = ? "
        f"AND key IN ({', '.join('?' * len(keys))})", (first, kind, *keys))}


def is_split(conn, kind: str, keys: list, first: int) -> bool:
    """Whether the 68-minute bucket `first` is split for every one of the keys."""
    return len(_split_keys(conn, kind, keys, first)) == len(set(keys))


def tallied(row) -> dict:
    """An action's tallied fields from a row of SELECT_TALLIED."""
    return dict(zip(TALLY_FIELDS, row))


def rebuild(conn, chunk: int = 50_000):
    """Count every action again (the migration that brings tallies to an older database)."""
    conn.execute("DELETE FROM tallies")
    _empty_journal(conn)
    total = conn.execute("SELECT count(*) FROM actions").fetchone()[0]
    done, last_id, started, said = 0, 0, time.monotonic(), time.monotonic()
    while True:
        rows = conn.execute(SELECT_TALLIED.replace("SELECT ", "SELECT id, ", 1)
                            + " WHERE id > ? ORDER BY id LIMIT ?", (last_id, chunk)).fetchall()
        if not rows:
            break
        apply(conn, [(None, tallied(r[1:])) for r in rows])
        last_id, done = rows[-1][0], done + len(rows)
        if time.monotonic() - said >= 5:
            said = time.monotonic()
            progress.info("counting actions into tallies: %d of %d (%.0f s)", done, total,
                          said - started)
    fold(conn)
    progress.info("tallies counted for %d actions", done)


def recount_prefixes(conn):
    """Count every action by its uuid's first `tally.PREFIX` digits again: the migration to
    schema 8, whose p/np tallies count three digits where schema 7's counted two. Two grouped
    scans of the uuid index, not a pass through `apply`."""
    total = conn.execute("SELECT coalesce(sum(n), 0) FROM action_counts").fetchone()[0]
    progress.info("counting the uuid prefixes of %d actions by %d digits (one pass of the uuid "
                  "index per kind: about a minute for ten million)", total, tally.PREFIX)
    started = time.monotonic()
    conn.execute("DELETE FROM tallies WHERE kind IN ('p', 'np')")
    _empty_journal(conn)
    sums = ", ".join("sum(state = ?)" for _ in STATES)
    digits = f"substr(uuid, 1, {tally.PREFIX})"
    for kind, key, group in (("p", digits, digits),
                             ("np", f"namespace || char({ord(tally.SEP)}) || {digits}",
                              f"namespace, {digits}")):
        conn.execute(f"INSERT INTO tallies (kind, key, bucket, {_COLUMNS}) SELECT ?, {key}, ?, "
                     f"{sums} FROM actions GROUP BY {group}", (kind, tally.ALL_TIME, *STATES))
    progress.info("uuid prefixes counted (%.0f s)", time.monotonic() - started)


# ---------------------------------------------------------------------------- reading

def sum_sql(keys: int, ranges: int, column: str | None) -> str:
    """The total of one kind's tallies for `keys` keys over `ranges` bucket ranges, in one
    state's column or all. Each range is its own subquery: SQLite seeks each one in the primary
    key, where an OR of ranges would read every bucket of the key. Parameters: (kind, *keys,
    first, last) per range."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    key_test = "key = ?" if keys == 1 else f"key IN ({', '.join('?' * keys)})"
    one = (f"(SELECT coalesce(sum({total}), 0) FROM tallies WHERE kind = ? AND {key_test} "
           "AND bucket BETWEEN ? AND ?)")
    return "SELECT " + (" + ".join([one] * ranges) or "0")


def prefix_sum_sql(keys: int, column: str | None) -> str:
    """The total of a uuid-prefix kind's tallies (tally.PREFIX_KINDS) whose key starts with one
    of `keys` key prefixes: a uuid prefix shorter than the tallies' is one range of the primary
    key (16 keys a digit fewer), plus the journal's rows not yet folded into them (`fold`).
    Parameters: (kind, low, high) twice per key prefix."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    one = (f"(SELECT coalesce(sum({total}), 0) FROM tallies WHERE kind = ? AND key >= ? "
           f"AND key < ? AND bucket = {tally.ALL_TIME}) + (SELECT coalesce(sum({total}), 0) "
           "FROM prefix_journal WHERE kind = ? AND key >= ? AND key < ?)")
    return "SELECT " + (" + ".join([one] * keys) or "0")


def pick(conn, kind: str, keys: list, first: int, last: int, column: str | None, offset: int,
         newest_first: bool) -> tuple[int | None, int]:
    """Which bucket between first and last holds row `offset`, counting in the list's order:
    (bucket, the row's offset within it), or (None, `offset` less every row of the range) when
    the range ends first. Buckets are read in that order only until the row is found: one key's
    buckets straight from the primary key, several keys' summed per bucket."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    order = "DESC" if newest_first else "ASC"
    if len(keys) == 1:
        sql = (f"SELECT bucket, {total} FROM tallies WHERE kind = ? AND key = ? "
               f"AND bucket BETWEEN ? AND ? ORDER BY bucket {order}")
    else:
        sql = (f"SELECT bucket, sum({total}) FROM tallies WHERE kind = ? "
               f"AND key IN ({', '.join('?' * len(keys))}) AND bucket BETWEEN ? AND ? "
               f"GROUP BY bucket ORDER BY bucket {order}")
    rows = conn.execute(sql, (kind, *keys, first, last))
    try:
        return tallyplan.pick(rows, offset)
    finally:
        rows.close()     # found early: the statement is not left running


# ---------------------------------------------------------------------------- checking

_FINE_SPAN = {level: 1 << (tally.SHIFTS[0] - tally.shift(level)) for level in (-1, -2)}


def _key_sql(columns) -> str:
    """A kind's key, made in SQL from the action's columns as tally.py makes it."""
    parts = ["CAST(is_user_action AS TEXT)" if c == "is_user_action" else c for c in columns]
    return f" || char({ord(tally.SEP)}) || ".join(parts) or "''"


def _kinds():
    """(kind, key SQL, the time column or None for all time, WHERE) of every kind."""
    for kind in tally.SPLIT_KINDS:
        yield kind, _key_sql(_KEY_COLUMNS[kind]), "start_ts", ""
    for kind, columns in (("e", ()), ("ne", ("namespace",))):
        yield kind, _key_sql(columns), "end_ts", " WHERE end_ts IS NOT NULL"
    digits = f"substr(uuid, 1, {tally.PREFIX})"
    yield "p", digits, None, ""
    yield "np", f"namespace || char({ord(tally.SEP)}) || {digits}", None, ""


def mismatches(conn, say=lambda message: None) -> list[str]:
    """The tallies that differ from a count of the actions themselves, at every level and in
    the split buckets' finer levels, for `auditd check`: one grouped read of the actions per
    kind (12; 1-7 s each at a million actions), said as it goes. Nothing is changed (the
    recount is a temporary table)."""
    sums = ", ".join(f"sum(state = '{s}') AS c{i}" for i, s in enumerate(STATES))
    counts = ", ".join(f"c{i}" for i in range(len(STATES)))
    zeros = ", ".join("0" for _ in STATES)
    differ = " OR ".join(f"sum(k{i}) != sum(c{i})" for i in range(len(STATES)))
    kept = ", ".join(f"{c} AS k{i}" for i, c in enumerate(tally.STATE_COLUMNS))
    unkept = ", ".join(f"0 AS c{i}" for i in range(len(STATES)))
    totals = ", ".join([f"sum(k{i})" for i in range(len(STATES))]
                       + [f"sum(c{i})" for i in range(len(STATES))])
    wrong, first = 0, None
    kinds = list(_kinds())
    for n, (kind, key, column, where) in enumerate(kinds, 1):
        say(f"the tallies of kind '{kind}', against the actions counted again ({n} of "
            f"{len(kinds)})")
        conn.execute("DROP TABLE IF EXISTS temp.recount")
        if column is None:
            conn.execute(f"CREATE TEMP TABLE recount AS SELECT {key} AS key, {tally.ALL_TIME} "
                         f"AS bucket, {sums} FROM actions GROUP BY 1")
            real = f"SELECT key, bucket, {zeros}, {counts} FROM recount"
            levels = f"bucket = {tally.ALL_TIME}"
        else:
            conn.execute(f"CREATE TEMP TABLE recount AS SELECT {key} AS key, {column} >> "
                         f"{tally.SHIFTS[0]} AS bucket, {sums} FROM actions{where} GROUP BY 1, 2")
            real = " UNION ALL ".join(
                f"SELECT key, {level * tally.LEVEL_SPAN} + (bucket >> "
                f"{shift - tally.SHIFTS[0]}), {zeros}, {counts} FROM recount"
                for level, shift in enumerate(tally.SHIFTS))
            levels = f"bucket > {-tally.LEVEL_SPAN // 2}"    # the finer levels are below
        journal = "" if column else (   # the uuid-prefix kinds' changes not yet folded
            f"UNION ALL SELECT key, {tally.ALL_TIME}, {kept}, {unkept} FROM prefix_journal "
            "WHERE kind = ?1 ")
        rows = conn.execute(
            f"SELECT key, bucket, {totals} FROM (SELECT key, bucket, {kept}, {unkept} FROM "
            f"tallies WHERE kind = ?1 AND {levels} {journal}UNION ALL SELECT * FROM ({real})) "
            f"GROUP BY key, bucket HAVING {differ} ORDER BY key, bucket", (kind,)).fetchall()
        wrong += len(rows)
        first = first or (rows and (kind, rows[0]))
    conn.execute("DROP TABLE IF EXISTS temp.recount")
    splits = conn.execute("SELECT bucket, kind, key FROM tally_splits").fetchall()
    if splits:
        say(f"the finer tallies of {len(splits)} split buckets, against their actions")
    for b0, kind, key in splits:
        for row in _split_mismatches(conn, b0, kind, key):
            wrong += 1
            first = first or (kind, row)
    if not wrong:
        return []
    kind, (key, bucket, *values) = first
    kept, real = values[:len(STATES)], values[len(STATES):]
    at = next(i for i in range(len(STATES)) if kept[i] != real[i])
    return [f"{wrong} tallies differ from the actions they count (the first: kind '{kind}', "
            f"key {key!r}, bucket {bucket}, {STATES[at]}: {kept[at]}, there are {real[at]})"]


def _split_mismatches(conn, b0: int, kind: str, key: str) -> list[tuple]:
    """The finer levels' tallies of one split bucket that differ from its actions: rows shaped
    as `mismatches` reads them (key, bucket, kept..., real...)."""
    values = _key_values(kind, key)
    where = "".join(f" AND {c} = ?" for c in _KEY_COLUMNS[kind])
    real: dict[int, list] = {}
    for ts, state, n in conn.execute(
            f"SELECT start_ts, state, count(*) FROM actions WHERE start_ts >= ? AND start_ts < ?"
            f"{where} GROUP BY 1, 2", (b0 << tally.SHIFTS[0], (b0 + 1) << tally.SHIFTS[0],
                                       *values)):
        for fine in tally.fine_buckets(ts):
            real.setdefault(fine, [0] * len(STATES))[STATES.index(state)] += n
    kept = {}
    for level, span in _FINE_SPAN.items():
        low = level * tally.LEVEL_SPAN + b0 * span
        for bucket, *counts in conn.execute(
                f"SELECT bucket, {_COLUMNS} FROM tallies WHERE kind = ? AND key = ? AND "
                "bucket BETWEEN ? AND ?", (kind, key, low, low + span - 1)):
            kept[bucket] = counts
    zero = [0] * len(STATES)
    return [(key, b, *kept.get(b, zero), *real.get(b, zero))
            for b in sorted(set(kept) | set(real)) if kept.get(b, zero) != real.get(b, zero)]
