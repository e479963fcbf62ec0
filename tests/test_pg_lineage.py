"""Two instances on one PostgreSQL database, one adding an edge to the object graph while the
other records an action below it: the action is filed under the new ancestor whichever commits
first (lineage.py's lock), so include_related finds it and `auditd check` finds nothing wrong.

Each test holds one instance's transaction open with a job that waits on an event (the moment
another instance's batch is in flight), lets the other instance write, then lets go. The holding
job is a plain function the writer knows nothing about: the batch takes the graph's lock only
when the job asks for it, which is also how a batch that foresaw too little recovers."""
import asyncio
import calendar
import json

import asyncpg
import pgtools
import pytest

from auditd.config import Config
from auditd.model.actions import new_action
from auditd.model.query import ListQuery
from auditd.store import open_store
from auditd.store.postgres import check, jobs, lifecycle
from auditd.store.postgres.partitions import ensure_partitions

STACK, SERVICE, CONTAINER = ("/api/app/v1/stack/s1/", "/api/app/v1/service/v1/",
                             "/api/app/v1/container/c1/")


@pytest.fixture
async def url():
    pgtools.require_postgres()
    return pgtools.clean_database("pglineage")


async def _held(store, job, *args):
    """Run `job(ctx, *args)` on the store's writer and keep its transaction open: (the task,
    the event that lets it commit, the event set once the job has run)."""
    release, ran = asyncio.Event(), asyncio.Event()

    async def holding(ctx):
        result = await job(ctx, *args)
        ran.set()
        await release.wait()
        return result or (None, [])

    holding.locks_tables = getattr(job, "locks_tables", False)   # (its batch's order of locks)
    task = asyncio.create_task(store._write(holding))
    await asyncio.wait_for(ran.wait(), 30)
    return task, release


async def _while_held(url, store, job, *args, then):
    """Hold `job(ctx, *args)` open on `store`'s writer, start the coroutine `then` (a write
    through the other store), wait until it is done or blocked, then let the job commit."""
    held, release = await _held(store, job, *args)
    try:
        second = asyncio.create_task(then)
        await _waiting_or_done(url, second)
    finally:
        release.set()
    await asyncio.gather(held, second)


async def _waiting_or_done(url, task):
    """Return once `task` is done or its connection waits for a lock (the graph's, or a row the
    open transaction holds): it has gone as far as it can before the other commits."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(3000):
            if task.done():
                return
            if await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND wait_event_type = 'Lock'"):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the second write neither finished nor waited")
    finally:
        await conn.close()


async def _related(store, uri) -> set[str]:
    page = await store.list_actions(ListQuery(None, 100, filters={"object": uri,
                                                                  "include_related": True}))
    assert page.total == len(page.docs)
    return {json.loads(doc)["action"] for doc in page.docs}


async def test_an_action_recorded_while_another_instance_adds_an_edge_above_it(url):
    async with open_store(Config(db=url)) as a, open_store(Config(db=url)) as b:
        await b.record_action(new_action(action="Service Create", user="u", object=SERVICE,
                                         parents=[STACK]))
        await b.record_action(new_action(action="Container Start", user="u", object=CONTAINER,
                                         parents=[SERVICE]))
        # instance a puts the stack under a new root, and has not committed yet
        await _while_held(url, a, jobs.add_edges, [(STACK, "/api/app/v1/root/r1/")],
                          then=b.record_action(new_action(action="Container Stop", user="u",
                                                          object=CONTAINER, parents=[SERVICE])))
        assert await _related(a, "/api/app/v1/root/r1/") == {
            "Service Create", "Container Start", "Container Stop"}
    assert check(url)["problems"] == []


async def test_an_edge_added_while_another_instance_records_an_action_below_it(url):
    async with open_store(Config(db=url)) as a, open_store(Config(db=url)) as b:
        await b.record_action(new_action(action="Container Start", user="u", object=CONTAINER,
                                         parents=[SERVICE]))
        # instance b records one more action on the container, and has not committed yet
        record = new_action(action="Container Stop", user="u", object=CONTAINER,
                            parents=[SERVICE])
        await _while_held(url, b, jobs.insert_action, record,
                          then=a.record_action(new_action(action="Service Move", user="u",
                                                          object=SERVICE, parents=[STACK])))
        assert await _related(a, STACK) == {"Container Start", "Container Stop",
                                            "Service Move"}
    assert check(url)["problems"] == []


async def test_two_instances_growing_one_graph_at_once_file_every_action(url):
    """Both instances record at once: new stacks, services under them and containers under
    those (edges nobody has seen yet beside known ones, in the same batches). Nothing fails
    (no deadlock between the shared and exclusive takers), and every action is filed."""
    async with open_store(Config(db=url)) as a, open_store(Config(db=url)) as b:
        def records(instance):
            for i in range(60):
                stack, service = f"/api/app/v1/stack/s{i % 6}/", f"/api/app/v1/service/v{i % 12}/"
                yield new_action(action=f"{instance} {i}", user="u", namespace=f"ns{i % 3}",
                                 object=f"/api/app/v1/container/{instance}{i}/",
                                 parents=[service, stack] if i % 5 else [service])
        made = await asyncio.gather(*(store.record_action(record) for store, name in
                                      ((a, "a"), (b, "b")) for record in records(name)))
        assert len(made) == 120
        for i in range(6):
            below = {m["action"] for m in made if int(m["action"].split()[1]) % 6 == i}
            assert await _related(b, f"/api/app/v1/stack/s{i}/") == below
    assert check(url)["problems"] == []


@pytest.mark.parametrize("whole_month", [False, True], ids=["row by row", "month dropped"])
async def test_actions_purged_while_another_instance_adds_an_edge_above_them(url, whole_month):
    """Retention on one instance deletes actions (and their filings) that a new edge on another
    instance is filing under a new ancestor: no filing of a deleted action is left behind."""
    jan_2020 = calendar.timegm((2020, 1, 10, 0, 0, 0))
    async with open_store(Config(db=url)) as a, open_store(Config(db=url)) as b:
        if whole_month:   # a partition of its own, as if the store had run then
            conn = await asyncpg.connect(url)
            await ensure_partitions(conn, now=jan_2020)
            await conn.close()
        for i in range(3):
            await b.record_action(new_action(action=f"Old {i}", user="u", state="Success",
                                             object=CONTAINER, parents=[SERVICE],
                                             start_date=jan_2020 + i, end_date=jan_2020 + 100))
        kept = await b.record_action(new_action(action="Now", user="u", object=CONTAINER,
                                                parents=[SERVICE]))
        await _while_held(url, a, jobs.add_edges, [(SERVICE, STACK)],
                          then=b.purge(jan_2020 + 1000))
        assert await _related(a, STACK) == {kept["action"]}
    assert check(url)["problems"] == []


@pytest.mark.parametrize("racing", [False, True], ids=["after", "during"])
async def test_a_reset_on_one_instance_leaves_the_other_no_stale_object(url, racing, caplog):
    """The other instance's writer remembers object ids and edges; a reset removes them all.
    Its next record must make the object and the edge again, not file the action under an id
    that no longer exists (which no object filter would find), also when it was sent while the
    reset was in flight. And the reset must not lock out its own instance's change-log reader
    (which read the other's record meanwhile): that stalled both until a statement timed out."""
    async with open_store(Config(db=url)) as a, open_store(Config(db=url)) as b:
        await b.record_action(new_action(action="Container Start", user="u", object=CONTAINER,
                                         parents=[SERVICE]))
        again = b.record_action(new_action(action="Container Stop", user="u", object=CONTAINER,
                                           parents=[SERVICE]))
        if racing:
            await _while_held(url, a, lifecycle.reset, then=again)
        else:
            await a.reset()
            await again
        for store in (a, b):
            assert await _related(store, SERVICE) == {"Container Stop"}
            assert await _related(store, CONTAINER) == {"Container Stop"}
    assert check(url)["problems"] == []
    assert "reading the change log failed" not in caplog.text
