"""What the PostgreSQL backend does beyond the contract: monthly partitions and their retention,
group commit, and two stores writing the same actions at once."""
import asyncio
import calendar
import time

import asyncpg
import pytest

import pgtools
from auditd.config import Config
from auditd.model.actions import new_action
from auditd.model.query import ListQuery
from auditd.store import open_store
from auditd.store.postgres import check
from auditd.store.postgres.database import ensure_partitions


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
        await store.change_state(old[2]["uuid"], "Success", None)
        await store.purge(int(time.time()) + 10)
        assert not await conn.fetchval("SELECT to_regclass('actions_2020_01') IS NOT NULL")
        page = await store.list_actions(ListQuery(None, 10))
        assert page.total == 1 and len(page.docs) == 1      # the counters followed the drops
        assert (await store.counts_by_state())["In progress"] == 1
    await conn.close()
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
