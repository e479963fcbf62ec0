"""Every list filter and the combinations people use, on a larger generated history than the
contract suite's: each page and its total_count against a brute-force pass over the same actions,
after state changes, cancels and a purge, at shallow and deep offsets, newest and oldest first.
Both backends run it (SQLite answers these shapes from its tallies, PostgreSQL by counting)."""
import asyncio
import json
import random

import pytest

from auditd.model.actions import new_action
from auditd.model.errors import NotFound
from auditd.model.query import ListQuery

import test_store_contract as contract

backend, store = contract.backend, contract.store     # the contract suite's fixtures: both backends
_matches = contract._matches

BASE = 1_600_000_000
YEAR = 365 * 86400
NAMESPACES = ["ns1", "ns2", "ns3", "ns4"]
USERS = ["alice", "bob", "ci", "dave"]
ACTIONS = ["Service Create", "Service Stop", "Node Deploy", "Stack Terminate"]


def _start(rng) -> int:
    r = rng.random()
    if r < 0.4:                                    # a busy two days: many rows per finest bucket
        return BASE + YEAR + rng.randrange(0, 2 * 86400)
    if r < 0.5:                                    # many in one second
        return BASE + 2 * YEAR
    return BASE + rng.randrange(0, 3 * YEAR)


async def _history(store, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        state = rng.choice(["Pending", "In progress", "Success", "Success", "Failed"])
        start = _start(rng)
        made.append(await store.record_action(new_action(
            action=rng.choice(ACTIONS), user=rng.choice(USERS),
            namespace=rng.choice(NAMESPACES), state=state, start_date=start,
            is_user_action=rng.random() < 0.7,
            **({"end_date": start + rng.randrange(0, 9000)}
               if state in ("Success", "Failed") else {}))))
    for action in rng.sample(made, count // 10):    # some finish or are canceled now
        if action["state"] in ("Pending", "In progress"):
            if rng.random() < 0.5:
                await store.cancel(action["uuid"], None)
            else:
                await store.change_state(action["uuid"], "Failed" if action["state"] == "Pending"
                                         else rng.choice(["Success", "Failed"]), None)
    await store.purge(BASE + YEAR // 2)             # the final ones that ended in the first half year
    return await survivors(store, made)


async def survivors(store, made: list[dict]) -> list[dict]:
    """The actions still there after a purge, as the store has them now (some, not all)."""
    alive = []
    for action in made:
        try:
            alive.append(await store.get_action(action["uuid"], None))
        except NotFound:
            pass
    assert 0 < len(alive) < len(made)
    return alive


def _queries(rng, actions):
    sample = rng.sample(actions, 4)
    lo, hi = sorted(rng.randrange(BASE - 86400, BASE + 3 * YEAR) for _ in range(2))
    burst = BASE + YEAR + rng.randrange(0, 86400)
    ranges = [{"start_date__gte": lo}, {"start_date__lte": hi},
              {"start_date__gte": lo, "start_date__lte": hi},
              {"start_date__gte": burst, "start_date__lte": burst + 5000},
              {"start_date__gte": BASE + 2 * YEAR, "start_date__lte": BASE + 2 * YEAR}]
    ends = [{"end_date__gte": lo}, {"end_date__lte": hi}, {"end_date__gte": lo, "end_date__lte": hi}]
    alone = [{}, {"state": "Success"}, {"state": "Pending"}, {"action": "Node Deploy"},
             {"user": "bob"}, {"is_user_action": True}, {"is_user_action": False},
             {"uuid__startswith": sample[0]["uuid"][:1]}, {"uuid__startswith": sample[1]["uuid"][:2]},
             {"uuid__startswith": sample[2]["uuid"][:3]}, {"uuid": sample[3]["uuid"]}]
    shapes = list(alone)
    # the prefix tallies count three digits: fewer sum a range of them, more count index rows
    shapes += [{"uuid__startswith": sample[2]["uuid"][:3], "state": "Success"},
               {"uuid__startswith": sample[2]["uuid"][:4]}, {"uuid__startswith": "-"}]
    shapes += [dict(q, state=s) for q in alone[3:9] for s in ("Success", "Canceled")]
    shapes += ranges + ends + [dict(r, state="Failed") for r in ranges[:3] + ends]
    shapes += [dict(r, **q) for r in ranges for q in alone[3:7]]
    shapes += [dict(ranges[2], state="Success", action="Service Create"),
               {"action": "Service Stop", "user": "ci"}]
    return shapes


def _expected(actions, namespaces, filters, newest_first):
    found = [a for a in actions if (namespaces is None or a["namespace"] in namespaces)
             and all(_matches(a, n, v) for n, v in filters.items())]
    found.sort(key=lambda a: (a["start_ts"], a["id"]), reverse=newest_first)
    return [a["uuid"] for a in found]


@pytest.mark.parametrize("count,seed", [(400, 1), (3000, 2)])
async def test_every_filter_page_and_total_against_brute_force(store, count, seed):
    actions = await _history(store, count, seed)
    position = {a["uuid"]: (a["start_ts"], a["id"]) for a in actions}
    rng = random.Random(seed)
    for namespaces in (None, frozenset({"ns2"}), frozenset({"ns1", "ns3"})):
        for filters in _queries(rng, actions):
            for newest_first in (True, False):
                expected = _expected(actions, namespaces, filters, newest_first)
                offsets = {0, len(expected), rng.randrange(len(expected) + 1),
                           max(0, len(expected) - 3)}
                for offset in sorted(offsets):
                    page = await store.list_actions(ListQuery(
                        namespaces, 7, offset=offset, newest_first=newest_first,
                        filters=dict(filters)))
                    where = (namespaces, filters, newest_first, offset)
                    assert page.total == len(expected), where
                    assert [json.loads(d)["uuid"] for d in page.docs] == \
                        expected[offset:offset + 7], where
                    shown = expected[offset:offset + 7]     # the next link's cursor:
                    assert page.last == (position[shown[-1]] if shown else None), where


async def test_long_edges_are_counted_off_the_loop_with_the_same_answers(tmp_path, monkeypatch):
    """A date range whose edge lies in a busy hour is counted on a worker thread (the loop's own
    connection serves only bounded reads): the same totals and pages."""
    from auditd.store.pagecache import PageCache
    from auditd.store.sqlite import SQLiteStore, planner
    async with SQLiteStore(str(tmp_path / "edges.db")) as sqlite_store:
        actions = await _history(sqlite_store, 400, 5)
        rng = random.Random(5)
        shapes = [q for q in _queries(rng, actions) if any(k.endswith(("gte", "lte")) for k in q)]
        expected = {}
        for filters in shapes:
            page = await sqlite_store.list_actions(ListQuery(None, 9, filters=dict(filters)))
            expected[str(filters)] = (page.total, page.docs)
        monkeypatch.setattr(planner, "INLINE_EDGE_ROWS", 0)
        sqlite_store._pages = PageCache(budget=0)   # the same queries again: read, not remembered
        off_loop, in_snapshot = [], sqlite_store._in_snapshot

        async def spy(fn, *args):
            off_loop.append(fn)
            return await in_snapshot(fn, *args)
        sqlite_store._in_snapshot = spy
        for filters in shapes:
            page = await sqlite_store.list_actions(ListQuery(None, 9, filters=dict(filters)))
            assert (page.total, page.docs) == expected[str(filters)], filters
            assert page.total == len(_expected(actions, None, filters, True))
        assert off_loop      # those whose edges hold rows went to the worker thread


async def test_an_oldest_first_page_after_an_end_date_is_read_off_the_loop(tmp_path):
    """Oldest first with end_date__gte=T, the walk in time order tests every row that starts
    before T, and only the few that ran across T match: half the table for a T in the middle
    (170 ms at 1M actions, every other request waiting). Such a page is read on a worker thread.
    Once a page's cursor is at T or later, every row from there on matches but the running ones,
    and the page is read on the loop again. Every page, total and cursor as a brute-force pass."""
    from auditd.model import tally
    from auditd.store.sqlite import SQLiteStore
    async with SQLiteStore(str(tmp_path / "ends.db")) as sqlite_store:
        actions = await _history(sqlite_store, 400, 7)
        position = {a["uuid"]: (a["start_ts"], a["id"]) for a in actions}
        ended = sorted(a["end_ts"] for a in actions if a["end_ts"] is not None)
        off_loop, in_snapshot, read = [], sqlite_store._in_snapshot, sqlite_store._read

        async def spy(fn, *args):
            off_loop.append(fn)
            return await in_snapshot(fn, *args)

        async def spy_read(*args):
            off_loop.append(args)
            return await read(*args)
        sqlite_store._in_snapshot, sqlite_store._read = spy, spy_read
        # the shapes the end-date tallies count (namespaces, state), with a bound inside a
        # bucket (its edge counted from rows: planner.run) and one on a bucket's start (no
        # edge: planner.single)
        width = tally.SHIFTS[0]
        shapes = [(names, {"end_date__gte": bound, **state})
                  for bound in (ended[len(ended) // 3], ended[len(ended) // 2] >> width << width)
                  for names in (None, frozenset({"ns2"}), frozenset({"ns1", "ns3"}))
                  for state in ({}, {"state": "Success"})]
        for names, filters in shapes:
            bound = filters["end_date__gte"]
            expected = _expected(actions, names, filters, False)
            assert len(expected) > 10, filters
            cursor, seen, on_loop = None, [], 0
            while True:
                before = len(off_loop)
                page = await sqlite_store.list_actions(ListQuery(
                    names, 5, newest_first=False, filters=dict(filters), cursor=cursor))
                where = (names, filters, cursor)
                assert page.total == len(expected), where
                assert (len(off_loop) > before) == (cursor is None or cursor[0] < bound), \
                    where
                on_loop += len(off_loop) == before
                shown = [json.loads(d)["uuid"] for d in page.docs]
                assert shown == expected[len(seen):len(seen) + 5], where
                assert page.last == (position[shown[-1]] if shown else None), where
                seen += shown
                if not shown:
                    break
                cursor = page.last
            assert seen == expected and on_loop, filters


async def test_a_deep_offset_that_would_skip_many_rows_is_read_off_the_loop(tmp_path,
                                                                            monkeypatch):
    """The tallies find the 68-minute bucket that holds a deep offset's row, but within it the
    rows are skipped one by one, and a burst of records can put a million there (as can a deep
    offset the tallies cannot walk, a uuid prefix's): past INLINE_SKIP rows the page is read on a
    worker thread, not on the loop every request waits for; the same answers."""
    from auditd.store.sqlite import SQLiteStore, planner, reads
    async with SQLiteStore(str(tmp_path / "deep.db")) as sqlite_store:
        actions = await _history(sqlite_store, 3000, 2)    # 10% in one second, 40% in two days
        monkeypatch.setattr(planner, "INLINE_SKIP", 20)
        monkeypatch.setattr(planner, "DIRECT_OFFSET", 50)   # deeper: walked down the tallies
        monkeypatch.setattr(reads, "_PLANS", {})            # plans made with the old bounds
        off_loop, in_snapshot = [], sqlite_store._in_snapshot

        async def spy(fn, *args):
            off_loop.append(fn)
            return await in_snapshot(fn, *args)
        sqlite_store._in_snapshot = spy
        prefix, walked_off = actions[0]["uuid"][:1], 0
        for filters in ({}, {"state": "Success"}, {"is_user_action": True},
                        {"uuid__startswith": prefix}):
            for newest_first in (True, False):
                expected = _expected(actions, None, filters, newest_first)
                for offset in (planner.DIRECT_OFFSET + 1, len(expected) // 2,
                               len(expected) - 5):
                    if offset <= planner.DIRECT_OFFSET:
                        continue
                    before = len(off_loop)
                    page = await sqlite_store.list_actions(ListQuery(
                        None, 7, offset=offset, newest_first=newest_first,
                        filters=dict(filters)))
                    where = (filters, newest_first, offset)
                    assert page.total == len(expected), where
                    assert [json.loads(d)["uuid"] for d in page.docs] == \
                        expected[offset:offset + 7], where
                    if "uuid__startswith" in filters:    # no walk: the whole offset is skipped
                        assert len(off_loop) == before + 1, where
                    else:
                        walked_off += len(off_loop) - before
        assert walked_off      # walks that ended in the busy second or days


def test_a_date_range_splits_into_whole_buckets_and_edges_each_in_one_finest_bucket():
    """tally.split_range: the buckets and edges cover each second of the range once, and each
    edge lies in one 68-minute bucket (its count may come from that bucket's finer tallies)."""
    from auditd.model import tally
    rng = random.Random(3)
    for _ in range(20_000):
        low = rng.randrange(0, 10**8)
        high = low + rng.randrange(0, rng.choice([64, 5000, 10**6, 10**8]))
        edges, ranges = tally.split_range(low, high)
        for a, b in edges:
            assert a < b and a >> tally.SHIFTS[0] == (b - 1) >> tally.SHIFTS[0], (low, high)
        seconds = sum(b - a for a, b in edges)
        for first, last in ranges:
            level = (first + tally.LEVEL_SPAN // 2) // tally.LEVEL_SPAN
            assert tally.bucket(level, 0) <= first <= last, (low, high)
            seconds += (last - first + 1) << tally.shift(level)
        covered = sorted([*edges, *(((f - tally.bucket(lv, 0)) << tally.shift(lv),
                                     (l - tally.bucket(lv, 0) + 1) << tally.shift(lv))
                                    for f, l in ranges
                                    for lv in [(f + tally.LEVEL_SPAN // 2) // tally.LEVEL_SPAN])])
        assert covered[0][0] == low and covered[-1][1] == high + 1, (low, high)
        assert all(x[1] == y[0] for x, y in zip(covered, covered[1:])), (low, high)
        assert seconds == high - low + 1, (low, high)


def _fine_tallies_against_rows(path: str):
    """Every split bucket's finer tallies (levels -1 and -2) against a count of its rows, and
    no finer tally outside a split bucket. Returns how many splits there are."""
    import sqlite3
    from auditd.model import tally
    conn = sqlite3.connect(path)
    try:
        splits = conn.execute("SELECT bucket, kind, key FROM tally_splits").fetchall()
        rows = conn.execute("SELECT namespace, action, user, is_user_action, state, start_ts "
                            "FROM actions").fetchall()
        expected = {}
        for ns, action, user, flag, state, ts in rows:
            one = {"namespace": ns, "action": action, "user": user, "is_user_action": flag}
            for kind, key in tally.start_keys(one):
                if (ts >> tally.SHIFTS[0], kind, key) in set(splits):
                    for level in (-1, -2):
                        at = (kind, key, tally.bucket(level, ts), state)
                        expected[at] = expected.get(at, 0) + 1
        found = {}
        columns = dict(zip(tally.STATE_COLUMNS, tally.STATE_COLUMN))
        for kind, key, bucket, *counts in conn.execute(
                f"SELECT kind, key, bucket, {', '.join(tally.STATE_COLUMNS)} FROM tallies "
                "WHERE bucket < 0"):
            for column, n in zip(tally.STATE_COLUMNS, counts):
                if n:
                    found[(kind, key, bucket, columns[column])] = n
        assert found == expected
        return len(splits)
    finally:
        conn.close()


@pytest.mark.parametrize("writer_process", [False, True])
async def test_a_burst_bucket_is_split_and_deep_offsets_then_read_one_second(tmp_path,
                                                                            monkeypatch,
                                                                            writer_process):
    """A burst fills one 68-minute bucket, and a deep offset into it would skip its rows one by
    one: the first such page asks the writer to split the bucket (tallies.split), and from then
    on deep offsets into it walk down to one second's rows, on the loop. The split buckets stay
    exact while actions are recorded into them, change state and are purged, and every page and
    count is the brute-force one before and after. A date range's edges in such a bucket are
    split too, and then counted from the finer tallies, on the loop."""
    from auditd.store.sqlite import SQLiteStore, planner, reads
    path = str(tmp_path / "split.db")
    async with SQLiteStore(path, writer_process=writer_process) as sqlite_store:
        actions = await _history(sqlite_store, 3000, 5)    # 40% in two days, 10% in one second
        monkeypatch.setattr(planner, "INLINE_SKIP", 20)
        monkeypatch.setattr(planner, "SPLIT_SKIP", 10)
        monkeypatch.setattr(planner, "DIRECT_OFFSET", 50)
        monkeypatch.setattr(planner, "INLINE_EDGE_ROWS", 12)   # an edge bucket of 7 is crowded
        monkeypatch.setattr(reads, "_PLANS", {})
        off_loop, in_snapshot = [], sqlite_store._in_snapshot

        async def spy(fn, *args):
            off_loop.append(fn)
            return await in_snapshot(fn, *args)
        sqlite_store._in_snapshot = spy
        # date ranges whose edges lie in the busy days, each bound the second of an action the
        # query matches (a second too many or too few at an edge changes the count)
        def busy(i, **like):
            found = sorted(a["start_ts"] for a in actions
                           if BASE + YEAR < a["start_ts"] < BASE + YEAR + 2 * 86400
                           and all(a[k] == v for k, v in like.items()))
            return found[len(found) * i // 8]
        busy_ranges = [{"start_date__gte": busy(1)},
                       {"start_date__lte": busy(6)},
                       {"start_date__gte": busy(2, state="Success"),
                        "start_date__lte": busy(5, state="Success"), "state": "Success"},
                       {"start_date__gte": busy(3), "start_date__lte": busy(3) + 600},
                       {"start_date__lte": busy(7, action="Service Stop"),
                        "action": "Service Stop"}]

        async def every_deep_page(actions):
            """{page: (read off the loop?, rows before its first in the same second)}"""
            seen = {}
            for namespaces in (None, frozenset({"ns2"}), frozenset({"ns1", "ns3"})):
                for filters in ({}, {"state": "Success"}, {"action": "Node Deploy"},
                                {"user": "bob", "state": "Failed"}, {"is_user_action": True},
                                *busy_ranges):
                    for newest_first in (True, False):
                        expected = _expected(actions, namespaces, filters, newest_first)
                        second = {a["uuid"]: a["start_ts"] for a in actions}
                        for offset in [0, *range(planner.DIRECT_OFFSET + 1, len(expected),
                                                 max(1, len(expected) // 12))]:
                            if offset >= len(expected):
                                continue
                            before = len(off_loop)
                            page = await sqlite_store.list_actions(ListQuery(
                                namespaces, 7, offset=offset, newest_first=newest_first,
                                filters=dict(filters)))
                            where = (namespaces, tuple(filters.items()), newest_first, offset)
                            assert page.total == len(expected), where
                            assert [json.loads(d)["uuid"] for d in page.docs] == \
                                expected[offset:offset + 7], where
                            ts = second[expected[offset]]
                            skip = sum(1 for u in expected[:offset] if second[u] == ts)
                            seen[where] = (len(off_loop) > before, skip)
            await asyncio.gather(*sqlite_store._splitting.values())
            return seen

        def on_the_loop_unless_one_second_is_crowded(seen):
            for where, (off, skip) in seen.items():
                assert off == (skip > planner.INLINE_SKIP), (where, skip)

        assert _fine_tallies_against_rows(path) == 0
        first = await every_deep_page(actions)
        splits = _fine_tallies_against_rows(path)
        assert splits
        again = await every_deep_page(actions)      # the same pages, the buckets split now
        on_the_loop_unless_one_second_is_crowded(again)
        assert sum(off for off, _ in first.values()) > sum(off for off, _ in again.values())
        # more into the busy days, some of them finishing, some purged: the splits follow
        rng, made = random.Random(6), list(actions)
        for _ in range(300):
            start = BASE + YEAR + rng.randrange(0, 2 * 86400)
            made.append(await sqlite_store.record_action(new_action(
                action=rng.choice(ACTIONS), user=rng.choice(USERS),
                namespace=rng.choice(NAMESPACES), state="In progress", start_date=start,
                is_user_action=rng.random() < 0.7)))
            if rng.random() < 0.5:
                await sqlite_store.change_state(made[-1]["uuid"], "Success", None)
        await sqlite_store.purge(BASE + YEAR + 86400)
        _fine_tallies_against_rows(path)
        actions = await survivors(sqlite_store, made)
        await every_deep_page(actions)
        assert _fine_tallies_against_rows(path) >= splits
        on_the_loop_unless_one_second_is_crowded(await every_deep_page(actions))


async def test_one_uuid_is_read_on_the_loop_whatever_else_filters_it(tmp_path):
    """A uuid matches at most one action: the loop's own connection answers it (the reader pool
    costs a thread hop, more than the statement), with any other filter beside it."""
    from auditd.store.sqlite import SQLiteStore
    async with SQLiteStore(str(tmp_path / "uuid.db")) as sqlite_store:
        actions = await _history(sqlite_store, 60, 7)

        async def no_pool(*args):
            raise AssertionError("a uuid query went to the reader pool")
        sqlite_store._read = no_pool
        one = actions[17]
        for namespaces in (None, frozenset({one["namespace"]}), frozenset(NAMESPACES)):
            for filters in ({"uuid": one["uuid"]}, {"uuid": one["uuid"], "state": one["state"]},
                            {"uuid": one["uuid"], "action": one["action"], "user": one["user"]},
                            {"uuid": one["uuid"], "state": "Canceling"}):
                page = await sqlite_store.list_actions(ListQuery(namespaces, 25,
                                                                 filters=dict(filters)))
                expected = _expected(actions, namespaces, filters, True)
                assert page.total == len(expected)
                assert [json.loads(d)["uuid"] for d in page.docs] == expected
