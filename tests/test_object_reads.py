"""An object filter reads what its objects' actions are: most objects have a few, but one that a
producer touches all day has millions, and counting them held the event loop (200,000 actions:
45-165 ms a request, every other request waiting). On SQLite such a statement runs on the loop
within a budget of SQLite steps and, once past it, on the reader pool from then on: the same
pages and totals either way."""
import asyncio
import json
import random

from auditd.model.actions import new_action
from auditd.model.query import ListQuery

from test_filters import _expected

BUSY = "/api/app/v1/ns1/service/busy/"
QUIET = "/api/app/v1/ns1/service/quiet/"
STACK = "/api/app/v1/ns1/stack/shop/"     # both services' parent


async def _recorded(store) -> list[dict]:
    rng = random.Random(3)
    records = []
    for i in range(3000):                  # 2,900 on BUSY, 100 on QUIET, 60 on STACK
        state = rng.choice(["Pending", "Success", "Success", "Failed"])
        start = 1_700_000_000 + rng.randrange(0, 86400)
        target = STACK if i % 50 == 1 else QUIET if i % 30 == 0 else BUSY
        records.append(new_action(
            action=rng.choice(["Service Redeploy", "Service Scale"]), user="ci",
            namespace=rng.choice(["ns1", "ns2"]), state=state, start_date=start, object=target,
            parents=[] if target == STACK else [STACK],
            **({"end_date": start + 60} if state != "Pending" else {})))
    made = []
    for i in range(0, len(records), 250):
        made += await asyncio.gather(*(store.record_action(r) for r in records[i:i + 250]))
    return made


def _brute_force(actions, names, filters):
    """_expected, with include_related as the contract has it: the object's actions, its
    ancestors' and its descendants'."""
    filters = dict(filters)
    if not filters.pop("include_related", False):
        return _expected(actions, names, filters, True)
    target = filters.pop("object")
    related = {STACK: {STACK, BUSY, QUIET}, BUSY: {BUSY, STACK}, QUIET: {QUIET, STACK}}[target]
    return [u for u in _expected(actions, names, filters, True)
            if next(a for a in actions if a["uuid"] == u)["object"] in related]


async def test_a_busy_objects_page_is_read_off_the_loop_with_the_same_answers(tmp_path,
                                                                              monkeypatch):
    from auditd.store.pagecache import PageCache
    from auditd.store.sqlite import SQLiteStore, reads
    # 10,000 steps: BUSY's statements take 35,000-43,000, QUIET's 1,400-1,600, and STACK's
    # related ones BUSY's, but for include_related alone (its rows below it are counted)
    monkeypatch.setattr(reads, "INLINE_STEPS", 10_000)
    async with SQLiteStore(str(tmp_path / "objects.db")) as store:
        actions = await _recorded(store)
        store._pages = PageCache(budget=0)   # the second round is read again, not remembered
        off_loop, read, in_snapshot = [], store._read, store._in_snapshot

        async def spy_read(*args):        # a statement on the reader pool
            off_loop.append(args)
            return await read(*args)

        async def spy_snapshot(*args):    # lineage.py's reads on a worker thread
            off_loop.append(args)
            return await in_snapshot(*args)
        store._read, store._in_snapshot = spy_read, spy_snapshot
        extras = [{}, {"state": "Failed"}, {"action": "Service Scale"},
                  {"start_date__gte": 1_700_040_000}, {"include_related": True, "state": "Failed"},
                  {"include_related": True}]    # alone: counted by lineage.py, BUSY's own too
        for round_ in range(2):           # the second time, BUSY is known to be busy
            for target in (BUSY, QUIET, STACK):
                for extra in extras:
                    for names in (None, frozenset({"ns1"})):
                        filters = {"object": target, **extra}
                        expected = _brute_force(actions, names, filters)
                        before = len(off_loop)
                        page = await store.list_actions(ListQuery(names, 7, filters=filters))
                        where = (round_, names, filters)
                        assert page.total == len(expected) and expected, where
                        assert [json.loads(d)["uuid"] for d in page.docs] == expected[:7], where
                        busy = target == BUSY or target == STACK and len(extra) == 2
                        assert (len(off_loop) > before) == busy, where


SERVICE = "/api/app/v1/ns1/service/redeployed/"
CONTAINER = "/api/app/v1/ns1/container/c{}/"


async def test_a_big_graph_is_walked_off_the_loop_and_its_answers_stay_exact(tmp_path,
                                                                             monkeypatch):
    """A service redeployed for a year has 100,000 containers below it: finding its related
    objects walked them all on the loop (160 ms, again after every commit). Alone, its related
    actions need only its ancestors; with another filter the walk runs within the budget, past
    it on the reader pool, and its answer is remembered while the graph stays as it was."""
    from auditd.store.sqlite import SQLiteStore, lineage, reads
    monkeypatch.setattr(reads, "INLINE_STEPS", 5_000)    # walking 1,200 containers: ~25,000
    rng = random.Random(5)
    async with SQLiteStore(str(tmp_path / "graph.db")) as store:
        records = [new_action(action="Service Redeploy", user="ci", namespace="ns1",
                              state=rng.choice(["Success", "Failed"]), object=SERVICE,
                              parents=[STACK], start_date=1_700_000_000 + i)
                   for i in range(40)]
        records += [new_action(action="Container Start", user="ci", namespace="ns1",
                               state=rng.choice(["Success", "Failed"]), object=CONTAINER.format(i),
                               parents=[SERVICE], start_date=1_700_000_100 + i)
                    for i in range(1200)]
        actions = []
        for i in range(0, len(records), 200):
            actions += await asyncio.gather(*(store.record_action(r) for r in records[i:i + 200]))
        walks, read, racing = [], store._read, []

        async def spy_read(sql, params=()):
            walks.append(sql)
            rows = await read(sql, params)
            if sql == lineage.RELATED_IDS_SQL and racing:   # a commit lands during the walk,
                actions.append(await store.record_action(racing.pop()))
                await store.authenticate("someone", "key")  # and another request reads after it
            return rows
        store._read = spy_read

        async def listed(filters):
            page = await store.list_actions(ListQuery(None, 9, filters=filters))
            expected = _expected([a for a in actions if a["object"] != STACK], None,
                                 {k: v for k, v in filters.items()
                                  if k not in ("object", "include_related")}, True)
            assert page.total == len(expected) and expected, filters
            assert [json.loads(d)["uuid"] for d in page.docs] == expected[:9], filters

        await listed({"object": SERVICE, "include_related": True})     # alone: no walk down
        assert lineage.RELATED_IDS_SQL not in walks and lineage.ANCESTRY_SQL not in walks
        failed = {"object": SERVICE, "include_related": True, "state": "Failed"}
        await listed(failed)                                             # past the budget
        assert walks.count(lineage.RELATED_IDS_SQL) == 1
        await listed(failed)                                             # remembered
        assert walks.count(lineage.RELATED_IDS_SQL) == 1
        actions.append(await store.record_action(new_action(          # a new container
            action="Container Start", user="ci", namespace="ns1", state="Failed",
            object=CONTAINER.format("new"), parents=[SERVICE], start_date=1_700_009_000)))
        await listed(failed)                                  # walked again, and finds it
        assert walks.count(lineage.RELATED_IDS_SQL) == 2
        racing.append(new_action(action="Container Start", user="ci", namespace="ns1",
                                 state="Failed", object=CONTAINER.format("racer"),
                                 parents=[SERVICE], start_date=1_700_009_001))
        actions.append(await store.record_action(new_action(     # the graph changes again
            action="Container Start", user="ci", namespace="ns1", state="Success",
            object=CONTAINER.format("newer"), parents=[SERVICE], start_date=1_700_009_002)))
        await store.list_actions(ListQuery(None, 9, filters=failed))   # walks the graph before
        assert not racing and walks.count(lineage.RELATED_IDS_SQL) == 3  # the racer's commit:
        await listed(failed)                                  # not remembered, walked again
        assert walks.count(lineage.RELATED_IDS_SQL) == 4
        for state in ("Failed", "Success"):   # actions on known objects leave the graph as it was
            actions.append(await store.record_action(new_action(
                action="Service Redeploy", user="ci", namespace="ns1", state=state,
                object=SERVICE, parents=[STACK], start_date=1_700_009_010)))
            actions.append(await store.record_action(new_action(
                action="Container Stop", user="ci", namespace="ns1", state=state,
                object=CONTAINER.format(7), start_date=1_700_009_011)))
            await listed(failed)                              # the new Failed ones are there
            assert walks.count(lineage.RELATED_IDS_SQL) == 4  # and the walk is remembered
        await listed({"object": SERVICE, "include_related": True})


async def test_a_walk_remembered_before_a_reset_is_not_used_after_it(tmp_path):
    """A reset gives object ids again from 1: a walk remembered under an id must not answer for
    the object that id names now (no edge is added after the reset to move the version)."""
    from auditd.store.sqlite import SQLiteStore
    service, stack = "/api/app/v1/u/service/s/", "/api/app/v1/u/stack/k/"

    async def related(store, uri):
        page = await store.list_actions(ListQuery(None, 9, filters={
            "object": uri, "include_related": True, "state": "Success"}))
        return sorted(json.loads(doc)["object"] for doc in page.docs)

    async with SQLiteStore(str(tmp_path / "reset.db")) as store:
        await store.record_action(new_action(action="Service Create", user="u", state="Success",
                                             object=service, parents=[stack]))
        assert await related(store, service) == [service]
        assert await related(store, stack) == [service]
        await store.reset()
        for uri in (service, stack):              # the same objects, no longer related
            await store.record_action(new_action(action="Create", user="u", state="Success",
                                                 object=uri))
        assert await related(store, service) == [service]
        assert await related(store, stack) == [stack]
