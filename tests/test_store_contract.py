"""The store contract (`auditd/store/interface.py`): every backend passes this suite.

It talks to a store only through the interface. A new backend joins by adding its name to
BACKENDS and a branch to `make_config`.
"""
import asyncio
import functools
import json
import random

import pytest

from auditd.config import Config
from auditd.model.access import Principal
from auditd.model.actions import STATES, new_action, retry_record
from auditd.model.document import render_action
from auditd.model.errors import Conflict, InvalidRequest, NotFound, Unavailable
from auditd.model.notes import ActionChanged, ActionsRemoved, LinesAppended
from auditd.model.query import ListQuery
from auditd.store import open_store

import pgtools

# sqlite-process: SQLite with its writer in a process of its own, as `serve` runs it
BACKENDS = ["sqlite", "sqlite-process", "postgres"]
_databases: dict = {}   # (tmp_path, name) -> URL of the PostgreSQL database made for it


def make_config(backend: str, tmp_path, name: str = "contract") -> Config:
    """The same (tmp_path, name) gives the same database; a new one starts empty (for
    PostgreSQL, a database of the session emptied: creating one per test costs a second)."""
    if backend in ("sqlite", "sqlite-process"):
        return Config(db=str(tmp_path / f"{name}.db"))
    if backend == "postgres":
        key = (str(tmp_path), name)
        if key not in _databases:
            _databases[key] = pgtools.clean_database(name)
        return Config(db=_databases[key])
    raise AssertionError(f"no configuration for backend {backend}")


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "postgres":
        pgtools.require_postgres()
    yield request.param
    for key in [k for k in _databases if k[0] == str(tmp_path)]:
        del _databases[key]


@pytest.fixture
async def store(backend, tmp_path):
    async with open_store(make_config(backend, tmp_path),
                          serving=backend == "sqlite-process") as opened:
        opened.notes = []
        opened.on_commit = opened.notes.extend
        yield opened


def uuids(page) -> list[str]:
    return [json.loads(doc)["uuid"] for doc in page.docs]


# ---------------------------------------------------------------------------- users and orgs

async def test_users_keys_and_roles(store):
    key = await store.add_user("alice")
    assert await store.authenticate("alice", key) == Principal("alice", "user",
                                                              frozenset({"alice"}))
    assert await store.authenticate("alice", key + "x") is None
    assert await store.authenticate("nobody", key) is None
    producer_key = await store.add_user("ci", "producer")
    assert (await store.authenticate("ci", producer_key)).namespaces is None
    assert await store.add_user("fixed", "admin", key="known-key-123") == "known-key-123"
    assert (await store.authenticate("fixed", "known-key-123")).role == "admin"
    with pytest.raises(InvalidRequest, match="role must be one of"):
        await store.add_user("bad", "root")
    with pytest.raises(Conflict, match="already exists"):
        await store.add_user("alice")
    assert await store.count_users() == 3


async def test_rotate_and_remove(store):
    old = await store.add_user("bob")
    new = await store.rotate_key("bob")
    assert new != old
    assert await store.authenticate("bob", old) is None
    assert await store.authenticate("bob", new) is not None
    await store.remove_user("bob")
    assert await store.authenticate("bob", new) is None
    for call in (store.rotate_key("bob"), store.remove_user("bob")):
        with pytest.raises(NotFound, match="no user 'bob'"):
            await call


@pytest.mark.parametrize("name", ["", "a:b", "x/y", " padded", "action", "a" * 65])
async def test_names_that_cannot_log_in_or_be_a_namespace_are_refused(store, name):
    with pytest.raises(InvalidRequest, match="name"):
        await store.add_user(name)
    with pytest.raises(InvalidRequest, match="name"):
        await store.add_org(name)
    assert await store.list_users() == [] and await store.list_orgs() == []


async def test_organizations_widen_what_a_user_sees(store):
    key = await store.add_user("carol")
    await store.add_org("acme")
    with pytest.raises(Conflict):
        await store.add_org("carol")          # users and organizations share names
    with pytest.raises(Conflict):
        await store.add_user("acme")
    await store.add_member("acme", "carol")
    await store.add_member("acme", "carol")   # idempotent
    assert (await store.authenticate("carol", key)).namespaces == {"carol", "acme"}
    assert await store.list_orgs() == [{"name": "acme", "members": ["carol"]}]
    users = await store.list_users()
    assert [(u["name"], u["role"], u["orgs"]) for u in users] == [("carol", "user", ["acme"])]
    await store.remove_member("acme", "carol")
    assert (await store.authenticate("carol", key)).namespaces == {"carol"}
    with pytest.raises(NotFound):
        await store.remove_member("acme", "carol")
    with pytest.raises(NotFound):
        await store.add_member("nope", "carol")
    with pytest.raises(NotFound):
        await store.add_member("acme", "nobody")


async def test_accounts_move_between_stores_with_their_key_hashes(store, backend, tmp_path):
    keys = {name: await store.add_user(name, role) for name, role in
            (("zed", "user"), ("ann", "admin"), ("bo", "producer"))}
    await store.add_org("acme")
    await store.add_org("beta")
    await store.add_member("beta", "zed")
    await store.add_member("acme", "zed")
    accounts = await store.export_accounts()
    assert [u["name"] for u in accounts["users"]] == ["ann", "bo", "zed"]
    assert accounts["users"][2]["orgs"] == ["acme", "beta"]
    assert [o["name"] for o in accounts["orgs"]] == ["acme", "beta"]
    assert all(len(u["key_hash"]) == 64 and keys[u["name"]] not in u["key_hash"]
               for u in accounts["users"])
    async with open_store(make_config(backend, tmp_path, "accounts")) as copy:
        assert await copy.import_accounts(accounts) == {"users": 3, "orgs": 2, "memberships": 2}
        assert await copy.import_accounts(accounts) == {"users": 0, "orgs": 0, "memberships": 0}
        assert await copy.export_accounts() == accounts
        for name, key in keys.items():   # the same keys work there
            assert await copy.authenticate(name, key) == await store.authenticate(name, key)


# ---------------------------------------------------------------------------- actions

async def test_record_get_and_the_create_note(store):
    stack, service = "/api/app/v1/stack/s1/", "/api/app/v1/ns/service/w1/"
    action = await store.record_action(new_action(action="Service Create", user="ns",
                                                  object=service, parents=[stack]))
    assert action["doc"] == render_action(action) and action["log_count"] == 0
    assert await store.get_action(action["uuid"].upper(), None) == action
    assert await store.get_action_doc(action["uuid"], frozenset({"ns"})) == action["doc"]
    for call in (store.get_action(action["uuid"], frozenset({"other"})),
                 store.get_action_doc("00000000-0000-4000-8000-000000000000", None)):
        with pytest.raises(NotFound, match="No action with uuid"):
            await call
    assert store.notes == [ActionChanged("create", action, (service, stack))]
    # a later action on the container knows the whole lineage from the graph
    store.notes.clear()
    child = await store.record_action(new_action(action="Container Start", user="ns",
                                                 object="/api/app/v1/container/c1/",
                                                 parents=[service]))
    # ancestors come from the graph, which keeps URIs namespace-free
    assert store.notes[0].lineage == ("/api/app/v1/container/c1/", "/api/app/v1/service/w1/",
                                      stack)
    clash = new_action(action="X", user="ns")
    clash["uuid"] = child["uuid"]
    with pytest.raises(Conflict):
        await store.record_action(clash)


async def test_a_record_may_come_as_a_function_the_store_calls_and_what_it_raises_saves_nothing(
        store):
    # a function of a request's body, run where the store writes (its writer process, pickled)
    made = await store.record_action(functools.partial(new_action, action="Built", user="ns"))
    assert made["action"] == "Built" and await store.get_action(made["uuid"], None) == made
    refused = {"state": "Pending", "retriable": True, "uuid": "0" * 8}    # not final: refused
    calls = [functools.partial(new_action, action=f"Next {i}", user="ns") for i in range(6)]
    calls.insert(3, functools.partial(retry_record, refused, {}))
    # together, as one commit's batch: the refused one fails alone, the others are stored
    answers = await asyncio.gather(*map(store.record_action, calls), return_exceptions=True)
    assert isinstance(answers[3], InvalidRequest) and "cannot be retried" in str(answers[3])
    stored = [a for i, a in enumerate(answers) if i != 3]
    assert [a["action"] for a in stored] == [f"Next {i}" for i in range(6)]
    page = await store.list_actions(ListQuery(None, 100))
    assert page.total == 7 and sorted(uuids(page)) == sorted(a["uuid"] for a in [made, *stored])


async def test_state_moves_follow_the_model(store):
    action = await store.record_action(new_action(action="A", user="u", state="Pending"))
    moved = await store.change_state(action["uuid"], "In progress", None)
    assert moved["state"] == "In progress" and moved["end_ts"] is None
    done = await store.change_state(action["uuid"], "Success", None)
    assert done["end_ts"] is not None and json.loads(done["doc"])["end_date"] is not None
    with pytest.raises(InvalidRequest, match="cannot move from Success to Failed"):
        await store.change_state(action["uuid"], "Failed", None)
    with pytest.raises(NotFound):
        await store.change_state(action["uuid"], "Failed", frozenset({"elsewhere"}))
    assert [n.kind for n in store.notes] == ["create", "update", "update"]
    assert (await store.get_action(action["uuid"], None))["state"] == "Success"


async def test_cancel_and_retry(store):
    pending = await store.record_action(new_action(action="A", user="u", state="Pending"))
    running = await store.record_action(new_action(action="B", user="u"))
    fixed = await store.record_action(new_action(action="C", user="u",
                                                 can_be_canceled=False))
    assert (await store.cancel(pending["uuid"], None))["state"] == "Canceled"
    assert (await store.cancel(running["uuid"], None))["state"] == "Canceling"
    with pytest.raises(InvalidRequest, match="cannot be canceled: it is Canceled"):
        await store.cancel(pending["uuid"], None)
    with pytest.raises(InvalidRequest, match="not cancelable"):
        await store.cancel(fixed["uuid"], None)
    caller = {"user": "bob", "ip": "10.0.0.1", "user_agent": "ua", "location": "here"}
    with pytest.raises(InvalidRequest, match="cannot be retried"):
        await store.retry(running["uuid"], None, caller)
    again = await store.retry(pending["uuid"], frozenset({"u"}), caller)
    assert again["uuid"] != pending["uuid"] and again["state"] == "Pending"
    assert (again["user"], again["namespace"], again["action"]) == ("bob", "u", "A")
    assert (await store.get_action(pending["uuid"], None))["state"] == "Canceled"


async def test_log_lines_are_numbered_and_read_back_in_order(store):
    action = await store.record_action(new_action(action="A", user="u"))
    assert await store.append_logs(action["uuid"], [(1, None, "one"), (2, "stderr", "two")],
                                   None) == 2
    assert await store.append_logs(action["uuid"], [(3, None, "three")], None) == 1
    assert await store.read_logs(action["id"], 0, 10) == [
        (1, 1, None, "one"), (2, 2, "stderr", "two"), (3, 3, None, "three")]
    assert await store.read_logs(action["id"], 1, 1) == [(2, 2, "stderr", "two")]
    assert (await store.get_action(action["uuid"], None))["log_count"] == 3
    assert LinesAppended(action["id"], [(3, 3, None, "three")]) in store.notes
    with pytest.raises(NotFound):
        await store.append_logs(action["uuid"], [(1, None, "x")], frozenset({"other"}))
    await store.change_state(action["uuid"], "Success", None)
    assert await store.append_logs(action["uuid"], [(4, None, "late")], None) == 1


async def test_concurrent_appends_number_lines_and_a_failing_one_changes_nothing(store):
    one, two = [await store.record_action(new_action(action=n, user="u")) for n in ("1", "2")]
    results = await asyncio.gather(
        *(store.append_logs(a["uuid"], [(i, None, f"{a['action']}-{i}")], None)
          for i in range(5) for a in (one, two)),
        store.append_logs("00000000-0000-4000-8000-000000000000", [(1, None, "x")], None),
        store.append_logs(one["uuid"], [(9, None, "hidden")], frozenset({"other"})),
        return_exceptions=True)
    assert [type(r) for r in results if isinstance(r, Exception)] == [NotFound, NotFound]
    for action in (one, two):
        lines = await store.read_logs(action["id"], 0, 10)
        assert [(seq, line) for seq, _, _, line in lines] == [
            (i + 1, f"{action['action']}-{i}") for i in range(5)]


async def test_concurrent_writes_commit_and_a_failing_one_changes_nothing(store):
    first = await store.record_action(new_action(action="A", user="u"))
    clash = new_action(action="B", user="u")
    clash["uuid"] = first["uuid"]
    results = await asyncio.gather(
        *(store.record_action(new_action(action=f"C{i}", user="u")) for i in range(20)),
        store.record_action(clash), return_exceptions=True)
    assert [type(r) for r in results if isinstance(r, Exception)] == [Conflict]
    page = await store.list_actions(ListQuery(None, 100))
    assert page.total == 21 and len(page.docs) == 21


async def test_writes_survive_reopening_and_fail_after_close(backend, tmp_path):
    config = make_config(backend, tmp_path, "reopen")
    async with open_store(config) as store:
        action = await store.record_action(new_action(action="A", user="u"))
    with pytest.raises(Unavailable):
        await store.record_action(new_action(action="B", user="u"))
    async with open_store(config) as store:
        assert (await store.get_action(action["uuid"], None))["doc"] == action["doc"]
        assert store.schema_version is not None


# ---------------------------------------------------------------------------- listing

FILTERED = ["state", "action", "user", "is_user_action", "uuid", "uuid__startswith",
            "start_date__gte", "start_date__lte", "end_date__gte", "end_date__lte"]


def _matches(action: dict, name: str, value) -> bool:
    if name == "uuid":
        return action["uuid"] == value
    if name == "uuid__startswith":
        return action["uuid"].startswith(value)
    if name == "is_user_action":
        return bool(action["is_user_action"]) == value
    if name.startswith(("start_date", "end_date")):
        ts = action["start_ts" if name.startswith("start") else "end_ts"]
        return ts is not None and (ts >= value if name.endswith("gte") else ts <= value)
    return action[name] == value


async def _generated(store, count=240, seed=7):
    rng = random.Random(seed)
    actions = []
    for i in range(count):
        state = rng.choice(STATES[:2] + ("Success", "Failed"))
        start = 1_700_000_000 + rng.randrange(0, 10_000)
        record = new_action(action=rng.choice(["Service Create", "Service Stop", "Node Deploy"]),
                            user=rng.choice(["alice", "bob", "ci"]),
                            namespace=rng.choice(["ns1", "ns2", "ns3"]), state=state,
                            start_date=start, is_user_action=rng.random() < 0.7,
                            **({"end_date": start + rng.randrange(0, 500)}
                               if state in ("Success", "Failed") else {}))
        actions.append(await store.record_action(record))
    return actions


async def test_every_filter_and_its_total_against_brute_force(store):
    actions = await _generated(store)
    rng = random.Random(3)
    sample = rng.sample(actions, 5)
    values = {
        "state": ["Success", "Pending"], "action": ["Service Stop"], "user": ["bob"],
        "is_user_action": [True, False], "uuid": [sample[0]["uuid"]],
        "uuid__startswith": [sample[1]["uuid"][:1], sample[2]["uuid"][:3]],
        "start_date__gte": [1_700_005_000], "start_date__lte": [1_700_002_000],
        "end_date__gte": [1_700_006_000], "end_date__lte": [1_700_004_000],
    }
    queries = [{name: v} for name in FILTERED for v in values[name]]
    queries += [{"state": "Success", "user": "alice", "start_date__gte": 1_700_003_000},
                {"action": "Node Deploy", "is_user_action": True, "end_date__lte": 1_700_008_000},
                {"uuid__startswith": sample[3]["uuid"][:1], "state": "Failed"}]
    for namespaces in (None, frozenset({"ns2"}), frozenset({"ns1", "ns3"})):
        for filters in queries:
            expected = [a for a in actions
                        if (namespaces is None or a["namespace"] in namespaces)
                        and all(_matches(a, n, v) for n, v in filters.items())]
            expected.sort(key=lambda a: (a["start_ts"], a["id"]), reverse=True)
            page = await store.list_actions(ListQuery(namespaces, 10, filters=dict(filters)))
            assert page.total == len(expected), (namespaces, filters)
            assert uuids(page) == [a["uuid"] for a in expected[:10]], (namespaces, filters)
            oldest = await store.list_actions(ListQuery(namespaces, 10, newest_first=False,
                                                        filters=dict(filters)))
            assert uuids(oldest) == [a["uuid"] for a in expected[::-1][:10]]


async def test_offset_and_cursor_pages_agree(store):
    actions = await _generated(store, count=90, seed=11)
    expected = [a["uuid"] for a in sorted(actions, key=lambda a: (a["start_ts"], a["id"]),
                                          reverse=True)]
    seen, cursor = [], None
    for offset in range(0, 90, 25):
        by_offset = await store.list_actions(ListQuery(None, 25, offset=offset))
        by_cursor = await store.list_actions(ListQuery(None, 25, offset=offset, cursor=cursor))
        assert uuids(by_offset) == uuids(by_cursor) == expected[offset:offset + 25]
        cursor = by_cursor.last
        seen += uuids(by_cursor)
    assert seen == expected


async def test_object_filters_and_related_actions(store):
    stack, svc, svc2 = "/api/app/v1/stack/s/", "/api/app/v1/service/a/", "/api/app/v1/service/b/"
    c1, c2 = "/api/app/v1/container/1/", "/api/app/v1/container/2/"
    made = {}
    for name, obj, parents in (("stack", stack, []), ("svc", svc, [stack]), ("svc2", svc2, [stack]),
                               ("c1", c1, [svc, stack]), ("c2", c2, [svc2, stack])):
        made[name] = (await store.record_action(new_action(
            action="X", user="u", object=obj, parents=parents)))["uuid"]

    async def related(uri, include=True, namespaces=None):
        page = await store.list_actions(ListQuery(namespaces, 100, filters={
            "object": uri, "include_related": include}))
        assert page.total == len(page.docs)
        return sorted(uuids(page))

    assert await related(c1) == sorted([made["c1"], made["svc"], made["stack"]])
    assert await related(svc) == sorted([made["c1"], made["svc"], made["stack"]])
    assert await related(stack) == sorted(made.values())
    assert await related("/api/app/v1/u/service/a/", include=False) == [made["svc"]]
    assert await related("/api/app/v1/service/none/") == []
    assert await related(stack, namespaces=frozenset({"other"})) == []


async def test_counts_size_and_ping(store):
    await _generated(store, count=30)
    counts = await store.counts_by_state()
    assert set(counts) == set(STATES) and sum(counts.values()) == 30
    assert await store.database_size() > 0
    await store.ping()
    assert await store.has_actions()


# ---------------------------------------------------------------------------- the data lifecycle

async def test_export_import_round_trip_between_two_stores(store, backend, tmp_path):
    actions = await _generated(store, count=40)
    await store.record_action(new_action(action="Y", user="u", object="/api/app/v1/service/a/",
                                         parents=["/api/app/v1/stack/s/"]))
    await store.append_logs(actions[0]["uuid"], [(5, None, f"l{i}") for i in range(7)], None)
    assert await store.count_actions({"states": ["Success"]}) == \
        (await store.counts_by_state())["Success"]
    items = []
    async for kind, action, *rest in store.export_actions({}, log_chunk=3):
        if kind == "action":
            edges, logs = rest
            record = {k: action[k] for k in ("uuid", "namespace", "state", "action", "method",
                                             "path", "object", "user", "user_agent", "ip",
                                             "location", "body", "start_ts", "end_ts",
                                             "is_user_action", "cancelable", "retriable")}
            items.append(("action", len(items), record, edges, logs))
        else:
            items.append(("logs", len(items), action["uuid"], rest[0]))
    assert sum(1 for i in items if i[0] == "logs") == 2   # 7 lines in chunks of 3
    async with open_store(make_config(backend, tmp_path, "copy")) as copy:
        results = await copy.import_batch(items)
        assert {r[1] for r in results} == {"imported", "logs"} and all(r[3] is None
                                                                       for r in results)
        again = await copy.import_batch(items)
        assert {r[1] for r in again} == {"skipped", "logs"} and sum(r[2] for r in again) == 0
        for original in actions[:5]:
            assert (await copy.get_action(original["uuid"], None))["doc"] == original["doc"]
        copied = await copy.get_action(actions[0]["uuid"], None)
        assert [line[3] for line in await copy.read_logs(copied["id"], 0, 10)] == \
            [f"l{i}" for i in range(7)]
        page = await copy.list_actions(ListQuery(None, 5, filters={
            "object": "/api/app/v1/stack/s/", "include_related": True}))
        assert page.total == 1


async def test_purge_removes_old_final_actions_only(store):
    old = await store.record_action(new_action(action="O", user="u", state="Success",
                                               start_date=100, end_date=200))
    await store.append_logs(old["uuid"], [(150, None, "x")] * 5, None)
    keep = await store.record_action(new_action(action="K", user="u", state="Pending",
                                                start_date=100))
    recent = await store.record_action(new_action(action="R", user="u", state="Failed",
                                                  start_date=100, end_date=5000))
    assert await store.count_purgeable(1000) == (1, 5)
    progress = []
    assert await store.purge(1000, on_progress=lambda *a: progress.append(a)) == (1, 5)
    with pytest.raises(NotFound):
        await store.get_action(old["uuid"], None)
    for kept in (keep, recent):
        await store.get_action(kept["uuid"], None)
    assert await store.read_logs(old["id"], 0, 10) == []


async def test_reset_and_load(store):
    await _generated(store, count=10)
    await store.add_user("stays")
    store.notes.clear()
    assert (await store.reset())["actions"] == 10
    assert store.notes == [ActionsRemoved()]
    assert not await store.has_actions() and await store.count_users() == 1
    record = new_action(action="F", user="u", object="/api/app/v1/container/9/")
    loaded = await store.load([(record, [["/api/app/v1/container/9/", "/api/app/v1/service/9/"]],
                                [(1, None, "a"), (2, "stderr", "b")])])
    assert loaded[0]["uuid"] == record["uuid"] and loaded[0]["log_count"] == 2
    assert store.notes[1].lineage == ("/api/app/v1/container/9/", "/api/app/v1/service/9/")
    page = await store.list_actions(ListQuery(None, 5, filters={
        "object": "/api/app/v1/service/9/", "include_related": True}))
    assert uuids(page) == [record["uuid"]]
    bad = new_action(action="G", user="u")
    bad["uuid"] = record["uuid"]
    with pytest.raises(Conflict):   # all or nothing
        await store.load([(new_action(action="H", user="u"), [], []), (bad, [], [])])
    assert (await store.list_actions(ListQuery(None, 5))).total == 1
