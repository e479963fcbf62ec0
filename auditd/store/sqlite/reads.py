"""The SQLite store's list reads (interface: `list_actions`): the planner's tallied shapes in one
snapshot on the loop's own connection, or on a worker thread when their edges or deep offsets
read many rows; the other shapes as one statement (listing.py), inline when bounded, else on the
reader pool. An object filter's statement costs what its objects' actions are, which one busy
object can make millions: it runs inline within a budget of SQLite steps, and on the pool once
it has run past it."""
import asyncio
import logging
import sqlite3

from ...model.query import ListQuery, Page
from ...model.uris import normalize_object_uri
from ..pagecache import query_key
from . import lineage, listing, planner, tallies
from .database import in_snapshot, unavailable

log = logging.getLogger("auditd.store")


_PLANS: dict = {}
INLINE_STEPS = 50_000    # SQLite VM steps an object filter may take on the loop (1-5 ms)
STEP_CHECK = 1_000       # steps between two looks at the budget
BUSY_ENTRIES = 4096
WALK_ENTRIES = 1024      # object graph walks remembered


def _planned(query: ListQuery, key):
    """(planner.plan, planner.single) of a query without an object filter, remembered per query
    (`key`: pagecache.query_key; None, not remembered): pollers ask the same one again and
    again, and both are pure functions of it."""
    found = _PLANS.get(key) if key is not None else None
    if found is None:
        tallied = planner.plan(query, None)
        found = (tallied, planner.single(tallied, query) if tallied is not None else None)
        if key is not None:
            if len(_PLANS) >= 1024:
                _PLANS.clear()
            _PLANS[key] = found
    return found


def _fetch(conn, sql: str, params):
    return conn.execute(sql, params).fetchall()


def _related_ids(target: int):
    return lambda rows: listing.ObjectIds((row[0] for row in rows), ("related ids", target))


class ListReads:
    """Mixed into SQLiteStore, which provides `_inline`, `_read_inline`, `_read`, `_cache`,
    `_cache_check`, `_remember`, `_write`, `_writer`, `_splitting` (a dict),
    `_busy_objects` (a set), `_walks` (a dict), `_pages` (a PageCache) and (TreeReads)
    `_in_snapshot`."""

    async def list_actions(self, query: ListQuery) -> Page:
        """One page of Action JSON and the total count, read in one snapshot; a repeated query
        is answered from memory until the database changes (pagecache.py): `data_version` is
        read first, so whatever was committed before the request is in its answer."""
        version, key = self._cache_check(now=True), query_key(query)
        pages = self._pages
        page = pages.get(version, key)
        if page is None:
            page = await self._list_actions(query, key)
            pages.put(version, key, page)   # unless a newer version was seen meanwhile
        return page

    async def _list_actions(self, query: ListQuery, key) -> Page:
        object_ids = None
        if "object" in query.filters:
            object_ids = await self._object_ids(
                query.filters["object"], query.filters.get("include_related", False),
                set(query.filters) <= {"object", "include_related"})
            if not object_ids:
                return Page(0, [], None)
            if not isinstance(object_ids, listing.ObjectIds):   # (X, X and its ancestors)
                return listing.joined_page(*await self._related(query, *object_ids))
        tallied, one = _planned(query, key) if object_ids is None else (None, None)
        if one is not None:
            row = self._read_inline(*one)[0]
            return listing.joined_page(row[0], row[1:])
        if tallied is not None:
            try:
                total, row, wish = self._inline_snapshot(planner.run, tallied, query, True)
            except planner.TooDeep:   # a long edge or skip: on a worker thread
                total, row, wish = await self._in_snapshot(planner.run, tallied, query)
            if wish is not None:
                self._split(wish)
            return listing.joined_page(total, row)
        sql, params = listing.list_sql(query, object_ids)
        rows = None
        if listing.is_bounded(query, object_ids):
            rows = (self._read_inline(sql, params) if object_ids is None
                    else self._within_budget(object_ids.key, _fetch, sql, params))
        if rows is None:
            rows = await self._read(sql, params)
        return listing.joined_page(rows[0][0], rows[0][1:])

    def _within_budget(self, key: tuple, fn, *args):
        """`fn(conn, *args)` on the loop's own connection, or None to run it off the loop: for an
        object filter's reads, whose cost is the objects' actions. Most objects have a few, but
        one that a producer touches all day has millions, and counting them is not bounded
        (200,000 took 45-165 ms). SQLite interrupts `fn` after INLINE_STEPS steps, and the reads
        `key` names (its objects) go off the loop from then on (a purge may make them quiet
        again; they are still read right, only a thread hop slower)."""
        busy = self._busy_objects
        if key in busy:
            return None
        steps = 0

        def spent():
            nonlocal steps
            steps += STEP_CHECK
            return steps > INLINE_STEPS
        conn = self._inline
        conn.set_progress_handler(spent, STEP_CHECK)
        try:
            return fn(conn, *args)
        except sqlite3.Error as err:
            if steps <= INLINE_STEPS:   # not interrupted by `spent`
                log.error("read failed: %s", err)
                raise unavailable(err, "be read") from None
        finally:
            conn.set_progress_handler(None, STEP_CHECK)
        if conn.in_transaction:         # interrupted in `in_snapshot`, before its COMMIT
            conn.execute("ROLLBACK")
        if len(busy) >= BUSY_ENTRIES:
            busy.clear()
        busy.add(key)
        return None

    def _split(self, wish: tuple):
        """Have the writer split a tallies' bucket a deep offset skipped much of (tallies.split),
        once at a time: the next deep offset into it reads one second's rows."""
        splitting = self._splitting
        if wish in splitting:
            return

        async def split():
            try:
                if self._writer is not None:   # else closing: the next start may split it
                    await self._write(tallies.split, *wish)
            except Exception as err:   # noqa: BLE001 - the reads go on the long way
                log.warning("could not split a tallies bucket for deep offsets: %s", err)
            finally:
                del splitting[wish]
        splitting[wish] = asyncio.get_running_loop().create_task(split())

    async def _object_ids(self, uri: str, include_related: bool, alone: bool):
        """The object's id, with its ancestors' and descendants' when related ones are wanted;
        or, when nothing else filters them (`alone`), (its id, it and its ancestors' ids) for
        lineage.py to read them."""
        rows = self._read_inline("SELECT id FROM objects WHERE uri = ?",
                                 (normalize_object_uri(uri),))
        if not rows or not include_related:
            return listing.ObjectIds([rows[0][0]]) if rows else None
        target = rows[0][0]
        if alone:
            up, cyclic = await self._graph_walk("ancestry", target, lineage.ANCESTRY_SQL,
                                                (target, target, target), lineage.ancestry)
            if not cyclic:
                return target, up
        # with other filters, or a cycle in the graph: every related object probed
        return await self._graph_walk("related ids", target, lineage.RELATED_IDS_SQL,
                                      (target, target), _related_ids(target))

    async def _graph_walk(self, kind: str, target: int, sql: str, params: tuple, shape):
        """`shape(rows)` of a walk of the object graph from `target`, remembered until the
        graph changes. Most objects have a few related ones, but a service redeployed for a
        year has 100,000 containers below it, and walking them held the loop for 160 ms: the walk
        runs within the step budget, and past it on the reader pool (from then on directly).
        The shaped value is what is remembered, so a repeated request does not shape it again.

        Remembered until the graph changes (an edge added, a reset: `graph_version`), not until
        any commit: actions recorded on known objects, most of what is written, leave the walk
        as it was. The version is read before the walk, so a walk that saw a newer graph is kept
        under an older version, and the next request walks again. It is itself remembered until
        the database changes (`_cached`; `list_actions` has just looked at data_version), so a
        repeated request runs no statement for it."""
        key = (kind, target)
        graph = self._cached("graph_version", lambda: self._read_inline(
            "SELECT v FROM graph_version")[0][0])
        walks = self._walks
        found = walks.get(key)
        if found is not None and found[0] == graph:
            return found[1]
        rows = self._within_budget(key, _fetch, sql, params)
        if rows is None:
            rows = await self._read(sql, params)
        value = shape(rows)
        if len(walks) >= WALK_ENTRIES:
            walks.clear()
        walks[key] = (graph, value)
        return value

    async def _related(self, query: ListQuery, target: int, up: list):
        """An object's related actions with nothing but paging to filter them (lineage.py)."""
        offset = 0 if query.cursor is not None else query.offset
        args = (lineage.run, target, up, sorted(query.namespaces)
                if query.namespaces is not None else None, query.limit, offset,
                query.newest_first, query.cursor)
        if offset <= listing.INLINE_MAX_OFFSET:   # X's own actions are counted: budgeted
            found = self._within_budget(("related", target), in_snapshot, *args)
            if found is not None:
                return found
        return await self._in_snapshot(*args)

    def _inline_snapshot(self, fn, *args):
        """`fn(conn, *args)` on the loop's own connection, in one read transaction (one
        snapshot): for work the planner bounds."""
        try:
            return in_snapshot(self._inline, fn, *args)
        except sqlite3.Error as err:
            log.error("read failed: %s", err)
            raise unavailable(err, "be read") from None
