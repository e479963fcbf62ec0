"""The PostgreSQL store's list reads (interface: `list_actions`): one statement for a page and
its exact total (listing.py), the total from the tallies when they count the query's shape;
a deep offset found by walking the tallies in the same statement (tallies.walk_sql), so that
it never skips more than one 68-minute bucket's rows."""
from ...model import tallyplan
from ...model.query import ListQuery, Page
from . import listing

DIRECT_OFFSET = 1000     # deeper offsets are found through the tallies
WINDOWS = 4096           # the windows remembered (listing.window_for)


class ListReads:
    """Mixed into PostgresStore, which provides `_fetch` and `_windows` (a dict)."""

    async def list_actions(self, query: ListQuery) -> Page:
        if "object" in query.filters:   # one index range per object, whatever the months
            return _page(await self._fetch(*_flat(listing.object_sql(query))), query.newest_first)
        shape = tallyplan.shape(query)
        if shape is not None and shape.kind is None:
            shape = None     # a long uuid prefix: a short range of the uuid index, counted there
        offset = 0 if query.cursor is not None else query.offset
        if shape is not None and shape.walk and offset > DIRECT_OFFSET:
            return await self._deep_page(query, shape)
        if listing.counted(query):
            shape = None     # action_counts answers: fewer rows than the tallies
        cheap = listing.counted(query) or shape is not None
        key = listing.window_key(query)
        since = listing.window_for(query, self._windows.get(key), cheap)
        rows = None
        if since is not None:
            rows = await self._fetch(*_flat(listing.list_sql(query, since, shape=shape)))
            if sum(r[1] is not None for r in rows) < query.limit:
                rows = None      # the window holds less than a page: the whole table then
        window = listing.end_window(query)
        if rows is None and window is not None:
            rows = await self._fetch(*_flat(listing.list_sql(query, shape=shape, window=window)))
            if sum(r[1] is not None for r in rows) < query.limit:
                rows = None      # fewer than a page started since: the whole table then
        if rows is None:
            rows = await self._fetch(*_flat(listing.list_sql(query, shape=shape)))
        page = _page(rows, query.newest_first)
        if len(page.docs) == query.limit and query.newest_first and query.cursor is None \
                and cheap:
            if len(self._windows) >= WINDOWS:
                self._windows.clear()
            self._windows[key] = (min(r[2] for r in rows if r[1] is not None),
                                  query.offset + query.limit)
        return page

    async def _deep_page(self, query: ListQuery, shape) -> Page:
        """A page at a deep offset, in one statement: the total, the walk down the tallies to
        the 68-minute bucket (or date edge) that holds the offset's row, then the page from that
        bucket's start, skipping only the rows before the row in it (tallies.walk_sql)."""
        return _page(await self._fetch(*_flat(listing.list_sql(query, walk=shape))),
                     query.newest_first)


def _page(rows: list, newest_first: bool) -> Page:
    """A statement's rows (total, doc, start_ts, id) as a Page: one row with a NULL doc when
    the page is empty."""
    total = rows[0][0]
    rows = [r for r in rows if r[1] is not None]
    rows.sort(key=lambda r: (r[2], r[3]), reverse=newest_first)
    return Page(total, [r[1].encode() for r in rows], (rows[-1][2], rows[-1][3]) if rows
                else None)


def _flat(statement: tuple[str, list]) -> list:
    sql, params = statement
    return [sql, *params]
