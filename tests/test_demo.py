"""Stand-in mode: `serve --demo`, `--fixtures FILE`, and POST /_auditd/reset and /_auditd/seed."""
import asyncio
import json
import uuid as uuidlib

import aiohttp
import pytest
from aiohttp import web

from auditd.tasks import demo
from auditd.http.app import create_app
from auditd.config import Config
from auditd.model.errors import InvalidRequest
from auditd.http.appkeys import STORE
from auditd.model.actions import STATES
from auditd.store.sqlite import SQLiteStore
from conftest import basic

ACTIONS = "/api/audit/v1/action/"


class DemoClient:
    def __init__(self, client, key):
        self.client, self.headers = client, basic("admin", key)

    async def list(self, query=""):
        resp = await self.client.get(ACTIONS + "?limit=1000" + query, headers=self.headers)
        assert resp.status == 200, await resp.text()
        return (await resp.json())["objects"]

    async def get(self, uuid):
        resp = await self.client.get(f"{ACTIONS}{uuid}/", headers=self.headers)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    def logs(self, uuid, query="tail=all&follow=false"):
        return self.client.ws_connect(f"{ACTIONS}{uuid}/logs/?{query}", headers=self.headers)


async def read_lines(ws) -> list[dict]:
    return [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]


@pytest.fixture
async def demo_client(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Config(db=str(tmp_path / "demo.db"), demo=True)))
    key = await client.server.app[STORE].add_user("admin", "admin")
    return DemoClient(client, key)


async def first_live_line(dc: DemoClient):
    """(action, its log socket, first line) of the simulated operation: the In progress action
    whose log grows while we watch."""
    while True:
        running = await dc.list("&state=In%20progress")
        sockets = {a["uuid"]: await dc.logs(a["uuid"], "tail=0&follow=true") for a in running}
        receives = {asyncio.create_task(sockets[a["uuid"]].receive()): a for a in running}
        winner = None
        while receives and winner is None:
            done, _ = await asyncio.wait(receives, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                action = receives.pop(task)
                message = task.result()
                if message.type == aiohttp.WSMsgType.TEXT and winner is None:
                    winner = (action, sockets[action["uuid"]], json.loads(message.data))
        for task in receives:
            task.cancel()
        for uuid, ws in sockets.items():
            if winner is None or uuid != winner[0]["uuid"]:
                await ws.close()
        if winner is not None:
            return winner
        # every stream closed without a line: the operation finished meanwhile; look again


async def test_demo_has_every_state_with_believable_actions(demo_client):
    actions = await demo_client.list()
    assert {a["state"] for a in actions} == set(STATES)
    names = {a["action"] for a in actions}
    assert {"Stack Create", "Service Redeploy", "Node Deploy", "Container Stop"} <= names
    for action in actions:
        assert action["object"].startswith(("/api/infra/v1/", "/api/app/v1/"))
        assert action["start_date"].endswith(" +0000")
    assert len({a["user"] for a in actions}) > 1
    assert any(a["ip"] and a["location"] and a["user_agent"] for a in actions)
    finished = [a for a in actions if a["state"] in ("Success", "Failed", "Canceled")]
    assert all(a["end_date"] for a in finished)
    with_lines = await read_lines(await demo_client.logs(finished[-1]["uuid"]))
    assert with_lines and all(m["type"] == "log" and m["log"] for m in with_lines)


async def test_demo_stack_relates_its_services_and_containers(demo_client):
    actions = await demo_client.list()
    stack = next(a["object"] for a in actions if a["action"] == "Stack Create")
    related = await demo_client.list("&include_related=true&object=" + stack)
    kinds = {a["object"].split("/")[4] for a in related}
    assert kinds == {"stack", "service", "container"}
    # a container relates to its service and stack, not to the other containers
    container = next(a["object"] for a in related if "/container/" in a["object"])
    around = await demo_client.list("&include_related=true&object=" + container)
    assert {a["object"] for a in around if "/container/" in a["object"]} == {container}
    assert {a["object"].split("/")[4] for a in around} == {"container", "service", "stack"}
    cluster = next(a["object"] for a in actions if a["action"] == "Node Cluster Create")
    nodes = await demo_client.list("&include_related=true&object=" + cluster)
    assert {a["object"].split("/")[4] for a in nodes} == {"nodecluster", "node"}


async def test_demo_operation_streams_live_and_honours_cancel(demo_client):
    action, ws, line = await first_live_line(demo_client)
    assert line["log"]
    resp = await demo_client.client.post(f"{ACTIONS}{action['uuid']}/cancel/",
                                         headers=demo_client.headers)
    assert resp.status == 202, await resp.text()
    rest = await read_lines(ws)     # the stream ends once the demo has moved it to Canceled
    assert rest[-1]["log"] == "Cancel requested: operation stopped"
    assert (await demo_client.get(action["uuid"]))["state"] == "Canceled"


async def test_demo_operation_finishes_and_the_next_starts(aiohttp_client, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "LIVE_TICK", 0.01)
    client = await aiohttp_client(create_app(Config(db=str(tmp_path / "d.db"), demo=True)))
    headers = basic("admin", await client.server.app[STORE].add_user("admin", "admin"))
    finished = started = None
    async with client.ws_connect("/api/audit/v1/events/", headers=headers) as ws:
        async for message in ws:
            event = json.loads(message.data)
            if event["type"] != "action":
                continue
            if finished is None and (event["action"], event["state"]) == ("update", "Success"):
                finished = event["resource_uri"]
            elif finished is not None and event["action"] == "create":
                started = event["resource_uri"]
                break
    assert finished is not None and started not in (None, finished)


async def test_demo_stops_cleanly_and_marks_the_cut_operation(aiohttp_client, tmp_path):
    db = tmp_path / "stop.db"
    client = await aiohttp_client(create_app(Config(db=str(db), demo=True)))
    dc = DemoClient(client, await client.server.app[STORE].add_user("admin", "admin"))
    action, ws, _ = await first_live_line(dc)
    await ws.close()
    await client.close()
    async with SQLiteStore(str(db)) as store:
        stopped = await store.get_action(action["uuid"], None)
        lines = await store.read_logs(stopped["id"], 0, 1000)
    assert stopped["state"] in ("Failed", "Success")   # cut short, or it had just finished
    if stopped["state"] == "Failed":
        assert lines[-1][3] == "Interrupted: auditd is stopping"


async def test_restarted_demo_keeps_its_data(aiohttp_client, tmp_path):
    db = str(tmp_path / "again.db")
    first = await aiohttp_client(create_app(Config(db=db, demo=True)))
    dc = DemoClient(first, await first.server.app[STORE].add_user("admin", "admin"))
    before = {a["uuid"] for a in await dc.list() if a["action"] != "Service Redeploy"}
    await first.close()
    second = await aiohttp_client(create_app(Config(db=db, demo=True)))
    dc.client = second
    after = {a["uuid"] for a in await dc.list() if a["action"] != "Service Redeploy"}
    assert before <= after and len(after - before) <= 1   # at most a new live operation


# ---------------------------------------------------------------------------- fixtures

FIXTURE = [
    {"uuid": "6f0f7c8e-0d3c-4b8a-9c55-0d8a2f0e1a11", "action": "Stack Create",
     "object": "/api/app/v1/stack/s1/", "user": "alice", "state": "Success",
     "start_date": "2016-02-01T16:47:28Z", "end_date": "2016-02-01T16:48:00Z",
     "ip": "198.51.100.7", "location": "Lisbon, Portugal", "logs": ["created"]},
    {"action": "Service Redeploy", "object": "/api/app/v1/service/v1/",
     "parents": ["/api/app/v1/stack/s1/"], "namespace": "acme", "user": "carol",
     "state": "Canceling",
     "logs": [{"log": "pulling", "streamType": "stdout", "timestamp": 1454345250}, "stopping"]},
    {"action": "Container Stop", "object": "/api/app/v1/container/c1/",
     "parents": ["/api/app/v1/service/v1/", "/api/app/v1/stack/s1/"], "namespace": "acme",
     "state": "Pending"},
]


async def test_fixture_file_is_loaded_at_start(aiohttp_client, tmp_path):
    path = tmp_path / "fixtures.ndjson"
    path.write_text("\n".join(json.dumps(item) for item in FIXTURE) + "\n")
    client = await aiohttp_client(create_app(Config(db=str(tmp_path / "f.db"),
                                                    fixtures=str(path))))
    dc = DemoClient(client, await client.server.app[STORE].add_user("admin", "admin"))
    actions = await dc.list("&order_by=start_date")
    assert [a["state"] for a in actions] == ["Success", "Canceling", "Pending"]
    first = actions[0]
    assert first["uuid"] == FIXTURE[0]["uuid"]
    assert (first["user"], first["location"]) == ("alice", "Lisbon, Portugal")
    assert first["start_date"] == "Mon, 01 Feb 2016 16:47:28 +0000"
    related = await dc.list("&include_related=true&object=/api/app/v1/stack/s1/")
    assert len(related) == 3
    lines = await read_lines(await dc.logs(actions[1]["uuid"]))
    assert [(m["log"], m.get("streamType")) for m in lines] == [("pulling", "stdout"),
                                                                 ("stopping", None)]
    assert lines[0]["timestamp"] == 1454345250


@pytest.mark.parametrize("text, message", [
    ('[{"action": "X", "state": "Done"}]', "item 0: state: must be one of: Pending"),
    ('{"action": "X"}\n{"action": "Y", "colour": 1}', "line 2: unknown key 'colour'"),
    ('{"action": "X"}\nnot json', "line 2 is not JSON"),
    ('[{"action": "X", "logs": [3]}]', "item 0: logs"),
    ('"just a string"', "must be a JSON array of action objects"),
])
async def test_bad_fixture_file_stops_the_start_naming_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    error = await start_error(Config(db=str(tmp_path / "b.db"), fixtures=str(path)))
    assert str(path) in error and message in error


async def test_missing_fixture_file_stops_the_start(tmp_path):
    error = await start_error(Config(db=str(tmp_path / "m.db"),
                                     fixtures=str(tmp_path / "nope.json")))
    assert "cannot read it" in error


async def start_error(config) -> str:
    runner = web.AppRunner(create_app(config))
    try:
        with pytest.raises(InvalidRequest) as err:
            await runner.setup()
    finally:
        await runner.cleanup()
    return err.value.message


# ---------------------------------------------------------------------------- reset and seed

async def test_seed_loads_and_reset_clears_as_admin(api):
    await api.record(user="bob")
    resp = await api.post("/_auditd/seed", json=FIXTURE)
    assert resp.status == 201, await resp.text()
    loaded = await resp.json()
    assert (loaded["loaded"], loaded["log_lines"]) == (3, 3)
    assert loaded["objects"][0]["uuid"] == FIXTURE[0]["uuid"]
    assert {a["uuid"] for a in (await api.list(as_="carol"))["objects"]} == \
        {a["uuid"] for a in loaded["objects"][1:]}
    assert [a["uuid"] for a in (await api.list(as_="alice"))["objects"]][-1] == FIXTURE[0]["uuid"]

    resp = await api.post("/_auditd/reset")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["deleted"] == {"actions": 4, "log_lines": 3, "objects": 3}
    page = await api.list()
    assert page["meta"]["total_count"] == 0 and page["objects"] == []
    assert (await api.list(as_="alice"))["meta"]["total_count"] == 0   # users are kept
    again = await api.post("/_auditd/seed/", json=FIXTURE)          # same uuids load again
    assert again.status == 201
    assert (await api.list(query="state=Pending"))["meta"]["total_count"] == 1


async def test_seed_ndjson_defaults_to_the_calling_admin(api):
    body = '{"action": "Node Deploy"}\n\n{"action": "Node Upgrade Docker", "state": "Failed"}\n'
    resp = await api.post("/_auditd/seed", data=body,
                          headers={"Content-Type": "application/x-ndjson"})
    assert resp.status == 201, await resp.text()
    objects = (await resp.json())["objects"]
    assert [(a["user"], a["state"]) for a in objects] == [("admin", "In progress"),
                                                          ("admin", "Failed")]


@pytest.mark.parametrize("as_, status", [(None, 401), ("alice", 403), ("producer", 403)])
@pytest.mark.parametrize("path", ["/_auditd/reset", "/_auditd/seed"])
async def test_reset_and_seed_need_an_admin(api, as_, status, path):
    kept = await api.record()
    resp = await api.post(path, as_=as_, json=FIXTURE)
    assert resp.status == status
    assert "error" in await resp.json()
    assert [a["uuid"] for a in (await api.list())["objects"]] == [kept["uuid"]]


async def test_wrong_key_is_401(api):
    resp = await api.client.post("/_auditd/reset", headers=basic("admin", "wrong"))
    assert resp.status == 401


@pytest.mark.parametrize("body, status, message", [
    ('[{"action": "A"}, {"state": "Success"}]', 400, "item 1: action: Missing data"),
    ('[{"action": "A", "uuid": "not-a-uuid"}]', 400, "item 0: uuid"),
    ('[{"action": "A", "start_date": "yesterday"}]', 400, "item 0: start_date: must be a date"),
    ('[{"action": "A", "uuid": "%s"}, {"action": "B", "uuid": "%s"}]' % ((FIXTURE[0]["uuid"],) * 2),
     409, "already exists"),
    ("[1, 2]", 400, "item 0 must be a JSON object"),
])
async def test_bad_seed_loads_nothing(api, body, status, message):
    resp = await api.post("/_auditd/seed", data=body,
                          headers={"Content-Type": "application/json"})
    assert resp.status == status
    assert message in (await resp.json())["error"]
    assert (await api.list())["meta"]["total_count"] == 0


async def test_reset_stops_the_demo_operation(demo_client):
    resp = await demo_client.client.post("/_auditd/reset", headers=demo_client.headers)
    assert resp.status == 200
    assert (await resp.json())["deleted"]["actions"] > 20
    seeded = await demo_client.client.post(
        "/_auditd/seed", headers=demo_client.headers,
        json=[{"action": "Only This", "uuid": str(uuidlib.uuid4())}])
    assert seeded.status == 201
    # nothing else is being recorded: an events stream sees no new action before our own
    async with demo_client.client.ws_connect("/api/audit/v1/events/",
                                             headers=demo_client.headers) as ws:
        await ws.receive()   # auth
        marker = await demo_client.client.post(
            ACTIONS, headers=demo_client.headers, json={"action": "Marker"})
        marker_uri = f"{ACTIONS}{(await marker.json())['uuid']}/"
        event = json.loads((await ws.receive()).data)
        assert event["resource_uri"] == marker_uri
    assert [a["action"] for a in await demo_client.list()] == ["Marker", "Only This"]


async def test_reset_ends_the_log_streams_of_deleted_actions(api):
    running = await api.record(state="In progress")
    await api.append(running["uuid"], ["one"])
    async with api.client.ws_connect(f"{ACTIONS}{running['uuid']}/logs/?follow=true",
                                     headers=api.headers("admin")) as ws:
        assert json.loads((await ws.receive()).data)["log"] == "one"
        resp = await api.post("/_auditd/reset")
        assert resp.status == 200
        closing = await ws.receive()
        assert (closing.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 1000)
    again = await api.record(state="In progress")       # a new action, maybe with the same id
    async with api.client.ws_connect(f"{ACTIONS}{again['uuid']}/logs/?follow=true",
                                     headers=api.headers("admin")) as ws:
        await api.append(again["uuid"], ["fresh"])
        assert json.loads((await ws.receive()).data)["log"] == "fresh"
