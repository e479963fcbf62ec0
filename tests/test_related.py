"""`object=X&include_related=true` against a brute-force walk of the same object graph: every
page and total_count, newest and oldest first, at several offsets and through the cursor a next
link carries, with namespaces, after parents that arrive after an object's first actions, a cycle
in the graph and a purge. Both backends run it (SQLite reads its action_ancestors table,
PostgreSQL its own, kept by triggers)."""
import json
import random

import pytest

from auditd.model.actions import new_action
from auditd.model.query import ListQuery

import test_store_contract as contract
from test_filters import survivors

backend, store = contract.backend, contract.store     # the contract suite's fixtures: both backends

BASE = 1_600_000_000
STACKS = [f"/api/app/v1/stack/ST{i}/" for i in range(3)]
SERVICES = [f"/api/app/v1/service/SV{i}/" for i in range(8)]
CONTAINERS = [f"/api/app/v1/container/C{i}/" for i in range(24)]


def _closure(start: str, edges: set, forward: bool) -> set:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for child, parent in edges:
            a, b = (child, parent) if forward else (parent, child)
            if a == here and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


async def _graph_history(store, count: int, seed: int):
    """Actions on stacks, services and containers; parents often sent, sometimes not (so a later
    record brings an edge under earlier actions); then a cycle, some state changes and a purge."""
    rng = random.Random(seed)
    parent = {s: rng.choice(STACKS) for s in SERVICES}
    parent.update({c: rng.choice(SERVICES) for c in CONTAINERS})
    edges, made = set(), []
    for i in range(count):
        obj = rng.choice(STACKS + SERVICES + CONTAINERS * 2)
        chain = []
        if rng.random() < 0.6:
            up = obj
            while up in parent:
                up = parent[up]
                chain.append(up)
        if i == count // 2:                  # a cycle: ST2's parent is one of its own services
            obj, chain = STACKS[2], [next(s for s in SERVICES if parent[s] == STACKS[2])]
        for child, par in zip([obj, *chain], chain):
            edges.add((child, par))
        state = rng.choice(["Pending", "Success", "Success", "Failed"])
        start = BASE + rng.randrange(0, 30 * 86400) if rng.random() < 0.8 else BASE
        made.append(await store.record_action(new_action(
            action="Service Start", object=obj, parents=chain, user="alice",
            namespace=rng.choice(["ns1", "ns2"]), state=state, start_date=start,
            **({"end_date": start + 60} if state != "Pending" else {}))))
    for action in rng.sample(made, count // 10):
        if action["state"] == "Pending":
            await store.change_state(action["uuid"], "Failed", None)
    await store.purge(BASE + 5 * 86400)
    return await survivors(store, made), edges


def _expected(actions, edges, target, namespaces, newest_first):
    related = _closure(target, edges, True) | _closure(target, edges, False)
    found = [a for a in actions if a["object"] in related
             and (namespaces is None or a["namespace"] in namespaces)]
    found.sort(key=lambda a: (a["start_ts"], a["id"]), reverse=newest_first)
    return [a["uuid"] for a in found]


@pytest.mark.parametrize("count,seed", [(300, 3), (1200, 4)])
async def test_related_pages_and_totals_against_brute_force(store, count, seed):
    actions, edges = await _graph_history(store, count, seed)
    assert _closure(STACKS[2], edges, True) & _closure(STACKS[2], edges, False) != {STACKS[2]}
    rng = random.Random(seed)
    targets = STACKS + rng.sample(SERVICES, 4) + rng.sample(CONTAINERS, 4)
    for target in targets:
        for namespaces in (None, frozenset({"ns1"})):
            for newest_first in (True, False):
                expected = _expected(actions, edges, target, namespaces, newest_first)
                offsets = {0, 5, len(expected), max(0, len(expected) - 3),
                           rng.randrange(len(expected) + 1)}
                for offset in sorted(offsets):
                    query = ListQuery(namespaces, 7, offset=offset, newest_first=newest_first,
                                      filters={"object": target, "include_related": True})
                    page = await store.list_actions(query)
                    where = (target, namespaces, newest_first, offset)
                    assert page.total == len(expected), where
                    assert [json.loads(d)["uuid"] for d in page.docs] == \
                        expected[offset:offset + 7], where
                    if page.last is None or offset + 7 >= len(expected):
                        continue
                    query.cursor, query.offset = page.last, offset + 7   # what `next` carries
                    following = await store.list_actions(query)
                    assert following.total == len(expected), where
                    assert [json.loads(d)["uuid"] for d in following.docs] == \
                        expected[offset + 7:offset + 14], where


async def test_related_with_another_filter_against_brute_force(store):
    actions, edges = await _graph_history(store, 300, 5)
    by_uuid = {a["uuid"]: a for a in actions}
    prefix = actions[0]["uuid"][:1]
    others = [({"state": state}, lambda a, s=state: a["state"] == s)
              for state in ("Failed", "Success", "Pending")]
    others += [({"start_date__gte": BASE + 15 * 86400},
                lambda a: a["start_ts"] >= BASE + 15 * 86400),
               ({"end_date__lte": BASE + 20 * 86400, "state": "Success"},
                lambda a: a["end_ts"] is not None and a["end_ts"] <= BASE + 20 * 86400
                and a["state"] == "Success"),
               ({"uuid__startswith": prefix}, lambda a: a["uuid"].startswith(prefix)),
               ({"action": "Service Start", "user": "alice"}, lambda a: True),
               ({"action": "Service Stop"}, lambda a: False)]
    for target in STACKS + SERVICES[:3]:
        for namespaces in (None, frozenset({"ns2"})):
            for other, keep in others:
                expected = [u for u in _expected(actions, edges, target, namespaces, True)
                            if keep(by_uuid[u])]
                filters = {"object": target, "include_related": True, **other}
                page = await store.list_actions(ListQuery(namespaces, 50,
                                                          filters=dict(filters)))
                where = (target, namespaces, other)
                assert page.total == len(expected), where
                assert [json.loads(d)["uuid"] for d in page.docs] == expected[:50], where
                if len(expected) > 3:       # the next link's cursor, past the first three
                    first = await store.list_actions(ListQuery(namespaces, 3,
                                                               filters=dict(filters)))
                    rest = await store.list_actions(ListQuery(
                        namespaces, 50, cursor=first.last, filters=dict(filters)))
                    assert [json.loads(d)["uuid"] for d in rest.docs] == expected[3:53], where


async def test_two_deep_chains_joined_relate_everything_below(store):
    """Two chains of 21 objects, then an edge from the top of one to the bottom of the other:
    include_related of the top reaches all 41 objects below it, on both backends. (SQLite's
    walks stopped 32 objects away, but its filing of a new edge joined 32 below with 32 above.)"""
    def uri(chain, k):
        return f"/api/app/v1/{chain}/o{k}/"

    for chain, length in (("a", 21), ("b", 21), ("c", 3)):     # c stays apart
        for k in range(length):
            await store.record_action(new_action(action="Deploy", user="ns", object=uri(chain, k),
                                                 parents=[uri(chain, k - 1)] if k else []))
    await store.record_action(new_action(action="Join", user="ns", object=uri("b", 0),
                                         parents=[uri("a", 20)]))
    joined = {uri(chain, k) for chain in "ab" for k in range(21)}
    for target in (uri("a", 0), uri("b", 5), uri("b", 20)):   # below, ancestors, or both
        # the filing, and the walk of the graph that another filter makes it read
        for filters in ({}, {"state": "In progress"}):
            page = await store.list_actions(ListQuery(None, 100, filters={
                "object": target, "include_related": True, **filters}))
            assert {json.loads(d)["object"] for d in page.docs} == joined, (target, filters)
            assert page.total == len(page.docs) == 21 + 21 + 1, (target, filters)
