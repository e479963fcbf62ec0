"""What the PostgreSQL backend does beyond the contract: monthly partitions and their retention,
group commit, and two stores writing the same actions at once."""
import asyncio
import calendar
import json
import logging
import re
import time
from pathlib import Path

import asyncpg
import pytest

import pgtools
from auditd.config import Config
from auditd.model import tally
from auditd.model.actions import new_action
from auditd.model.document import render_action
from auditd.model.errors import NotFound
from auditd.model.query import ListQuery
from auditd.store import open_store
from auditd.store.postgres import SCHEMA_VERSION, check
from auditd.store.postgres.partitions import create_months, ensure_partitions, months_of


@pytest.fixture
async def url():
    pgtools.require_postgres()
    return pgtools.clean_database("pgstore")


async def _partition_of(url, uuid) -> str:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT tableoid::regclass::text FROM actions WHERE uuid = $1",
                                   uuid)
    finally:
        await conn.close()


# tallies that count nothing: every shard row of a key summing to zero in every state
_EMPTY_TALLIES = ("SELECT count(*) FROM (SELECT kind, key, bucket FROM tallies GROUP BY kind, "
                  "key, bucket HAVING " + " AND ".join(f"sum({c}) = 0"
                                                     for c in tally.STATE_COLUMNS) + ") z")


async def test_actions_go_to_their_months_partition_and_purge_drops_emptied_months(url):
    jan_2020 = calendar.timegm((2020, 1, 10, 0, 0, 0))
    conn = await asyncpg.connect(url)
    async with open_store(Config(db=url)) as store:
        # the month partitions around "now" are made at open; one for January 2020 as if the
        # store had run then
        await ensure_partitions(conn, now=jan_2020)
        now = await store.record_action(new_action(action="Now", user="u"))
        t = time.gmtime()
        assert await _partition_of(url, now["uuid"]) == f"actions_{t.tm_year:04d}_{t.tm_mon:02d}"
        old = [await store.record_action(new_action(
            action="Old", user="u", state=state, start_date=jan_2020 + i,
            **({"end_date": jan_2020 + 100} if state != "In progress" else {})))
            for i, state in enumerate(("Success", "Failed", "In progress"))]
        ancient = await store.record_action(new_action(action="Ancient", user="u",
                                                       state="Success", start_date=100,
                                                       end_date=200))
        assert {await _partition_of(url, a["uuid"]) for a in old} == {"actions_2020_01"}
        assert await _partition_of(url, ancient["uuid"]) == "actions_default"
        for action in (*old, ancient):
            await store.append_logs(action["uuid"], [(1, None, "x")] * 3, None)
        cut = jan_2020 + 1000
        # one action of January 2020 is still running: the month stays
        assert await store.purge(cut) == (3, 9)
        assert await conn.fetchval("SELECT to_regclass('actions_2020_01') IS NOT NULL")
        assert await conn.fetchval(_EMPTY_TALLIES) == 0   # the purged took their tallies along
        await store.change_state(old[2]["uuid"], "Success", None)
        await store.purge(int(time.time()) + 10)
        assert not await conn.fetchval("SELECT to_regclass('actions_2020_01') IS NOT NULL")
        assert await conn.fetchval(_EMPTY_TALLIES) == 0   # the dropped month's too
        # what stays keeps its tallies (and check, below, finds them right)
        assert await conn.fetchval("SELECT count(*) FROM tallies") > 0
        page = await store.list_actions(ListQuery(None, 10))
        assert page.total == 1 and len(page.docs) == 1      # the counters followed the drops
        assert (await store.counts_by_state())["In progress"] == 1
    await conn.close()
    assert check(url)["problems"] == []


async def test_a_purge_prunes_tallies_while_another_instance_records_into_them(url):
    """Two instances: one purges old actions, deleting the tallies they leave at zero, while the
    other records more actions into the same tallies (same namespace, action, user and hours).
    No count is lost: every tally still sums to its actions, and the lists count them exactly."""
    def old(i, end):
        return new_action(action="Old", user="u", namespace="ns", state="Success",
                          start_date=100 + i, end_date=end)
    async with open_store(Config(db=url)) as one, open_store(Config(db=url)) as two:
        for i in range(300):
            await one.record_action(old(i, 1_000 + i))         # purged: they ended before 2,000
        kept = [old(i, 5_000 + i) for i in range(300)]

        async def record():
            for batch in range(0, len(kept), 10):
                await asyncio.gather(*(two.record_action(a) for a in kept[batch:batch + 10]))
        removed, _ = await asyncio.gather(one.purge(2_000), record())
        assert removed[0] == 300
        page = await two.list_actions(ListQuery(frozenset({"ns"}), 5, filters={
            "start_date__lte": 10_000}))
        assert page.total == 300
    assert check(url)["problems"] == []


async def test_concurrent_writes_share_commits(url):
    async with open_store(Config(db=url)) as store:
        before = store.commits
        await asyncio.gather(*(store.record_action(new_action(action=f"A{i}", user="u"))
                               for i in range(100)))
        assert store.commits - before <= 5
        async with open_store(Config(db=url, group_commit=False)) as alone:
            before = alone.commits
            await asyncio.gather(*(alone.record_action(new_action(action=f"B{i}", user="u"))
                                   for i in range(20)))
            assert alone.commits - before == 20


async def test_two_stores_appending_to_the_same_actions_number_every_line_once(url):
    async with open_store(Config(db=url)) as one, open_store(Config(db=url)) as two:
        actions = [await one.record_action(new_action(action=f"A{i}", user="u"))
                   for i in range(4)]

        async def append(store, order, tag):
            for round_ in range(10):
                await asyncio.gather(*(store.append_logs(a["uuid"], [(1, None, f"{tag}{round_}")],
                                                         None) for a in order))
        # opposite orders in concurrent batches: row locks taken in opposite orders
        await asyncio.gather(append(one, actions, "one"), append(two, actions[::-1], "two"))
        for action in actions:
            lines = await one.read_logs(action["id"], 0, 100)
            assert [line[0] for line in lines] == list(range(1, 21))
            assert sorted(line[3] for line in lines) == sorted(
                [f"one{r}" for r in range(10)] + [f"two{r}" for r in range(10)])
            assert (await two.get_action(action["uuid"], None))["log_count"] == 20


async def test_two_stores_writing_at_once_keep_the_tallies_exact_and_check_sees_a_wrong_one(
        url):
    """Each writer connection upserts its own shard of a tally key; the counts sum them."""
    async with open_store(Config(db=url)) as one, open_store(Config(db=url)) as two:
        async def work(store, tag):
            made = await asyncio.gather(*(store.record_action(new_action(
                action=f"{tag} Create", user=tag, state="In progress")) for _ in range(40)))
            await asyncio.gather(*(store.change_state(a["uuid"], "Success", None)
                                   for a in made[::2]))
        await asyncio.gather(work(one, "one"), work(two, "two"))
        for store in (one, two):
            for filters, expected in (({}, 80), ({"state": "Success"}, 40),
                                      ({"action": "two Create"}, 40),
                                      ({"user": "one", "state": "In progress"}, 20),
                                      ({"end_date__gte": 0}, 40)):
                page = await store.list_actions(ListQuery(None, 5, filters=filters))
                assert page.total == expected, filters
    conn = await asyncpg.connect(url)
    try:
        assert check(url)["problems"] == []
        await conn.execute("UPDATE tallies SET success = success + 1 WHERE kind = 'a' AND "
                           "key = 'one Create' AND bucket < 1099511627776 AND success > 0")
    finally:
        await conn.close()
    problems = check(url)["problems"]
    assert len(problems) == 1 and "tallies differ" in problems[0] and "one Create" in problems[0]


async def test_an_objects_actions_come_from_the_key_rows_and_check_sees_one_misfiled(url):
    """An object's actions (and include_related's) are read from action_keys' object index and
    the actions filed under the object (lineage.py), which every write path fills: one record,
    a batch, across months, an edge added later, a cycle; pages by offset and by the next
    link's cursor agree; a key row naming another object, or a filed row missing, is a problem
    for check."""
    stack, service = "/api/app/v1/stack/s1/", "/api/app/v1/service/v1/"
    async with open_store(Config(db=url)) as store:
        made = await asyncio.gather(*(store.record_action(new_action(
            action="Service Create", user="u", namespace=f"ns{i % 2}",
            object=service if i % 3 else stack, parents=[stack] if i % 3 else [],
            start_date=_ts(2020, 1 + i % 5, 1 + i))) for i in range(30)))
        made.append(await store.record_action(new_action(action="Other", user="u",
                                                         object="/api/app/v1/stack/s2/")))
        made.sort(key=lambda a: (a["start_ts"], a["id"]), reverse=True)
        for namespaces in (None, frozenset({"ns1"})):
            for uri, related in ((stack, True), (stack, False), (service, False)):
                want = [a["uuid"] for a in made if (namespaces is None or a["namespace"] in
                        namespaces) and (a["object"] == uri or related and "/v1/service/v1/"
                                         in a["object"])]
                filters = {"object": uri, "include_related": related}
                by_offset = await store.list_actions(ListQuery(namespaces, 100, offset=2,
                                                               filters=dict(filters)))
                assert by_offset.total == len(want) and [
                    json.loads(d)["uuid"] for d in by_offset.docs] == want[2:], filters
                first = await store.list_actions(ListQuery(namespaces, 3, filters=filters))
                rest = await store.list_actions(ListQuery(namespaces, 100, cursor=first.last,
                                                          filters=dict(filters)))
                assert rest.total == len(want)
                assert [json.loads(d)["uuid"] for d in first.docs + rest.docs] == want
        # an edge above actions already there files them under the new ancestor; an edge that
        # closes a cycle (root under the service) counts no action twice
        root = "/api/app/v1/stack/root/"
        made.append(await store.record_action(new_action(action="Stack Move", user="u",
                                                         object=stack, parents=[root])))
        made.append(await store.record_action(new_action(action="Odd", user="u",
                                                         object=root, parents=[service])))
        for uri in (root, stack, service):
            page = await store.list_actions(ListQuery(None, 100, filters={
                "object": uri, "include_related": True}))
            assert sorted(json.loads(d)["uuid"] for d in page.docs) == sorted(
                a["uuid"] for a in made if a["action"] != "Other") and page.total == len(made) - 1, uri
    assert check(url)["problems"] == []
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM action_ancestors WHERE ctid = (SELECT ctid FROM "
                           "action_ancestors LIMIT 1)")
        problems = check(url)["problems"]
        assert len(problems) == 1 and "include_related" in problems[0] and \
            "1 missing, 0 that should not be there" in problems[0]
        await conn.execute("UPDATE action_keys SET object_id = object_id + 1 WHERE uuid = $1",
                           made[0]["uuid"])
    finally:
        await conn.close()
    problems = check(url)["problems"]
    assert "1 action_keys rows name another object or namespace than their action's" in problems


async def _relations(url, pattern: str) -> set[str]:
    """Partitions of actions and action_logs (pg_inherits) and tables (pg_class) like pattern."""
    conn = await asyncpg.connect(url)
    try:
        inherits = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent IN ('actions'::regclass, 'action_logs'::regclass) "
            "AND c.relname LIKE $1", pattern)
        classes = await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE $1", pattern)
        return {r[0] for r in inherits} | {r[0] for r in classes}
    finally:
        await conn.close()


def _ts(year, month, day, hour=0) -> int:
    return calendar.timegm((year, month, day, hour, 0, 0))


STACK = "/api/app/v1/stack/s/"


async def test_retention_drops_whole_months_and_deletes_rows_only_in_the_month_it_cuts(
        url, caplog):
    caplog.set_level(logging.INFO, logger="auditd.store")
    conn = await asyncpg.connect(url)
    months = {1: [], 2: [], 3: []}
    async with open_store(Config(db=url)) as store:
        await create_months(conn, months_of([_ts(2019, 12, 1)]
                                            + [_ts(2020, m, 1) for m in months]))
        # December: one action stuck in Pending among many that retention removes
        # (each on a service of one stack: filed under it for include_related)
        december = [await store.record_action(new_action(
            action="Old", user="u", namespace="acme", state=state, start_date=_ts(2019, 12, day),
            end_date=_ts(2019, 12, day, 1), object=f"/api/app/v1/service/d{day}/",
            parents=[STACK])) for day, state in
            enumerate(["Success"] * 6 + ["Pending"] + ["Failed"] * 3, start=1)]
        stuck = december[6]
        for action in december[5:8]:
            await store.append_logs(action["uuid"], [(1, None, "y")] * 2, None)
        for month, made in months.items():
            for day in range(1, 29, 3):
                made.append(await store.record_action(new_action(
                    action=f"M{month}D{day}", user="u", namespace=("acme", "bob")[day % 2],
                    state=("Success", "Failed", "Canceled")[day % 3],
                    start_date=_ts(2020, month, day), end_date=_ts(2020, month, day, 5),
                    object=f"/api/app/v1/service/m{month}/", parents=[STACK])))
        running = await store.record_action(new_action(action="Still", user="u",
                                                       start_date=_ts(2020, 3, 20)))
        for action in months[1][:4] + months[2][:4]:
            await store.append_logs(action["uuid"], [(1, None, "x")] * 5, None)
        assert await _relations(url, "action%_2020_0_") == {
            f"{table}_2020_0{m}" for table in ("actions", "action_logs") for m in months}
        before = await store.counts_by_state()

        cut = _ts(2020, 2, 11)     # cuts February: January goes whole
        assert await store.count_purgeable(cut) == (9 + len(months[1]) + 4, 4 + 40)
        assert await store.purge(cut) == (9 + len(months[1]) + 4, 4 + 40)
        # December was emptied at once but for the stuck action and its lines
        assert "retention emptied the partitions of 2019_12 at once but for 1 actions that " \
            "stay: 9 actions, 4 log lines removed" in caplog.text
        assert await _relations(url, "action%_2019_12") == {"actions_2019_12",
                                                             "action_logs_2019_12"}
        assert [r[0] for r in await conn.fetch("SELECT uuid FROM actions_2019_12")] == \
            [stuck["uuid"]]
        assert (await store.get_action(stuck["uuid"], None))["log_count"] == 2
        assert len(await store.read_logs(stuck["id"], 0, 10)) == 2
        assert await _relations(url, "action%_2020_01") == set()
        # dropped whole, not emptied row by row first
        assert "retention dropped the partitions of 2020_01: 10 actions, 20 log lines" in \
            caplog.text
        assert "2020_02:" not in caplog.text
        assert await _relations(url, "action%_2020_0_") == {
            f"{table}_2020_0{m}" for table in ("actions", "action_logs") for m in (2, 3)}
        kept = [stuck] + months[2][4:] + months[3]
        page = await store.list_actions(ListQuery(None, 100, newest_first=False))
        assert page.total == len(kept) + 1
        assert [json.loads(d)["uuid"] for d in page.docs] == \
            [a["uuid"] for a in [stuck] + months[2][4:] + months[3][:7] + [running]
             + months[3][7:]]
        after = await store.counts_by_state()
        gone = december[:6] + december[7:] + months[1] + months[2][:4]
        for state in before:
            assert after[state] == before[state] - sum(a["state"] == state for a in gone)
        for namespace in ("acme", "bob"):
            ns_page = await store.list_actions(ListQuery(frozenset({namespace}), 100))
            assert ns_page.total == sum(a["namespace"] == namespace for a in kept)
        related = await store.list_actions(ListQuery(None, 100, filters={
            "object": STACK, "include_related": True}))
        assert sorted(json.loads(d)["uuid"] for d in related.docs) == \
            sorted(a["uuid"] for a in kept) and related.total == len(kept)
        for action in gone:
            with pytest.raises(NotFound):
                await store.get_action(action["uuid"], None)
            assert await store.read_logs(action["id"], 0, 10) == []
        assert await conn.fetchval("SELECT count(*) FROM action_keys") == len(kept) + 1
        assert await conn.fetchval("SELECT count(*) FROM action_logs") == 2     # the stuck's
        # February goes whole; March stays while one of its actions runs; December as it was
        assert await store.purge(_ts(2020, 4, 1)) == (len(months[2]) - 4 + len(months[3]), 0)
        assert await _relations(url, "actions_2019_1_") == {"actions_2019_12"}
        assert await _relations(url, "actions_2020_0_") == {"actions_2020_03"}
        assert [json.loads(d)["uuid"] for d in
                (await store.list_actions(ListQuery(None, 10))).docs] == \
            [running["uuid"], stuck["uuid"]]
    await conn.close()
    assert check(url)["problems"] == []


async def test_a_version_1_database_gets_its_log_lines_partitioned_like_their_actions():
    pgtools.require_postgres()
    url = pgtools.create_database("v1")
    try:
        conn = await asyncpg.connect(url)
        await conn.execute((Path(__file__).parent / "vectors" / "postgres-schema-v1.sql")
                           .read_text())
        await conn.execute("INSERT INTO schema_version VALUES (1)")
        name, low, high = months_of([_ts(2020, 1, 1)])[0]
        await conn.execute(f"CREATE TABLE {name} PARTITION OF actions FOR VALUES FROM ({low}) "
                           f"TO ({high})")
        made = []
        stack = await conn.fetchval("INSERT INTO objects (uri) VALUES ('/api/app/v1/stack/s/') "
                                    "RETURNING id")
        for n, start in enumerate((_ts(2020, 1, 5), 100)):     # a month's, and the default's
            action = dict(new_action(action=f"A{n}", user="u", start_date=start), id=n + 1,
                          object_id=None if n else stack, log_count=3, is_user_action=1,
                          cancelable=1, retriable=1)
            del action["parents"]
            action["doc"] = render_action(action)
            columns = [c for c in action]
            await conn.execute(
                f"INSERT INTO actions ({', '.join(chr(34) + c + chr(34) for c in columns)}) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                *action.values())
            await conn.execute("INSERT INTO action_keys VALUES ($1, $2, $3)", action["uuid"],
                               action["id"], start)
            await conn.executemany("INSERT INTO action_logs VALUES ($1, $2, $3, $4, $5)",
                                   [(action["id"], seq, seq, None, f"line {seq}")
                                    for seq in (1, 2, 3)])
            made.append(action)
        await conn.close()
        async with open_store(Config(db=url)) as store:
            assert store.schema_version == SCHEMA_VERSION
            # the object's actions are found through action_keys, filled by the migration
            assert [json.loads(d)["uuid"] for d in (await store.list_actions(ListQuery(
                None, 10, filters={"object": "/api/app/v1/stack/s/"}))).docs] == \
                [made[0]["uuid"]]
            for action, partition in zip(made, ("action_logs_2020_01", "action_logs_default")):
                assert await store.read_logs(action["id"], 1, 10) == [
                    (2, 2, None, "line 2"), (3, 3, None, "line 3")]
                await store.append_logs(action["uuid"], [(9, "stdout", "more")], None)
                assert (await store.get_action(action["uuid"], None))["log_count"] == 4
                conn = await asyncpg.connect(url)
                assert {r[0] for r in await conn.fetch(
                    "SELECT tableoid::regclass::text FROM action_logs WHERE action_id = $1",
                    action["id"])} == {partition}
                await conn.close()
        assert check(url)["problems"] == []
        # the migrated database has the indexes and functions a new one gets (the filters need
        # them; the functions' settings keep them on their indexes)
        fresh = pgtools.create_database("fresh")
        try:
            async with open_store(Config(db=fresh)):
                pass
            assert await _index_definitions(url) == await _index_definitions(fresh)
        finally:
            pgtools.drop_database(fresh)
    finally:
        pgtools.drop_database(url)


async def _index_definitions(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        return {r[0] for r in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename IN "
            "('actions', 'action_keys', 'action_logs', 'action_counts')")} | {
            r[0] for r in await conn.fetch(
                "SELECT pg_get_functiondef(oid) FROM pg_proc WHERE pronamespace = "
                "current_schema()::regnamespace")}
    finally:
        await conn.close()


async def test_pages_looked_for_in_the_newest_month_first_are_the_pages_of_the_whole_table(
        url, monkeypatch):
    """A list page is first looked for in a window of recent months (from the cursor's month,
    or from where the same query's latest page at least as deep ended), with or without filters
    the tallies count: pages a window cannot fill come from the whole table, so every page is
    the same."""
    from auditd.store.postgres import PostgresStore
    windowed = []
    real = PostgresStore._fetch

    async def spy(self, sql, *params):
        if re.search(r"start_ts >= \d{9}", sql):      # a window: a constant, not a $n
            windowed.append(sql)
        return await real(self, sql, *params)

    monkeypatch.setattr(PostgresStore, "_fetch", spy)
    async with open_store(Config(db=url)) as store:
        conn = await asyncpg.connect(url)
        await create_months(conn, months_of([_ts(2020, m, 1) for m in (1, 2, 3)]))
        await conn.close()
        made = []
        for month, count in ((1, 30), (2, 3), (3, 4)):
            for i in range(count):
                made.append(await store.record_action(new_action(
                    action=f"M{month}", user=("alice", "bob")[i % 2], state="Success",
                    start_date=_ts(2020, month, 1 + i % 5), end_date=_ts(2020, month, 9))))
        await _pages_are_right(store, made)
        # a filtered page (counted by the tallies) is looked for in the window the second time
        digits = [a["uuid"][0] for a in made]
        query = ListQuery(None, 2, filters={"uuid__startswith": max(digits, key=digits.count)})
        windowed.clear()
        store._windows.clear()      # nothing remembered: the first page is the whole table's
        assert (await store.list_actions(query)).docs == (await store.list_actions(query)).docs
        assert len(windowed) == 1 and "uuid" in windowed[0]
        # newer rows than the windows remembered, and older ones gone: still the same pages
        made.append(await store.record_action(new_action(action="Now", user="alice")))
        assert await store.purge(_ts(2020, 3, 1)) == (33, 0)
        await _pages_are_right(store, [a for a in made if a["start_ts"] >= _ts(2020, 3, 1)])


async def _pages_are_right(store, made):
    newest_first = sorted(made, key=lambda a: (a["start_ts"], a["id"]), reverse=True)
    wheres = [({}, lambda a: True), ({"action": "M1"}, lambda a: a["action"] == "M1")]
    for digit in "0123456789abcdef":
        wheres.append(({"uuid__startswith": digit}, lambda a, d=digit: a["uuid"][0] == d))
    for namespaces in (None, frozenset({"alice"}), frozenset({"alice", "bob"})):
        for filters, test in wheres:
            wanted = [a["uuid"] for a in newest_first
                      if (namespaces is None or a["namespace"] in namespaces) and test(a)]
            for limit in (1, 3, 4, 5, 25):
                for offset in (0, 2, 6, 1, 0):   # deeper, then shallower than a window holds
                    page = await store.list_actions(ListQuery(namespaces, limit, offset=offset,
                                                              filters=filters))
                    assert page.total == len(wanted)
                    assert [json.loads(d)["uuid"] for d in page.docs] == \
                        wanted[offset:offset + limit], (namespaces, filters, limit, offset)
                seen, cursor = [], None
                while True:
                    page = await store.list_actions(ListQuery(namespaces, limit, cursor=cursor,
                                                              filters=filters))
                    assert page.total == len(wanted)
                    seen += [json.loads(d)["uuid"] for d in page.docs]
                    if len(page.docs) < limit:
                        break
                    cursor = page.last
                assert seen == wanted, (namespaces, filters, limit)


async def test_a_deep_offset_walks_the_tallies_and_skips_one_hours_rows_at_most(url,
                                                                               monkeypatch):
    from auditd.store.postgres import PostgresStore
    skips = []
    real = PostgresStore._fetch

    async def spy(self, sql, *params):
        rows = await real(self, sql, *params)
        if "walk_found" in sql:     # the deep page's statement: its fifth column is the skip
            skips.append(rows[0][4])
        return rows
    monkeypatch.setattr(PostgresStore, "_fetch", spy)
    base = _ts(2020, 1, 1)
    async with open_store(Config(db=url)) as store:
        made = await asyncio.gather(*(store.record_action(new_action(
            action="Service Create" if i % 3 else "Node Deploy", user="u", state="Success",
            start_date=base + i * 600, end_date=base + i * 600 + 5)) for i in range(3000)))
        made.sort(key=lambda a: (a["start_ts"], a["id"]))
        creates = [a for a in made if a["action"] == "Service Create"]
        for filters, expected in (({}, made), ({"action": "Service Create"}, creates),
                                  ({"start_date__gte": base + 7777}, [
                                      a for a in made if a["start_ts"] >= base + 7777])):
            for newest_first in (True, False):
                want = expected[::-1] if newest_first else expected
                for offset in (1500, len(want) - 10, len(want) + 5):
                    skips.clear()
                    page = await store.list_actions(ListQuery(
                        None, 25, offset=offset, newest_first=newest_first, filters=filters))
                    assert page.total == len(want)
                    assert [json.loads(d)["uuid"] for d in page.docs] == \
                        [a["uuid"] for a in want[offset:offset + 25]]
                    # one statement walked; seven actions start in a 68-minute bucket: the page
                    # skips fewer than that (none found past the end)
                    assert len(skips) == 1, (filters, newest_first, offset)
                    if offset < len(want):
                        assert skips[0] < 7, (filters, newest_first, offset, skips)
                    else:
                        assert skips[0] is None


async def test_the_object_graph_is_walked_through_its_indexes_on_a_database_without_statistics(
        url):
    """A store opened on an empty database plans the graph's recursive walks (lineage.py) while
    object_parents is empty, and keeps those plans on its connections: with autovacuum off (or
    before it analyzes), a plan that scans the whole table would stay, and every record would
    read every edge (`auditd migrate` of a million actions slowed to 90 a second). Recording
    actions with new objects and edges scans no table of the graph."""
    async with open_store(Config(db=url)):
        pass
    before = await _table_scans(url)
    async with open_store(Config(db=url)) as store:
        for i in range(300):      # 300 services in 30 stacks, each recorded twice
            for _ in range(2):
                await store.record_action(new_action(
                    action="Service Start", user="alice", object=f"/api/app/v1/service/s{i}/",
                    parents=[f"/api/app/v1/stack/t{i % 30}/"]))
    after = await _table_scans(url)
    assert {name: after[name] - before[name] for name in
            ("object_parents", "action_ancestors", "action_keys", "objects")} == \
        {"object_parents": 0, "action_ancestors": 0, "action_keys": 0, "objects": 0}
    async with open_store(Config(db=url)) as store:
        page = await store.list_actions(ListQuery(None, 5, filters={
            "object": "/api/app/v1/stack/t7/", "include_related": True}))
        assert page.total == 20


async def _table_scans(url) -> dict:
    """Each table's sequential scans so far (the store's connections closed: theirs counted)."""
    conn = await asyncpg.connect(url)
    try:
        return {r[0]: r[1] for r in await conn.fetch(
            "SELECT relname, seq_scan FROM pg_stat_user_tables")}
    finally:
        await conn.close()
