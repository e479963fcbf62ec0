"""List queries: one statement gives a page of Action JSON and its exact total_count from one
snapshot. The statement's text depends only on the query's shape and is cached.

- The page is found by keyset over (start_ts, id) when a cursor is given (a deep page costs what
  the first does), else by LIMIT/OFFSET; every partition has the (start_ts, id) indexes, and the
  planner merges them in order.
- total_count comes from `action_counts` (kept by triggers in the writing transaction) when the
  query filters by namespace and state at most, so it never scans; other filters count rows.
- A newest-first page with such a count is first looked for in a window, `start_ts >= SINCE`
  with SINCE a month's first second written into the statement, so that the planner leaves the
  older months' partitions out (each partition costs the statement about 20 us of PostgreSQL's
  CPU whether or not it holds a row of the page). Every row inside the window is newer than
  every row outside it, so a window holding a full page gives exactly the page the whole table
  would; one holding less is asked again without the window. The window is the cursor's month,
  or the month of the last row of the latest full first page of the same kind (`window_for`;
  the store remembers them).
"""
import calendar
import functools
import time

from ...model.query import ListQuery

# The object itself, all its ancestors and all its descendants (never its siblings).
RELATED_SQL = (
    "WITH RECURSIVE up(id) AS (SELECT $1::bigint UNION "
    "  SELECT p.parent_id FROM object_parents p JOIN up ON p.child_id = up.id), "
    "down(id) AS (SELECT $1::bigint UNION "
    "  SELECT p.child_id FROM object_parents p JOIN down ON p.parent_id = down.id) "
    "SELECT id FROM up UNION SELECT id FROM down")

_COLUMN_FILTERS = {
    "uuid": "uuid = {}", "state": "state = {}", "action": "action = {}", "user": '"user" = {}',
    "is_user_action": "is_user_action = {}",
    "start_date__gte": "start_ts >= {}", "start_date__lte": "start_ts <= {}",
    "end_date__gte": "end_ts >= {}", "end_date__lte": "end_ts <= {}",
}
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
    """What the store remembers a window for: the namespaces and the state filter."""
    return query.namespaces, query.filters.get("state")


def window_for(query: ListQuery, remembered: int | None) -> int | None:
    """The first second of the window to look in first (see the module's text), or None:
    the cursor's month, or the month of the last row of the latest full first page of this
    query's kind (`remembered`; new rows since then are newer, so inside it)."""
    if not query.newest_first or not counted(query):
        return None
    if query.cursor is not None:
        return month_start(query.cursor[0])
    return None if remembered is None else month_start(remembered)


def list_sql(query: ListQuery, object_ids=None, since: int | None = None) -> tuple[str, list]:
    """The statement and its parameters. Rows: (total, doc, start_ts, id); one row with a NULL
    doc when the page is empty. `object_ids`: the objects whose actions are wanted; `since`: the
    window (`window_for`)."""
    f = query.filters
    filters = tuple(name for name in _COLUMN_FILTERS if name in f)
    names = sorted(query.namespaces) if query.namespaces is not None else None
    # One namespace is compared with =, so the planner can walk an index in page order.
    shape = None if names is None else "one" if len(names) == 1 else "many"
    sql = _list_statement(shape, filters, "uuid__startswith" in f, object_ids is not None,
                          counted(query), query.newest_first, query.cursor is not None,
                          None if since is None else int(since))
    params = [] if names is None else [names[0]] if len(names) == 1 else [names]
    params += [_filter_value(name, f[name]) for name in filters]
    if "uuid__startswith" in f:
        params.extend(_prefix_bounds(f["uuid__startswith"]))
    if object_ids is not None:
        params.append(list(object_ids))
    if query.cursor is not None:
        params.extend(query.cursor)
    offset = 0 if query.cursor is not None else query.offset
    return sql, [*params, query.limit, offset]


@functools.lru_cache(maxsize=512)
def _list_statement(namespaces: str | None, filters: tuple, prefix: bool, by_object: bool,
                    counted: bool, newest_first: bool, with_cursor: bool,
                    since: int | None) -> str:
    n = 0

    def param(cast: str = "") -> str:
        nonlocal n
        n += 1
        return f"${n}{'::' + cast if cast else ''}"

    where, count_where = [], []
    if namespaces == "one":
        where.append(f"namespace = {param('text')}")
        count_where.append(where[-1])
    elif namespaces == "many":
        where.append(f"namespace = ANY({param('text[]')})")
        count_where.append(where[-1])
    for name in filters:
        where.append(_COLUMN_FILTERS[name].format(param(_TYPES.get(name, "bigint"))))
        if name == "state":
            count_where.append(where[-1])
    if prefix:
        where.append(f"uuid >= {param('text')} AND uuid < {param('text')}")
    if by_object:
        where.append(f"object_id = ANY({param('bigint[]')})")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    if counted:
        count_clause = (" WHERE " + " AND ".join(count_where)) if count_where else ""
        count_sql = f"SELECT coalesce(sum(n), 0)::bigint FROM action_counts{count_clause}"
    else:
        count_sql = f"SELECT count(*) FROM actions{clause}"
    order = "DESC" if newest_first else "ASC"
    page_where = list(where)
    if since is not None:     # a constant, so that the planner prunes the older partitions
        page_where.append(f"start_ts >= {since}")
    if with_cursor:
        page_where.append(f"(start_ts, id) {'<' if newest_first else '>'} "
                          f"({param('bigint')}, {param('bigint')})")
    page_clause = (" WHERE " + " AND ".join(page_where)) if page_where else ""
    return (f"SELECT ({count_sql}) AS total, p.doc, p.start_ts, p.id FROM (SELECT 1) AS one "
            f"LEFT JOIN LATERAL (SELECT doc, start_ts, id FROM actions{page_clause} "
            f"ORDER BY start_ts {order}, id {order} LIMIT {param('bigint')} "
            f"OFFSET {param('bigint')}) AS p ON true")
