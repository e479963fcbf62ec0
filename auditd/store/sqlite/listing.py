"""List queries: one statement gives a page of Action JSON and its exact total_count from one
snapshot. The statement's text depends only on the query's shape and is cached."""
import functools
import json
import operator

from ...model.query import ListQuery


_COLUMN_FILTERS = {
    "uuid": "uuid = ?", "state": "state = ?", "action": "action = ?", "user": "user = ?",
    "is_user_action": "is_user_action = ?",
    "start_date__gte": "start_ts >= ?", "start_date__lte": "start_ts <= ?",
    "end_date__gte": "end_ts >= ?", "end_date__lte": "end_ts <= ?",
}


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    prefix = prefix.lower()
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


INLINE_MAX_OFFSET = 1000
INLINE_MAX_OBJECTS = 256


def is_bounded(query: ListQuery, object_ids) -> bool:
    """Whether a list query reads a bounded number of rows: the first offset+limit of one index
    range (one namespace or all, state at most, counted by action_counts), or the actions of a few
    objects."""
    if query.offset > INLINE_MAX_OFFSET and query.cursor is None:   # a cursor seeks, never skips
        return False
    if object_ids is not None:
        return len(object_ids) <= INLINE_MAX_OBJECTS
    return (set(query.filters) <= {"state"}
            and (query.namespaces is None or len(query.namespaces) == 1))


page_order = operator.itemgetter(2, 3)   # (start_ts, id) of a page row


def list_sql(query: ListQuery, object_ids=None):
    """One statement: a row (NULL, total_count), and one row per Action on the page (its JSON as
    bytes, sent as is, then its start_ts and id), in any order. `object_ids`: the objects whose actions are wanted, when the query
    filters by object. The statement's text depends only on the query's shape and is cached."""
    f = query.filters
    names = sorted(query.namespaces) if query.namespaces is not None else None
    filters = tuple(name for name in _COLUMN_FILTERS if name in f)
    counted = set(f) <= {"state"}   # counted by action_counts, not by scanning actions
    sql = _list_statement(None if names is None else len(names), filters, "uuid__startswith" in f,
                          object_ids is not None, counted, query.newest_first,
                          query.cursor is not None)
    params = [*(names or ()), *(_filter_value(name, f[name]) for name in filters)]
    if "uuid__startswith" in f:
        params.extend(_prefix_bounds(f["uuid__startswith"]))
    if object_ids is not None:
        params.append(json.dumps(object_ids))
    state = [f["state"]] if "state" in f else []
    count_params = [*(names or ()), *state] if counted else params
    page_params = [*params, *query.cursor] if query.cursor is not None else params
    offset = 0 if query.cursor is not None else query.offset
    return sql, [*count_params, *page_params, query.limit, offset]


def _filter_value(name: str, value):
    if name == "uuid":
        return value.lower()
    return int(value) if name == "is_user_action" else value


@functools.lru_cache(maxsize=512)
def _list_statement(namespaces: int | None, filters: tuple, prefix: bool, by_object: bool,
                    counted: bool, newest_first: bool, with_cursor: bool) -> str:
    # With an object filter the object index is the one to use: the others are kept out of the
    # planner's reach (a unary + on a column), or it may walk a whole namespace instead.
    col = (lambda c: "+" + c) if by_object else (lambda c: c)
    in_namespaces = f"IN ({', '.join('?' * namespaces)})" if namespaces is not None else ""
    where = [f"{col('namespace')} {in_namespaces}"] if namespaces is not None else []
    where += [col(_COLUMN_FILTERS[name]) for name in filters]
    if prefix:
        where.append(f"{col('uuid')} >= ? AND {col('uuid')} < ?")
    if by_object:
        where.append("object_id IN (SELECT value FROM json_each(?))")
    clause = (" WHERE " + " AND ".join(where)) if where else ""

    if counted:
        count_where = [f"namespace {in_namespaces}"] if namespaces is not None else []
        count_where += ["state = ?"] if "state" in filters else []
        count_clause = (" WHERE " + " AND ".join(count_where)) if count_where else ""
        count_sql = f"SELECT coalesce(sum(n), 0) FROM action_counts{count_clause}"
    else:
        count_sql = f"SELECT count(*) FROM actions{clause}"

    order = "DESC" if newest_first else "ASC"
    if with_cursor:   # keyset: a deep page costs what the first one does
        where.append(f"(start_ts, id) {'<' if newest_first else '>'} (?, ?)")
    page_clause = (" WHERE " + " AND ".join(where)) if where else ""
    # The page's keys are found first and only its rows are read whole: a sort never carries docs.
    # The page comes back in no particular order (sorting 25 rows again in SQL took a temporary
    # B-tree and a quarter of the statement's time): Store.list_actions puts it in order.
    return (f"SELECT NULL, ({count_sql}), NULL, NULL UNION ALL "
            f"SELECT CAST(a.doc AS BLOB), NULL, k.start_ts, k.id FROM ("
            f"SELECT id, start_ts FROM actions{page_clause} "
            f"ORDER BY start_ts {order}, id {order} LIMIT ? OFFSET ?) AS k "
            f"JOIN actions a ON a.id = k.id")
