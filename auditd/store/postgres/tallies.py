"""The tallies on PostgreSQL (auditd/model/tally.py says what they count): kept by triggers in
the transaction that changes the actions, read by list queries for exact counts and deep offsets.

- An INSERT or DELETE of actions (one row, a COPY of a batch, a purge's DELETE) is counted once
  per statement from its transition table: its rows' keys are made in SQL (`tally_keys`, the
  same keys as `tally.delta` makes), summed per key and upserted in key order, so a batch of
  similar records costs about what one does. A change of state or end is counted per row.
- Several instances write at once: each tally key has SHARDS rows, and a connection upserts only
  its own (its backend's pid modulo SHARDS), so two instances' group commits do not wait on each
  other's row locks of the hottest keys (every action counts in the all-namespaces key of its
  hour); a count sums the shards. Upserts go in key order, so two writers on one shard take the
  rows in the same order and never deadlock on them.
- Retention's month drop and `reset`'s TRUNCATE fire no row trigger: partitions.py subtracts the
  month's tallies itself (`subtract_month`), reset truncates them with the actions.
- Split buckets (tally.FINE_SHIFTS) are SQLite's only: here a deep offset inside one 68-minute
  bucket skips that bucket's rows.
"""
from ...model import tally
from ...model.actions import STATES

SHARDS = 8
_COLUMNS = ", ".join(tally.STATE_COLUMNS)
_SEP = f"chr({ord(tally.SEP)})"
_LEVELS = ", ".join(f"({level}, {shift})" for level, shift in enumerate(tally.SHIFTS))


def _keys_function() -> str:
    """`tally_keys(...)`: the (kind, key, bucket) an action counts in; inlined by the planner."""
    start = ", ".join(
        f"('{kind}', {value})" for kind, value in (
            ("", "''"), ("n", "ns"), ("a", "act"), ("na", f"ns || {_SEP} || act"),
            ("u", "usr"), ("nu", f"ns || {_SEP} || usr"), ("i", "flag::text"),
            ("ni", f"ns || {_SEP} || flag::text")))
    digits = f"substr(uid, 1, {tally.PREFIX})"
    return f"""
CREATE FUNCTION tally_keys(ns text, act text, usr text, flag smallint, uid text, start_ts bigint,
                           end_ts bigint) RETURNS TABLE (kind text, key text, bucket bigint)
LANGUAGE sql IMMUTABLE AS $$
    SELECT k.kind, k.key, l.level * {tally.LEVEL_SPAN}::bigint + (start_ts >> l.shift)
    FROM (VALUES {start}) AS k(kind, key), (VALUES {_LEVELS}) AS l(level, shift)
    UNION ALL
    SELECT k.kind, k.key, l.level * {tally.LEVEL_SPAN}::bigint + (end_ts >> l.shift)
    FROM (VALUES ('e', ''), ('ne', ns)) AS k(kind, key), (VALUES {_LEVELS}) AS l(level, shift)
    WHERE end_ts IS NOT NULL
    UNION ALL
    SELECT k.kind, k.key, {tally.ALL_TIME}::bigint
    FROM (VALUES ('p', {digits}), ('np', ns || {_SEP} || {digits})) AS k(kind, key)
$$;"""


def upsert_sql(source: str) -> str:
    """The statement that adds the tallies of `source`'s rows: (namespace, action, user,
    is_user_action, uuid, start_ts, end_ts, state, sign), sign 1 or -1."""
    sums = ", ".join(f"sum(CASE WHEN r.state = '{state}' THEN r.sign ELSE 0 END)"
                     for state in STATES)
    nonzero = " OR ".join(f"sum(CASE WHEN r.state = '{state}' THEN r.sign ELSE 0 END) <> 0"
                          for state in STATES)
    return (f"INSERT INTO tallies AS t (kind, key, bucket, shard, {_COLUMNS}) "
            f"SELECT k.kind, k.key, k.bucket, pg_backend_pid() % {SHARDS}, {sums} "
            f"FROM ({source}) AS r(namespace, action, usr, is_user_action, uuid, start_ts, "
            "end_ts, state, sign) CROSS JOIN LATERAL tally_keys(r.namespace, r.action, r.usr, "
            "r.is_user_action, r.uuid, r.start_ts, r.end_ts) AS k "
            f"GROUP BY k.kind, k.key, k.bucket HAVING {nonzero} ORDER BY k.kind, k.key, k.bucket "
            "ON CONFLICT (kind, key, bucket, shard) DO UPDATE SET "
            + ", ".join(f"{c} = t.{c} + excluded.{c}" for c in tally.STATE_COLUMNS))


_FIELDS = 'namespace, action, "user", is_user_action, uuid, start_ts, end_ts, state'


def _old_new(record: str) -> str:
    return ", ".join(f"{record}.{field.strip()}" for field in _FIELDS.split(","))


def _rows(table: str, sign: int) -> str:
    return f"SELECT {_FIELDS}, {sign} FROM {table}"


SCHEMA = f"""
-- A uuid prefix of two digits or more, in time order: a page of `uuid__startswith` reads about
-- 25 x 16**(digits - 2) entries, not every row of the prefix (listing.py).
CREATE INDEX actions_by_uuid_prefix ON actions (substr(uuid, 1, 2), start_ts, id);
-- Exact counts per filter value and time bucket (auditd/store/postgres/tallies.py).
CREATE TABLE tallies (
    kind    text COLLATE "C" NOT NULL,
    key     text COLLATE "C" NOT NULL,
    bucket  bigint NOT NULL,
    shard   smallint NOT NULL,
    {', '.join(f'{c} bigint NOT NULL DEFAULT 0' for c in tally.STATE_COLUMNS)},
    PRIMARY KEY (kind, key, bucket, shard)
) WITH (fillfactor = 70);
{_keys_function()}
CREATE FUNCTION tallies_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {upsert_sql(_rows("new_rows", 1))};
    RETURN NULL;
END $$;
CREATE FUNCTION tallies_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {upsert_sql(_rows("old_rows", -1))};
    RETURN NULL;
END $$;
CREATE FUNCTION tallies_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {upsert_sql(f"VALUES ({_old_new('OLD')}, -1), ({_old_new('NEW')}, 1)")};
    RETURN NULL;
END $$;
CREATE TRIGGER tallies_insert AFTER INSERT ON actions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tallies_inserted();
CREATE TRIGGER tallies_delete AFTER DELETE ON actions REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tallies_deleted();
CREATE TRIGGER tallies_update AFTER UPDATE OF state, end_ts, namespace, action, "user",
    is_user_action ON actions FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.end_ts IS DISTINCT FROM NEW.end_ts
          OR OLD.namespace IS DISTINCT FROM NEW.namespace OR OLD.action IS DISTINCT FROM
          NEW.action OR OLD."user" IS DISTINCT FROM NEW."user"
          OR OLD.is_user_action IS DISTINCT FROM NEW.is_user_action)
    EXECUTE FUNCTION tallies_updated();
"""

# The migration to schema 4: the tallies, then every action counted into them (one pass).
MIGRATION = SCHEMA + upsert_sql(_rows("actions", 1)) + ";\n"


MONTH_KEYS = "auditd_month_keys"   # the tallies a month's drop subtracted from (a temp table)


def subtract_month(partition: str) -> str:
    """The statements that take a month partition's actions out of the tallies, before the
    partition is dropped or truncated (no row trigger sees those), keeping the keys they touched
    in MONTH_KEYS for `prune_sql` (a temporary table the caller drops)."""
    return (f"CREATE TEMP TABLE {MONTH_KEYS} (kind text, key text, bucket bigint); "
            f"WITH up AS ({upsert_sql(_rows(partition, -1))} RETURNING t.kind, t.key, t.bucket) "
            f"INSERT INTO {MONTH_KEYS} SELECT kind, key, bucket FROM up")


def prune_sql(keys: str) -> str:
    """The statement that deletes the tallies of `keys` (a relation of kind, key, bucket) that
    count nothing any more: every shard row of a key whose rows sum to zero in every state. A
    purge's subtraction goes into its own connection's shard, so a purged key is left as, say,
    +1 in one shard and -1 in another, no row at zero. Kept at zero, the tallies of every hour
    ever recorded would outlive the actions.

    It never waits, so it cannot deadlock with the writers' upserts: a key with a shard row that
    another transaction holds (SKIP LOCKED) stays, at zero (a later purge of that key's actions
    may take it). The rows it holds are read at their latest version; a shard row committed after
    its snapshot is not deleted, and holds only its own change, so the key's sum stays exact."""
    total = ", ".join(f"t.{c}" for c in tally.STATE_COLUMNS)
    zero = " AND ".join(f"sum(h.{c}) = 0" for c in tally.STATE_COLUMNS)
    # every visible row of the key held: the count of its rows, one primary-key range each
    # (a join of two CTEs would be planned as a nested loop over both: they estimate 1 row)
    every = ("count(*) = (SELECT count(*) FROM tallies x WHERE x.kind = h.kind "
             "AND x.key = h.key AND x.bucket = h.bucket)")
    return (f"WITH k AS MATERIALIZED (SELECT DISTINCT kind, key, bucket FROM {keys}), "
            f"held AS MATERIALIZED (SELECT t.kind, t.key, t.bucket, {total} FROM tallies t "
            "JOIN k USING (kind, key, bucket) FOR UPDATE OF t SKIP LOCKED), "
            "empty AS (SELECT h.kind, h.key, h.bucket FROM held h "
            f"GROUP BY h.kind, h.key, h.bucket HAVING {zero} AND {every}) "
            "DELETE FROM tallies t USING empty e "
            "WHERE t.kind = e.kind AND t.key = e.key AND t.bucket = e.bucket")


PRUNE_MONTH = prune_sql(MONTH_KEYS)
# the actions a purge batch deleted: $1-$7 arrays of their namespace, action, user,
# is_user_action, uuid, start_ts and end_ts
PRUNE_ACTIONS = prune_sql(
    "(SELECT k.kind, k.key, k.bucket FROM unnest($1::text[], $2::text[], $3::text[], "
    "$4::smallint[], $5::text[], $6::bigint[], $7::bigint[]) AS r(ns, act, usr, flag, uid, s, e) "
    "CROSS JOIN LATERAL tally_keys(r.ns, r.act, r.usr, r.flag, r.uid, r.s, r.e) AS k) AS gone")


def mismatch_sql() -> str:
    """The tallies (summed over shards) that differ from a count of the actions themselves:
    rows of (kind, key, bucket, state, kept, real). For `auditd check`."""
    columns = ", ".join(f"('{state}', {column})" for state, column in tally.STATE_COLUMN.items())
    return ("SELECT kind, key, bucket, state, sum(kept)::bigint, sum(real)::bigint FROM ("
            "  SELECT t.kind, t.key, t.bucket, s.state, s.n AS kept, 0 AS real FROM tallies t "
            f"  CROSS JOIN LATERAL (VALUES {columns}) AS s(state, n) UNION ALL "
            "  SELECT k.kind, k.key, k.bucket, a.state, 0, 1 FROM actions a CROSS JOIN LATERAL "
            '  tally_keys(a.namespace, a.action, a."user", a.is_user_action, a.uuid, '
            "  a.start_ts, a.end_ts) AS k) c "
            "GROUP BY kind, key, bucket, state HAVING sum(kept) <> sum(real) ORDER BY 1, 2, 3, 4")

# ---------------------------------------------------------------------------- reading

def sum_sql(ranges: int, column: str | None, first: int) -> str:
    """The total of one kind's tallies for some keys over `ranges` bucket ranges, in one state's
    column or all, every shard. Each range is its own subquery, a range of the primary key per
    key: an OR of ranges would read every bucket of the key. Parameters from `$first`: the kind,
    the keys (an array), then (first, last) per range."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    return " + ".join(
        f"(SELECT coalesce(sum({total}), 0)::bigint FROM tallies WHERE kind = ${first}::text "
        f"AND key = ANY(${first + 1}::text[]) AND bucket BETWEEN ${first + 2 + 2 * i}::bigint "
        f"AND ${first + 3 + 2 * i}::bigint)" for i in range(ranges))


def prefix_sum_sql(keys: int, column: str | None, first: int) -> str:
    """The total of a uuid-prefix kind's tallies whose key starts with one of `keys` key
    prefixes, one range of the primary key each. Parameters from `$first`: the kind, then
    (low, high) per key prefix."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    return " + ".join(
        f"(SELECT coalesce(sum({total}), 0)::bigint FROM tallies WHERE kind = ${first}::text "
        f"AND key >= ${first + 1 + 2 * i}::text AND key < ${first + 2 + 2 * i}::text "
        f"AND bucket = {tally.ALL_TIME})" for i in range(keys))


def _shift(level: str) -> str:
    """A level's bucket width (its shift) in SQL."""
    cases = " ".join(f"WHEN {n} THEN {s}" for n, s in enumerate(tally.SHIFTS))
    return f"(CASE {level} {cases} END)"


def walk_sql(column: str | None, newest_first: bool, first: int, edges: list,
             offset: str) -> str:
    """The deep-offset walk (tallyplan.locate's, without split buckets) as CTEs of one statement,
    so that the total, the walk and the page share a snapshot and a round trip: `walk_total`
    (total) sums the range's top buckets and date edges; `walk_found` (boundary, skip) is where
    the row at `offset` lies, found by picking the piece that holds it in the list's order, then
    going down a level at a time (64 buckets each) to a 68-minute bucket: newest first the rows
    before `boundary`, else from it, skipping `skip` of them. No row when the offset is past the
    end. Parameters from `$first`: the kind, the keys (an array), the ranges' first and last
    buckets (two arrays); `edges` are (count SQL, start, stop) of the date edges."""
    total = column or " + ".join(tally.STATE_COLUMNS)
    order = "DESC" if newest_first else "ASC"
    span, kind, keys = tally.LEVEL_SPAN, f"${first}::text", f"${first + 1}::text[]"
    cum = f"sum(n) OVER (ORDER BY a {order} ROWS UNBOUNDED PRECEDING)"
    tallied = (f"SELECT bucket, sum({total})::bigint AS n FROM tallies WHERE kind = {kind} "
               f"AND key = ANY({keys}) AND bucket BETWEEN {{}} AND {{}} GROUP BY bucket")
    top = (f"SELECT lvl, bucket, (bucket - lvl * {span}) << {_shift('lvl')} AS a, "
           f"(bucket - lvl * {span} + 1) << {_shift('lvl')} AS b, n FROM (SELECT t.*, "
           f"(t.bucket + {span // 2}) / {span} AS lvl FROM unnest(${first + 2}::bigint[], "
           f"${first + 3}::bigint[]) AS r(lo, hi) CROSS JOIN LATERAL ("
           f"{tallied.format('r.lo', 'r.hi')}) AS t) AS x")
    for count, start, stop in edges:
        top += f" UNION ALL SELECT -1, NULL::bigint, {start}, {stop}, ({count})"
    down, shift = "w.lvl - 1", _shift("w.lvl - 1")
    children = tallied.format(f"({down}) * {span} + (w.a >> {shift})",
                              f"({down}) * {span} + (w.b >> {shift}) - 1")
    return (
        f"walk_top AS ({top}), "
        f"walk_total AS (SELECT coalesce(sum(n), 0)::bigint AS total FROM walk_top), "
        f"walk(lvl, bucket, a, b, skip) AS ((SELECT lvl, bucket, a, b, {offset} - (c - n) "
        f"FROM (SELECT *, {cum} AS c FROM walk_top) AS s WHERE c > {offset} "
        f"ORDER BY a {order} LIMIT 1) "
        f"UNION ALL SELECT {down}, p.bucket, p.a, p.a + (1::bigint << {shift}), w.skip - (p.c - p.n) "
        f"FROM walk AS w CROSS JOIN LATERAL (SELECT * FROM (SELECT *, {cum} AS c FROM ("
        f"SELECT t.*, (t.bucket - ({down}) * {span}) << {shift} AS a FROM ({children}) AS t) "
        f"AS u) AS v WHERE c > w.skip ORDER BY a {order} LIMIT 1) AS p WHERE w.lvl > 0), "
        f"walk_found AS (SELECT {'b' if newest_first else 'a'} AS boundary, skip FROM walk "
        f"ORDER BY lvl LIMIT 1)")
