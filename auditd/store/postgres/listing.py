"""List queries: one statement gives a page of Action JSON and its exact total_count from one
snapshot. The statement's text depends only on the query's shape and is cached.

- The page is found by keyset over (start_ts, id) when a cursor is given (a deep page costs what
  the first does), else by LIMIT/OFFSET; every partition has the (start_ts, id) indexes, and the
  planner merges them in order.
- total_count comes from `action_counts` (kept by triggers in the writing transaction) when the
  query filters by namespace and state at most, so it never scans; other filters count rows.
- A newest-first page whose count is cheap (the counters' or the tallies') is first looked for
  in a window, `start_ts >= SINCE` with SINCE a month's first second written into the
  statement, so that the planner leaves the older months' partitions out (each partition costs
  the statement about 20 us of PostgreSQL's CPU whether or not it holds a row of the page, and
  a filtered page walks each month's index until its first match). The count is the whole
  table's either way. Every row inside the window is newer than every row outside it, so a
  window holding a full page gives exactly the page the whole table would; one holding less is
  asked again without the window. The window is the cursor's month, or the month of the last
  row of the latest full page of the same query at least as deep (`window_for`; the store
  remembers them).
"""
import calendar
import functools
import re
import time

from ...model import tally
from ...model.query import ListQuery
from ...model.uris import normalize_object_uri
from . import tallies

_COLUMN_FILTERS = {
    "uuid": "uuid = {}", "state": "state = {}", "action": "action = {}", "user": '"user" = {}',
    "is_user_action": "is_user_action = {}",
    "start_date__gte": "start_ts >= {}", "start_date__lte": "start_ts <= {}",
    "end_date__gte": "end_ts >= {}", "end_date__lte": "end_ts <= {}",
}
MAX_SPLIT_NAMESPACES = 64    # more: one scan of them all, not one per namespace
PREFIX_DIGITS = 2    # actions_by_uuid_prefix leads with the uuid's first two digits
_TYPES = {"uuid": "text", "state": "text", "action": "text", "user": "text",
          "is_user_action": "smallint"}


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    prefix = prefix.lower()
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _filter_value(name: str, value):
    if name == "uuid":
        return value.lower()
    return int(value) if name == "is_user_action" else value


def counted(query: ListQuery) -> bool:
    """Whether total_count comes from the counters (no filter but namespace and state)."""
    return set(query.filters) <= {"state"}


def month_start(ts: int) -> int:
    t = time.gmtime(ts)
    return calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))


def window_key(query: ListQuery):
    """What the store remembers a window for: the namespaces and the filters."""
    return query.namespaces, tuple(sorted(query.filters.items()))


def window_for(query: ListQuery, remembered: tuple[int, int] | None,
               cheap_count: bool) -> int | None:
    """The first second of the window to look in first (see the module's text), or None:
    the cursor's month, or the month of the last row of the latest full page of this query
    that reached at least as deep (`remembered`: that row's start_ts and the page's offset plus
    limit; new rows since then are newer, so inside it). None unless the page is newest first
    and its count is `cheap_count` (a window that misses costs the statement twice)."""
    if not query.newest_first or not cheap_count:
        return None
    if query.cursor is not None:
        return month_start(query.cursor[0])
    if remembered is None or remembered[1] < query.offset + query.limit:
        return None
    return month_start(remembered[0])


def list_sql(query: ListQuery, since: int | None = None, shape=None,
             boundary: int | None = None, count: bool = True,
             window: int | None = None, walk=None) -> tuple[str, list]:
    """The statement and its parameters. Rows: (total, doc, start_ts, id); one row with a NULL
    doc when the page is empty (an object filter: `object_sql`). `since`: the window
    (`window_for`); `shape`: the query's tallyplan.Shape, whose tallies then count it;
    `boundary`: where a deep offset's walk found its row (newest first: start_ts < boundary;
    oldest first: start_ts >= boundary); `count` False: a NULL total, the page alone; `window`:
    the page looked for among the rows that start from then on (`end_window`); `walk`: a
    deep offset's Shape (its `walk` true), whose tallies find the offset's row in the statement
    itself (tallies.walk_sql), which then has a fifth column, the rows of the page's bucket it
    skipped."""
    f = query.filters
    filters = tuple(name for name in _COLUMN_FILTERS if name in f)
    names = sorted(query.namespaces) if query.namespaces is not None else None
    # One namespace is compared with =, so the planner can walk an index in page order.
    where = None if names is None else "one" if len(names) == 1 else \
        "many" if len(names) <= MAX_SPLIT_NAMESPACES else "any"
    tallied = None
    if count and shape is not None and shape.kind is not None:
        tallied = (shape.kind in tally.PREFIX_KINDS, len(shape.keys), len(shape.ranges),
                   shape.column, len(shape.edges), shape.time)
    how = tallied if tallied else "counters" if counted(query) else "rows" if count else None
    if walk is not None:
        how, boundary = ("walk", walk.column, len(walk.edges)), None
    prefix = f.get("uuid__startswith")
    # All namespaces and two digits or more: the prefix index, in time order (tallies.py)
    by_prefix = prefix is not None and len(prefix) >= PREFIX_DIGITS and names is None
    prefix_test = None if prefix is None else "index" if by_prefix else "range"
    sql = _list_statement(where, filters, prefix_test,
                          how, query.newest_first, query.cursor is not None,
                          None if since is None else int(since),
                          "walk" if walk is not None else boundary is not None,
                          window is not None,
                          _masked(f, names))
    params = [] if names is None else [names[0]] if len(names) == 1 else [names]
    params += [_filter_value(name, f[name]) for name in filters]
    if by_prefix:
        params.append(prefix[:PREFIX_DIGITS].lower())
    if prefix is not None:
        params.extend(_prefix_bounds(prefix))
    if boundary is not None:
        params.append(boundary)
    if window is not None:
        params.append(window)
    if query.cursor is not None:
        params.extend(query.cursor)
    offset = 0 if query.cursor is not None else query.offset
    params += [query.limit, offset]
    if tallied:
        params += _tally_params(shape)
    if walk is not None:
        params += [walk.kind, list(walk.keys), [r[0] for r in walk.ranges],
                   [r[1] for r in walk.ranges], *(v for edge in walk.edges for v in edge)]
    return sql, params


def end_window(query: ListQuery) -> int | None:
    """Where a newest-first page of `end_date__gte=T` is looked for first: among the actions
    that start at T or later (each ended after it started, so every one of them matches). Every
    partition's newest row that matches is needed to merge them in order, and in a month that
    ended before T none does: its whole index would be read to find that out. When the window
    holds the page, it is the page of the whole table (every row outside it is older)."""
    f = query.filters
    if not query.newest_first or query.cursor is not None or "end_date__gte" not in f:
        return None
    return max(f["end_date__gte"], f.get("start_date__gte") or f["end_date__gte"])


def _masked(f: dict, names) -> tuple:
    """The columns the page's conditions hide from PostgreSQL's index choice, so that it walks
    one index in time order and tests the rest in it: a generic plan cannot tell how selective
    each value is, and given two equalities it ANDs two bitmaps of every matching row and sorts
    them (250 ms for 19,390 rows of one user in one namespace, against 1.4 ms walking the user's
    index). The choice is SQLite's planner's: the equality filter's index, with a namespace the
    namespace's (but the user's, which is as narrow and does not mix namespaces' users), with a
    short uuid prefix the namespace's, with a longer one and no namespace the prefix index, and
    with an end date the time index."""
    equal = [name for name in ("action", "user", "is_user_action") if name in f]
    if len(equal) > 1:
        return ()
    mask = []
    if equal and "state" in f:
        mask.append("state")
    if names is not None and equal == ["user"]:
        mask.append("namespace")
    if names is not None and equal == ["is_user_action"]:
        mask.append("is_user_action")
    prefix = f.get("uuid__startswith")
    if prefix is not None and (names is None) == (len(prefix) >= PREFIX_DIGITS):
        mask.append("uuid")     # the namespace's index, or the prefix index (in time order)
    if "end_date__gte" in f or "end_date__lte" in f:
        mask.append("end_ts")   # the time index, not every row the end index finds, sorted
    return tuple(mask)


def _mask(condition: str, columns: tuple) -> str:
    for column in columns:
        name = '"user"' if column == "user" else column
        hidden = f"({name} + 0)" if column in ("is_user_action", "end_ts") else f"({name} || '')"
        condition = re.sub(rf'(?<![\w(."]){re.escape(name)}(?= )', hidden, condition)
    return condition


def _tally_params(shape) -> list:
    """The parameters of `_tally_total`'s SQL, in its order."""
    if shape.kind in tally.PREFIX_KINDS:
        params = [shape.kind, *(v for key in shape.keys for v in _prefix_bounds(key))]
    elif shape.ranges:
        params = [shape.kind, list(shape.keys), *(v for r in shape.ranges for v in r)]
    else:
        params = []
    return params + [v for edge in shape.edges for v in edge]


def _tally_total(how: tuple, where: list, param) -> str:
    """The exact total from the tallies: their whole buckets plus each date edge's rows (at
    most one 68-minute bucket's, through an index)."""
    prefix, keys, ranges, column, edges, time_column = how
    total = "0::bigint"
    if prefix or ranges:
        first = int(param()[1:])
        for _ in range(2 * keys if prefix else 1 + 2 * ranges):
            param()
        total = (tallies.prefix_sum_sql(keys, column, first) if prefix
                 else tallies.sum_sql(ranges, column, first))
    for _ in range(edges):
        test = " AND ".join([*where, f"{time_column} >= {param('bigint')}",
                             f"{time_column} < {param('bigint')}"])
        total += f" + (SELECT count(*) FROM actions WHERE {test})"
    return total


@functools.lru_cache(maxsize=512)
def _list_statement(namespaces: str | None, filters: tuple, prefix: str | None,
                    how, newest_first: bool, with_cursor: bool, since: int | None,
                    boundary: bool, window: bool = False, mask: tuple = ()) -> str:
    n = 0

    def param(cast: str = "") -> str:
        nonlocal n
        n += 1
        return f"${n}{'::' + cast if cast else ''}"

    where, count_where = [], []
    if namespaces == "one":
        where.append(f"namespace = {param('text')}")
        count_where.append(where[-1])
    elif namespaces in ("many", "any"):
        where.append(f"namespace = ANY({param('text[]')})")
        count_where.append(where[-1])
    for name in filters:
        where.append(_COLUMN_FILTERS[name].format(param(_TYPES.get(name, "bigint"))))
        if name == "state":
            count_where.append(where[-1])
        if name == "end_date__lte":     # an action ends after it starts: the page seeks there
            where.append(f"start_ts <= ${n}")
    if prefix == "index":
        where.append(f"substr(uuid, 1, {PREFIX_DIGITS}) = {param('text')}")
    if prefix:
        where.append(f"uuid >= {param('text')} AND uuid < {param('text')}")
    order = "DESC" if newest_first else "ASC"
    page_where = [_mask(condition, mask) for condition in where]
    if boundary:
        page_where.append(f"start_ts {'<' if newest_first else '>='} " + (
            "(SELECT boundary FROM walk_found)" if boundary == "walk" else param("bigint")))
    if window:
        page_where.append(f"start_ts >= {param('bigint')}")
    if since is not None:     # a constant, so that the planner prunes the older partitions
        page_where.append(f"start_ts >= {since}")
    if with_cursor:
        page_where.append(f"(start_ts, id) {'<' if newest_first else '>'} "
                          f"({param('bigint')}, {param('bigint')})")
    tail = f"ORDER BY start_ts {order}, id {order}"
    limit, offset = param("bigint"), param("bigint")
    skip = "(SELECT skip FROM walk_found)" if boundary == "walk" else offset
    if namespaces == "many":
        # one index range per namespace, each read no further than the page needs, then merged
        page_where[0] = _mask("namespace = ns.name", mask)
        page = (f"SELECT doc, start_ts, id FROM unnest($1::text[]) AS ns(name) CROSS JOIN "
                f"LATERAL (SELECT doc, start_ts, id FROM actions WHERE "
                f"{' AND '.join(page_where)} {tail} LIMIT {limit} + {skip}) AS n "
                f"{tail} LIMIT {limit} OFFSET {skip}")
    else:
        page_clause = (" WHERE " + " AND ".join(page_where)) if page_where else ""
        page = f"SELECT doc, start_ts, id FROM actions{page_clause} {tail} LIMIT {limit} " \
               f"OFFSET {skip}"
    if how is None:
        count_sql = "NULL::bigint"
    elif how == "counters":
        count_clause = (" WHERE " + " AND ".join(count_where)) if count_where else ""
        count_sql = f"SELECT coalesce(sum(n), 0)::bigint FROM action_counts{count_clause}"
    elif how == "rows":
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        count_sql = f"SELECT count(*) FROM actions{clause}"
    elif how[0] == "walk":
        return _walk_statement(how, where, param, offset, newest_first, page)
    else:
        count_sql = "SELECT " + _tally_total(how, where, param)
    return (f"SELECT ({count_sql}) AS total, p.doc, p.start_ts, p.id FROM (SELECT 1) AS one "
            f"LEFT JOIN LATERAL ({page}) AS p ON true")


def _walk_statement(how: tuple, where: list, param, offset: str, newest_first: bool,
                    page: str) -> str:
    """A deep page's statement: the walk's CTEs (tallies.walk_sql), then the total, the page
    from the walk's boundary and the rows it skipped there."""
    _, column, edge_count = how
    first = int(param()[1:])
    for _ in range(3):
        param()
    edges = []
    for _ in range(edge_count):
        start, stop = param("bigint"), param("bigint")
        test = " AND ".join([*where, f"start_ts >= {start}", f"start_ts < {stop}"])
        edges.append((f"SELECT count(*) FROM actions WHERE {test}", start, stop))
    walk = tallies.walk_sql(column, newest_first, first, edges, offset)
    return (f"WITH RECURSIVE {walk} SELECT (SELECT total FROM walk_total) AS total, p.doc, "
            f"p.start_ts, p.id, (SELECT skip FROM walk_found) AS skip FROM (SELECT 1) AS one "
            f"LEFT JOIN LATERAL ({page}) AS p ON true")


def object_sql(query: ListQuery) -> tuple[str, list]:
    """The statement for the actions on an object (with include_related, on its related
    objects): a page and its total (rows as `list_sql`'s) from the actions on the object and,
    with include_related, on its ancestors, through action_keys' object index (one range per
    object; the actions' own rows are partitioned by month), and the actions filed under it
    (lineage.py: its descendants', one range); the other filters, if any, tested on those
    actions' rows; then the page's documents, one row each. One round trip in all."""
    f = query.filters
    names = sorted(query.namespaces) if query.namespaces is not None else None
    filters = tuple(name for name in _COLUMN_FILTERS if name in f)
    prefix = f.get("uuid__startswith")
    params = [normalize_object_uri(f["object"])] + ([names] if names is not None else [])
    params += [_filter_value(name, f[name]) for name in filters]
    if prefix is not None:
        params.extend(_prefix_bounds(prefix))
    if query.cursor is not None:
        params.extend(query.cursor)
    params += [query.limit, 0 if query.cursor is not None else query.offset]
    return _object_statement(bool(f.get("include_related")), names is not None, filters,
                             prefix is not None, query.newest_first,
                             query.cursor is not None), params


@functools.lru_cache(maxsize=256)
def _object_statement(related: bool, namespaced: bool, filters: tuple, prefix: bool,
                      newest_first: bool, with_cursor: bool) -> str:
    ups = "array_prepend(id, ARRAY(SELECT object_ancestors(id)))" if related else "ARRAY[id]"
    namespace = " AND namespace = ANY($2::text[])" if namespaced else ""
    ups_array = "(SELECT ups FROM objs)::bigint[]"
    keys = f"SELECT start_ts, id FROM action_keys WHERE object_id = ANY({ups_array}){namespace}"
    if related:     # not on X or an ancestor: a cycle's rows come from action_keys (lineage.py)
        keys += (f" UNION ALL SELECT start_ts, id FROM action_ancestors WHERE ancestor_id = "
                 f"(SELECT root FROM objs){namespace} AND object_id <> ALL({ups_array})")
    n = 2 if namespaced else 1
    tests = []
    for name in filters:
        n += 1
        tests.append(_COLUMN_FILTERS[name].format(f"${n}::{_TYPES.get(name, 'bigint')}"))
    if prefix:
        tests.append(f"uuid >= ${n + 1}::text AND uuid < ${n + 2}::text")
        n += 2
    found = "keys"
    if tests:       # each of the objects' actions tested in its month: a subquery per key
        found = "hits"  # (as an EXISTS the planner may join every action that passes instead)
        keys = (f"{keys}), hits AS MATERIALIZED (SELECT k.start_ts, k.id FROM keys AS k WHERE "
                f"(SELECT true FROM actions WHERE actions.id = k.id AND actions.start_ts = "
                f"k.start_ts AND {' AND '.join(tests)} LIMIT 1)")
    order = "DESC" if newest_first else "ASC"
    page_where = ""
    if with_cursor:
        page_where = (f"WHERE (start_ts, id) {'<' if newest_first else '>'} "
                      f"(${n + 1}::bigint, ${n + 2}::bigint) ")
        n += 2
    # the objects' rows are read once, for the total and the page
    return (f"WITH objs AS MATERIALIZED (SELECT id AS root, {ups} AS ups FROM objects WHERE "
            f"uri = $1::text), keys AS MATERIALIZED ({keys}) "
            f"SELECT (SELECT count(*) FROM {found}) AS total, p.doc, p.start_ts, p.id FROM "
            f"(SELECT 1) AS one LEFT JOIN LATERAL (SELECT a.doc, a.start_ts, a.id FROM (SELECT "
            f"id, start_ts FROM {found} {page_where}ORDER BY start_ts {order}, id {order} "
            f"LIMIT ${n + 1}::bigint OFFSET ${n + 2}::bigint) AS k CROSS JOIN LATERAL (SELECT "
            f"doc, start_ts, id FROM actions WHERE id = k.id AND start_ts = k.start_ts) AS a) "
            f"AS p ON true")
