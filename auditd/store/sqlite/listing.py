"""List queries: one statement gives a page of Action JSON and its exact total_count from one
snapshot. The statement's text depends only on the query's shape and is cached."""
import functools
import json

from ...model.query import ListQuery, Page


_COLUMN_FILTERS = {
    "uuid": "uuid = ?", "state": "state = ?", "action": "action = ?", "user": "user = ?",
    "is_user_action": "is_user_action = ?",
    "start_date__gte": "start_ts >= ?", "start_date__lte": "start_ts <= ?",
    "end_date__gte": "end_ts >= ?", "end_date__lte": "end_ts <= ?",
}


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    prefix = prefix.lower()
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class ObjectIds(tuple):
    """The objects a query filters by, with the statement's JSON parameter and the key their
    reads' budget is kept under, each made once: a related set is remembered between requests,
    and making 100,000 ids' JSON took 15 ms of the loop."""

    def __new__(cls, ids, key=None):
        self = super().__new__(cls, ids)
        self.json = json.dumps(self)
        self.key = key if key is not None else tuple(self)
        return self


INLINE_MAX_OFFSET = 1000
INLINE_MAX_OBJECTS = 256


def is_bounded(query: ListQuery, object_ids) -> bool:
    """Whether a list query reads a bounded number of rows: the first offset+limit of one index
    range (one namespace or all, state at most, counted by action_counts), the actions of a few
    objects, or one uuid's (uuids are unique: SQLite seeks its unique index for at most a row)."""
    if query.offset > INLINE_MAX_OFFSET and query.cursor is None:   # a cursor seeks, never skips
        return False
    if object_ids is not None:
        return len(object_ids) <= INLINE_MAX_OBJECTS
    if "uuid" in query.filters:
        return True
    return (set(query.filters) <= {"state"}
            and (query.namespaces is None or len(query.namespaces) == 1))


def page_sql(keys_sql: str, newest_first: bool, head: str = "") -> str:
    """One row for the page whose keys `keys_sql` gives, (id, start_ts) in page order: (`head`'s
    columns, the docs joined by RS or NULL, their number, the last row's start_ts, the ids
    joined by commas). The keys' parameters come first, then `head`'s.

    SQLite joins the docs, so Python makes one row, not one per action (a page of 25 cost
    27 us as rows, then a sort and a join, and costs 20 us so). The keys reach the aggregates in
    their ORDER BY: SQLite runs a LIMITed subquery as a co-routine, row by row in that order, and
    CROSS JOIN keeps it the outer loop (tests/test_filters.py checks every page and its cursor
    against a brute-force one). The last row's start_ts is the page's least (newest first) or
    greatest; its id, the last one."""
    return (f"WITH k AS ({keys_sql}) SELECT {head}CAST(group_concat(a.doc, char(30)) AS BLOB), "
            f"count(*), {'min' if newest_first else 'max'}(k.start_ts), group_concat(k.id) "
            "FROM k CROSS JOIN actions a WHERE a.id = k.id")


def joined_page(total: int, row) -> Page:
    """The Page of `page_sql`'s row (without its head), or an empty one for None."""
    if row is None or not row[0]:
        return Page(total, [], None)
    joined, size, last_ts, ids = row
    return Page.joined(total, joined, size, (last_ts, int(ids.rpartition(",")[2])))


def list_sql(query: ListQuery, object_ids: ObjectIds | None = None):
    """One statement whose one row is (total_count, then `page_sql`'s columns). `object_ids`:
    the objects whose actions are wanted, when the query filters by object. The statement's text
    depends only on the query's shape and is cached."""
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
        params.append(object_ids.json)
    state = [f["state"]] if "state" in f else []
    count_params = [*(names or ()), *state] if counted else params
    page_params = [*params, *query.cursor] if query.cursor is not None else params
    offset = 0 if query.cursor is not None else query.offset
    return sql, [*page_params, query.limit, offset, *count_params]


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
    return page_sql(f"SELECT id, start_ts FROM actions{page_clause} "
                    f"ORDER BY start_ts {order}, id {order} LIMIT ? OFFSET ?",
                    newest_first, head=f"({count_sql}), ")
