"""The list planner: for a query shape the tallies can count, an exact `total_count` from a few
hundred counters plus two short edges, a page found through the index that leads with the
query's most selective equality, and a deep `offset` walked down the tallies' buckets instead of
skipped row by row. Shapes the tallies do not cover go to listing.list_sql."""
from dataclasses import dataclass, replace

from ...model import tally, tallyplan
from ...model.query import ListQuery
from . import tallies
from .listing import _prefix_bounds, page_sql

# The index each shape reads its rows through: (equality filter, namespace?, state?) -> index.
_INDEXES = {
    (None, False, False): "actions_by_time", (None, False, True): "actions_by_state",
    (None, True, False): "actions_by_namespace", (None, True, True): "actions_by_namespace_state",
    ("action", False): "actions_by_action", ("action", True): "actions_by_namespace_action",
    ("user", False): "actions_by_user", ("user", True): "actions_by_user",
    ("is_user_action", False): "actions_by_is_user_action",
    ("is_user_action", True): "actions_by_namespace",
}
_DATES = {"start_date__gte": "start_ts >= ?", "start_date__lte": "start_ts <= ?",
          "end_date__gte": "end_ts >= ?", "end_date__lte": "end_ts <= ?"}
UUID_INDEX = "actions_by_uuid"   # uuid, then what a page and a namespace or state test need
PREFIX_INDEX = "actions_by_uuid_prefix"   # the uuid's first two digits, then the time order
INDEX_DIGITS = 2                          # the digits PREFIX_INDEX leads with
MAX_SPLIT_NAMESPACES = 64     # more namespaces than this: one index scan, not one per namespace
DIRECT_OFFSET = 1000          # deeper offsets are found through the tallies
INLINE_EDGE_ROWS = 20_000     # more rows than this in a range's edge buckets: off the loop
INLINE_SKIP = 5_000           # a page that skips more rows than this: off the loop
SPLIT_SKIP = 2_000            # a deep offset skipping more of a 68-minute bucket: split it


class TooDeep(Exception):
    """`run(bounded=True)`: the query would read more rows than the loop should (a date range's
    edge in a busy hour, a deep offset into one, one the tallies cannot walk, or an oldest-first
    page that walks up to an end date, `reads_before_end_bound`): the caller runs it again off
    the loop."""


@dataclass
class Plan:
    kind: str | None          # the tallies' kind; None: count the rows (a short index range)
    keys: list                # their keys (one per namespace, or one)
    column: str | None        # a state's tally column, or None for all states
    ranges: list              # bucket ranges
    edges: list               # [start, stop) second ranges counted from rows, each bounded
                              # and inside one 68-minute bucket (tally.split_range)
    time: str                 # start_ts or end_ts: what the date range bounds
    index: str | None         # the index the page and edges read, or None: SQLite's choice
    where: list               # the conditions (SQL) but the date bounds
    params: list              # their parameters
    dates: list               # the date bounds: [(SQL, value)]; end_date__lte bounds start_ts too
    walk: bool                # whether a deep offset can be found through the tallies
    rival: tuple | None = None   # (index, kind, keys): a state index that may read fewer rows
    count_by: tuple | None = None   # (index, where, params) counting a `kind` None plan's rows


def plan(query: ListQuery, object_ids) -> Plan | None:
    """The tallied plan of a query, or None when the tallies cannot count its shape."""
    s = tallyplan.shape(query) if object_ids is None else None
    if s is None:
        return None
    f, names, field, prefix = query.filters, s.names, s.field, s.prefix
    where, params = [], []
    if names is not None:
        where.append(f"namespace IN ({', '.join('?' * len(names))})")
        params += names
    if "state" in f:
        where.append("state = ?")
        params.append(f["state"])
    if field is not None:
        where.append(f"{field} = ?")
        params.append(int(f[field]) if field == "is_user_action" else f[field])
    # All namespaces and two digits or more: the prefix index in time order (a longer prefix
    # tested in it, one row in 16 per digit more), so a page reads ~25 x 16**(digits - 2) rows.
    digits = 0 if prefix is None else len(prefix)
    by_prefix = digits >= INDEX_DIGITS and names is None
    cut = len(params)
    if by_prefix:
        where.append(f"substr(uuid, 1, {INDEX_DIGITS}) = ?")
        params.append(prefix[:INDEX_DIGITS].lower())
    if prefix is not None and not (by_prefix and digits == INDEX_DIGITS):
        where.append("uuid >= ? AND uuid < ?")
        params += _prefix_bounds(prefix)
    if s.kind is None:
        # longer than the tallies count: a short range of the uuid index, counted there (and
        # its page sorted there too when namespaces narrow it)
        counted = (UUID_INDEX, [w for w in where if not w.startswith("substr")],
                   params[:cut] + params[cut + by_prefix:])
        return Plan(None, [], None, [], [], "start_ts", PREFIX_INDEX if by_prefix else UUID_INDEX,
                    where, params, [], False, count_by=counted)
    if names is not None and len(names) > MAX_SPLIT_NAMESPACES:
        index = None
    elif by_prefix:
        index = PREFIX_INDEX
    elif digits > INDEX_DIGITS:   # and namespaces: a short range of the uuid index, sorted
        index = UUID_INDEX
    elif prefix is not None:   # a short prefix: newest first, its uuid tested in the index
        index = _INDEXES[(None, names is not None, False)]
    elif field is None:
        index = _INDEXES[(None, names is not None, "state" in f)]
    else:
        index = _INDEXES[(field, names is not None)]
    dates = [(sql, f[name]) for name, sql in _DATES.items() if f.get(name) is not None]
    if s.time == "end_ts" and f.get("end_date__lte") is not None:  # an action ends after it starts
        dates.append(("start_ts <= ?", f["end_date__lte"]))
    rival = None
    if field is not None and "state" in f and (names is None or len(names) == 1):
        rival = (_INDEXES[(None, names is not None, True)], "n" if names else "",
                 names or [""])
    return Plan(s.kind, s.keys, s.column, s.ranges, s.edges, s.time, index, where, params, dates,
                walk=s.walk, rival=rival)


def _from(p: Plan) -> str:
    return f"actions INDEXED BY {p.index}" if p.index else "actions"


def _sum_sql(kind: str, keys: list, column: str | None, ranges: list) -> tuple[str, list]:
    """(SQL, parameters) of the total of the tallies of a kind's keys over the bucket ranges;
    a uuid prefix kind's keys are prefixes of its tallies' keys (all time, one range each)."""
    if kind in tally.PREFIX_KINDS:
        return (tallies.prefix_sum_sql(len(keys), column),
                [v for key in keys for v in (kind, *_prefix_bounds(key)) * 2])
    return (tallies.sum_sql(len(keys), len(ranges), column),
            [v for r in ranges for v in (kind, *keys, *r)])


def _sum(conn, kind: str, keys: list, column: str | None, ranges: list) -> int:
    sql, params = _sum_sql(kind, keys, column, ranges)
    return conn.execute(sql, params).fetchone()[0]


def count(conn, p: Plan, fine=frozenset()) -> int:
    """The query's exact total: the tallies' whole buckets plus the edges', from the rows or,
    in the 68-minute buckets `fine` (split for the plan's keys), from the finer tallies."""
    if p.kind is None:
        index, where, params = p.count_by or (p.index, p.where, p.params)
        source = f"actions INDEXED BY {index}" if index else "actions"
        return conn.execute(f"SELECT count(*) FROM {source} WHERE {' AND '.join(where)}",
                            params).fetchone()[0]
    if not p.edges:
        return _sum(conn, p.kind, p.keys, p.column, p.ranges)
    # one statement: each part's fixed cost (~4 us) was paid three times for a date range
    sql, params = _sum_sql(p.kind, p.keys, p.column, p.ranges)
    parts = [sql]
    edge_from = "actions INDEXED BY actions_by_end" if p.time == "end_ts" else _from(p)
    for a, b in p.edges:
        if tallyplan.fine_edge(fine, a, b):
            sql, more = _sum_sql(p.kind, p.keys, p.column, tallyplan.fine_ranges(a, b))
        else:
            where = [*p.where, f"{p.time} >= ?", f"{p.time} < ?"]
            sql, more = f"SELECT count(*) FROM {edge_from} WHERE {' AND '.join(where)}", \
                [*p.params, a, b]
        parts.append(sql)
        params += more
    return conn.execute("SELECT " + " + ".join(f"({sql})" for sql in parts),
                        params).fetchone()[0]


def edge_rows(conn, p: Plan) -> dict:
    """{68-minute bucket: its rows} of the buckets the edges lie in: at most that many rows are
    read counting an edge there (an edge is shorter than one, but in a busy hour one holds many)."""
    if not p.edges or p.kind is None:
        return {}
    buckets = sorted({tally.bucket(0, t) for a, b in p.edges for t in (a, b - 1)})
    one = (f"(SELECT sum({' + '.join(tally.STATE_COLUMNS)}) FROM tallies WHERE kind = ? AND "
           f"key IN ({', '.join('?' * len(p.keys))}) AND bucket = ?)")
    # a subquery a bucket: GROUP BY sorted them in a temporary b-tree (24 us against 9)
    row = conn.execute("SELECT " + ", ".join([one] * len(buckets)),
                       [v for b in buckets for v in (p.kind, *p.keys, b)]).fetchone()
    return {b: n for b, n in zip(buckets, row) if n is not None}


def _edge_buckets(conn, p: Plan, bounded: bool):
    """(the split edge buckets, a split wish or None) of a plan with date edges; raises TooDeep
    when `bounded` and the edges would read more than INLINE_EDGE_ROWS rows. An edge bucket of
    more than half that many rows asks to be split (a start-time kind's)."""
    rows = edge_rows(conn, p)
    crowded = [b for b, n in rows.items() if n > INLINE_EDGE_ROWS // 2]
    fine, wish = set(), None
    if crowded and p.kind in tally.SPLIT_KINDS:
        fine = {b for b in crowded if tallies.is_split(conn, p.kind, p.keys, b)}
        unsplit = tuple(b for b in crowded if b not in fine)
        wish = (p.kind, tuple(p.keys), unsplit) if unsplit else None
    if bounded and sum(n for b, n in rows.items() if b not in fine) > INLINE_EDGE_ROWS:
        raise TooDeep()
    return fine, wish


# ---------------------------------------------------------------------------- the page

def page(conn, p: Plan, query: ListQuery, offset: int, boundary: int | None = None):
    """`listing.page_sql`'s row for the page: `offset` rows skipped after the cursor or, with
    `boundary`, after the start time a deep offset's walk found (newest first: start_ts <
    boundary; oldest first: start_ts >= boundary)."""
    keys_sql, params = _keys_sql(p, query, offset, boundary)
    return conn.execute(page_sql(keys_sql, query.newest_first), params).fetchone()


def single(p: Plan, query: ListQuery):
    """(SQL, parameters) of one statement that answers the whole query when its count is the
    tallies' alone and its page is near the start, or None for the other plans (`run` answers
    them): one row, (total_count, then `listing.page_sql`'s columns). One statement sees one
    snapshot, so it needs no read transaction around it (two statements fewer on the commonest
    lists)."""
    offset = 0 if query.cursor is not None else query.offset
    if p.kind is None or p.edges or p.rival is not None or offset > DIRECT_OFFSET \
            or reads_before_end_bound(query):
        return None
    keys_sql, key_params = _keys_sql(p, query, offset)
    sum_sql, sum_params = _sum_sql(p.kind, p.keys, p.column, p.ranges)
    return page_sql(keys_sql, query.newest_first, f"({sum_sql}), "), [*key_params, *sum_params]


def _keys_sql(p: Plan, query: ListQuery, offset: int, boundary: int | None = None):
    """(id, start_ts) of the page's rows, in the query's order."""
    order = "DESC" if query.newest_first else "ASC"
    where = [*p.where, *(sql for sql, _ in p.dates)]
    params = [*p.params, *(value for _, value in p.dates)]
    if boundary is not None:
        where.append("start_ts < ?" if query.newest_first else "start_ts >= ?")
        params.append(boundary)
    if query.cursor is not None:
        where.append(f"(start_ts, id) {'<' if query.newest_first else '>'} (?, ?)")
        params += query.cursor
    names = sorted(query.namespaces) if query.namespaces is not None else None
    tail = f"ORDER BY start_ts {order}, id {order}"
    if names is not None and len(names) > 1 and p.index is not None:
        # one index range per namespace, each read no further than the page needs, then merged
        where[0] = "namespace = ?"
        one = f"SELECT * FROM (SELECT id, start_ts FROM {_from(p)} WHERE {' AND '.join(where)} " \
              f"{tail} LIMIT ?)"
        keys_sql = f"SELECT id, start_ts FROM ({' UNION ALL '.join([one] * len(names))}) " \
                   f"{tail} LIMIT ? OFFSET ?"
        rest = params[len(names):]
        key_params = [v for ns in names for v in (ns, *rest, offset + query.limit)]
    else:
        keys_sql = (f"SELECT id, start_ts FROM {_from(p)}"
                    f"{' WHERE ' + ' AND '.join(where) if where else ''} {tail} LIMIT ? OFFSET ?")
        key_params = params
    return keys_sql, [*key_params, query.limit, offset]


def reads_before_end_bound(query: ListQuery) -> bool:
    """Whether an oldest-first page filtered by `end_date__gte` starts its walk in time order
    before that bound. Every row from the bound on has ended after it (but those still running),
    while before it only the few that ran across it match, and no index finds those: the walk
    tests the rows one by one from the oldest (or the cursor, or `start_date__gte`) to the bound,
    half a million of them for a bound in the middle of a million actions (170 ms). Such a page
    is not bounded, so it is read off the loop."""
    bound = query.filters.get("end_date__gte")
    if query.newest_first or bound is None:
        return False
    starts = [query.filters.get("start_date__gte"),
              query.cursor[0] if query.cursor is not None else None]
    return max((s for s in starts if s is not None), default=bound - 1) < bound


# ---------------------------------------------------------------------------- deep offsets

def _edge_count(conn, p: Plan, a: int, b: int) -> int:
    where = [*p.where, "start_ts >= ?", "start_ts < ?"]
    return conn.execute(f"SELECT count(*) FROM {_from(p)} WHERE {' AND '.join(where)}",
                        [*p.params, a, b]).fetchone()[0]


def locate(conn, p: Plan, offset: int, newest_first: bool, fine=frozenset()):
    """tallyplan.locate's walk, answered from this connection: (boundary, rows to skip after
    it, the 68-minute bucket to split or None) for `page`, or None past the last row."""
    return tallyplan.drive(
        tallyplan.locate(p.ranges, p.edges, fine, offset, newest_first,
                         p.kind in tally.SPLIT_KINDS, SPLIT_SKIP),
        {"rows": lambda a, b: _edge_count(conn, p, a, b),
         "pick": lambda first, last, skip: tallies.pick(conn, p.kind, p.keys, first, last,
                                                        p.column, skip, newest_first),
         "split": lambda bucket: tallies.is_split(conn, p.kind, p.keys, bucket)})


def run(conn, p: Plan, query: ListQuery, bounded: bool = False):
    """(total_count, `page`'s row or None, a split wish or None) of a tallied query, in the
    caller's one read transaction. `bounded` (on the loop): raises TooDeep rather than count
    more than INLINE_EDGE_ROWS edge rows, skip more than INLINE_SKIP rows or walk up to an end
    date (`reads_before_end_bound`). The tallies find a deep offset's bucket, but within a
    68-minute one not split yet (which a burst of records can fill with a million rows) or
    without a walk the rows are skipped one by one, and a date range's edges in such a bucket are
    counted from its rows; the wish, (kind, keys, buckets) for `tallies.split`, says which
    buckets to split so that the next time they are not."""
    if bounded and reads_before_end_bound(query):
        raise TooDeep()
    fine, wish = _edge_buckets(conn, p, bounded) if p.edges else ((), None)
    total = count(conn, p, fine)
    if p.rival is not None and total:
        # The page reads about 25 * (the index range's rows) / total entries: the range of the
        # equality's index, or the state's, whichever the tallies say is shorter.
        index, kind, keys = p.rival
        if _sum(conn, kind, keys, p.column, p.ranges) < _sum(conn, p.kind, p.keys, None, p.ranges):
            p = replace(p, index=index)
    offset = 0 if query.cursor is not None else query.offset
    if offset >= total:
        return total, None, wish
    if offset > DIRECT_OFFSET and p.walk:
        found = locate(conn, p, offset, query.newest_first, fine)
        if found is None:
            return total, None, wish
        boundary, skip, split = found
        if split is not None:
            wish = (p.kind, tuple(p.keys), tuple(sorted({split, *(wish[2] if wish else ())})))
        if bounded and skip > INLINE_SKIP:
            raise TooDeep()
        return total, page(conn, p, query, skip, boundary), wish
    if bounded and offset > max(INLINE_SKIP, DIRECT_OFFSET):
        raise TooDeep()
    return total, page(conn, p, query, offset), wish
