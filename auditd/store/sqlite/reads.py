"""The SQLite store's list reads (interface: `list_actions`): the planner's tallied shapes in one
snapshot on the loop's own connection, or on a worker thread when their edges are long; the
other shapes as one statement (listing.py), inline when bounded, else on the reader pool."""
import logging
import sqlite3

from ...model.query import ListQuery, Page
from ...model.uris import normalize_object_uri
from . import listing, planner
from .database import in_snapshot, unavailable

log = logging.getLogger("auditd.store")


class ListReads:
    """Mixed into SQLiteStore, which provides `_inline`, `_read_inline`, `_read`, `_cached` and
    (TreeReads) `_in_snapshot`."""

    async def list_actions(self, query: ListQuery) -> Page:
        """One page of Action JSON and the total count, read in one snapshot."""
        object_ids = None
        if "object" in query.filters:
            object_ids = self._object_ids(query.filters["object"],
                                          query.filters.get("include_related", False))
            if not object_ids:
                return Page(0, [], None)
        tallied = planner.plan(query, object_ids)
        if tallied is not None:
            if not tallied.edges or \
                    self._inline_snapshot(planner.edge_rows, tallied) <= planner.INLINE_EDGE_ROWS:
                total, rows = self._inline_snapshot(planner.run, tallied, query)
            else:   # a date range's edge in a busy hour: counted on a worker thread
                total, rows = await self._in_snapshot(planner.run, tallied, query)
            rows.sort(key=planner.page_order, reverse=query.newest_first)
            return Page(total, [r[0] for r in rows], rows[-1][1:] if rows else None)
        sql, params = listing.list_sql(query, object_ids)
        if listing.is_bounded(query, object_ids):
            rows = self._read_inline(sql, params)
        else:
            rows = await self._read(sql, params)
        total = next(r[1] for r in rows if r[0] is None)   # the count's row: docs are never NULL
        page = [r for r in rows if r[0] is not None]
        page.sort(key=listing.page_order, reverse=query.newest_first)
        return Page(total, [r[0] for r in page], page[-1][2:] if page else None)

    def _object_ids(self, uri: str, include_related: bool) -> list[int]:
        """The object's id, with its ancestors' and descendants' when related ones are wanted."""
        rows = self._read_inline("SELECT id FROM objects WHERE uri = ?",
                                 (normalize_object_uri(uri),))
        if not rows or not include_related:
            return [rows[0][0]] if rows else []
        return self._cached(("related", rows[0][0]), lambda: [
            r[0] for r in self._read_inline(listing.RELATED_SQL, (rows[0][0], rows[0][0]))])

    def _inline_snapshot(self, fn, *args):
        """`fn(conn, *args)` on the loop's own connection, in one read transaction (one
        snapshot): for work the planner bounds."""
        try:
            return in_snapshot(self._inline, fn, *args)
        except sqlite3.Error as err:
            log.error("read failed: %s", err)
            raise unavailable(err, "be read") from None
