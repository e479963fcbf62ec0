"""The events stream (CONTRACT.md section 7) over real WebSocket connections."""
import asyncio
import json
import re

import pytest
from aiohttp import WSMsgType

from auditd.http.appkeys import STREAMS
from test_stream_logs import UPGRADE, logs_path, read_stream, stalling_session

EVENTS = "/api/audit/v1/events/"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STACK = "/api/app/v1/stack/5a1d2c3e-0000-4000-8000-000000000001/"
SERVICE = "/api/app/v1/service/5a1d2c3e-0000-4000-8000-000000000002/"
CONTAINER = "/api/app/v1/container/5a1d2c3e-0000-4000-8000-000000000003/"
OTHER = "/api/app/v1/service/5a1d2c3e-0000-4000-8000-000000000009/"


async def subscribe(api, as_="producer", path=EVENTS, query="", session=None):
    """An events socket past its auth message. Pings are left to the test (see `pending`)."""
    url = path + (f"?{query}" if query else "")
    if session is None:
        ws = await api.client.ws_connect(url, headers=api.headers(as_), autoping=False)
    else:
        ws = await session.ws_connect(api.client.make_url(url), headers=api.headers(as_),
                                      autoping=False)
    assert json.loads((await ws.receive()).data) == {"type": "auth", "user": as_}
    return ws


async def pending(ws, ping=True) -> list[dict]:
    """The events that reached `ws` so far: a ping's pong comes after everything the server
    had to send when the ping arrived, and every commit's events are queued for sending
    before the request that made it is answered. (`ping=False`: the caller pings later.)"""
    if ping:
        await ws.ping(b"barrier")
    events = []
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.PONG:
            assert msg.data == b"barrier"
            return events
        assert msg.type == WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))


def summary(events):
    return [(e["action"], e["resource_uri"].split("/")[-2], e["state"]) for e in events]


# ---------------------------------------------------------------------------- what is sent

async def test_create_update_cancel_and_retry_events_with_parents(api):
    # The SDK's path: no trailing slash, no query.
    ws = await subscribe(api, path="/api/audit/v1/events")
    service = await api.record(user="alice", object=SERVICE, parents=[STACK],
                               action="Service Create")
    container = await api.record(user="alice", object=CONTAINER, parents=[SERVICE],
                                 action="Container Start", state="Pending")
    await api.set_state(container["uuid"], "In progress")
    resp = await api.post(f"/api/audit/v1/action/{container['uuid']}/cancel/", as_="alice")
    assert resp.status == 202
    await api.set_state(container["uuid"], "Canceled")
    resp = await api.post(f"/api/audit/v1/action/{container['uuid']}/retry/", as_="alice")
    assert resp.status == 202
    retried = await resp.json()

    events = await pending(ws)
    assert summary(events) == [
        ("create", service["uuid"], "In progress"),
        ("create", container["uuid"], "Pending"),
        ("update", container["uuid"], "In progress"),
        ("update", container["uuid"], "Canceling"),      # the producer learns of the cancel
        ("update", container["uuid"], "Canceled"),
        ("create", retried["uuid"], "Pending"),
    ]
    assert events[0]["parents"] == [SERVICE, STACK]
    assert all(e["parents"] == [CONTAINER, SERVICE, STACK] for e in events[1:])
    for event in events:
        assert set(event) == {"type", "action", "parents", "resource_uri", "state", "uuid",
                              "datetime"}
        assert event["type"] == "action"
        assert event["resource_uri"] == f"/api/audit/v1/action/{event['resource_uri'][-37:-1]}/"
        assert UUID.match(event["uuid"]) and ISO.match(event["datetime"])
    assert len({e["uuid"] for e in events}) == len(events)
    await ws.close()


async def test_an_action_without_object_has_no_parents(api):
    ws = await subscribe(api)
    await api.record(user="alice", action="Account Update")
    [event] = await pending(ws)
    assert event["parents"] == []
    await ws.close()


async def test_filters_type_object_parent_and_parents(api):
    service = await api.record(user="alice", object=SERVICE, parents=[STACK])
    uri = f"/api/audit/v1/action/{service['uuid']}/"
    subscribers = {
        "": await subscribe(api),
        "type=action": await subscribe(api, query="type=action"),
        "type=container": await subscribe(api, query="type=container"),
        f"object={uri}": await subscribe(api, query=f"object={uri}"),
        f"object={uri.upper().rstrip('/')}": await subscribe(
            api, query=f"object={uri.upper().rstrip('/')}"),
        f"parent={STACK}": await subscribe(api, query=f"parent={STACK}"),
        f"parent={CONTAINER}": await subscribe(api, query=f"parent={CONTAINER}"),
        f"parents={OTHER},{SERVICE}": await subscribe(api, query=f"parents={OTHER},{SERVICE}"),
        f"type=action&parent={OTHER}": await subscribe(api, query=f"type=action&parent={OTHER}"),
    }
    await api.set_state(service["uuid"], "Success")                       # update, service
    container = await api.record(user="alice", object=CONTAINER, parents=[SERVICE])
    other = await api.record(user="alice", object=OTHER)
    s, c, o = service["uuid"], container["uuid"], other["uuid"]
    expected = {
        "": [("update", s, "Success"), ("create", c, "In progress"), ("create", o, "In progress")],
        "type=action": [("update", s, "Success"), ("create", c, "In progress"),
                        ("create", o, "In progress")],
        "type=container": [],
        f"object={uri}": [("update", s, "Success")],
        f"object={uri.upper().rstrip('/')}": [("update", s, "Success")],
        f"parent={STACK}": [("update", s, "Success"), ("create", c, "In progress")],
        f"parent={CONTAINER}": [("create", c, "In progress")],
        f"parents={OTHER},{SERVICE}": [("update", s, "Success"), ("create", c, "In progress"),
                                       ("create", o, "In progress")],
        f"type=action&parent={OTHER}": [("create", o, "In progress")],
    }
    for query, ws in subscribers.items():
        assert summary(await pending(ws)) == expected[query], query
        await ws.close()


async def test_a_stream_never_carries_another_namespaces_events(api):
    subscribers = {
        "alice": await subscribe(api, as_="alice"),                      # alice + acme
        "bob": await subscribe(api, as_="bob"),
        "carol": await subscribe(api, as_="carol"),                      # carol + acme
        "alice in acme": await subscribe(api, as_="alice", path="/api/audit/v1/acme/events"),
        "alice in alice": await subscribe(api, as_="alice", path="/api/audit/v1/alice/events/"),
        "producer": await subscribe(api, as_="producer"),
        "producer in bob": await subscribe(api, as_="producer", path="/api/audit/v1/bob/events/"),
    }
    made = {}
    for namespace, user in (("alice", "alice"), ("bob", "bob"), ("acme", "carol"),
                            ("carol", "carol"), ("elsewhere", "dave")):
        made[namespace] = (await api.record(user=user, namespace=namespace))["uuid"]
    # bob cannot cancel alice's action: no event comes of it.
    resp = await api.post(f"/api/audit/v1/action/{made['alice']}/cancel/", as_="bob")
    assert resp.status == 404
    visible = {
        "alice": ["alice", "acme"], "bob": ["bob"], "carol": ["acme", "carol"],
        "alice in acme": ["acme"], "alice in alice": ["alice"],
        "producer": ["alice", "bob", "acme", "carol", "elsewhere"], "producer in bob": ["bob"],
    }
    for who, ws in subscribers.items():
        got = [uuid for _, uuid, _ in summary(await pending(ws))]
        assert got == [made[ns] for ns in visible[who]], who
        await ws.close()


@pytest.mark.parametrize("as_, path, status", [
    (None, EVENTS, 401),
    ("bob", "/api/audit/v1/alice/events/", 404),
    ("alice", "/api/audit/v1/nobody/events", 404),
    ("alice", EVENTS + "?kind=action", 400),
    ("alice", EVENTS + "?type=action&type=action", 400),
])
async def test_refused_before_the_upgrade_with_a_json_error(api, as_, path, status):
    resp = await api.client.get(path, headers={**api.headers(as_), **UPGRADE})
    assert resp.status == status
    assert set(await resp.json()) == {"error"}
    assert "Sec-WebSocket-Accept" not in resp.headers


async def test_query_auth(api):
    ws = await api.client.ws_connect(f"{EVENTS}?user=alice&token={api.keys['alice']}")
    assert json.loads((await ws.receive()).data) == {"type": "auth", "user": "alice"}
    await ws.close()


# ---------------------------------------------------------------------------- slow subscribers

async def test_a_subscriber_that_does_not_keep_up_is_closed_with_1013(api):
    streams = api.app[STREAMS]
    streams.events.backlog_limit = 5
    fat = [f"/api/app/v1/stack/{'s' * 3900}{i}/" for i in range(4)]
    async with stalling_session() as session:
        stalled = await subscribe(api, session=session)
        keeping_up = await subscribe(api)
        reading = asyncio.create_task(pending(keeping_up, ping=False))
        made = []
        while streams.counts["events_closed_slow"] == 0:
            assert len(made) < 2000, "the slow subscriber was never closed"
            made.append((await api.record(user="alice", object=fat[0], parents=fat[1:]))["uuid"])
        assert len(made) > 5
        # The slow one gets what reached it before the server gave up on it, then the reason.
        events, code, reason = await read_stream(stalled)
        assert code == 1013
        assert "too slow" in reason and "reconnect" in reason
        assert [e["resource_uri"].split("/")[-2] for e in events] == made[:len(events)]
        assert len(events) < len(made)
        # The other one was not held up and missed nothing.
        await keeping_up.ping(b"barrier")
        events = await reading
        assert [e["resource_uri"].split("/")[-2] for e in events] == made
        assert streams.counts["events_closed_slow"] == 1


# ---------------------------------------------------------------------------- shutdown

async def test_shutdown_closes_every_stream_with_1001(api):
    action = await api.record(user="alice")
    await api.append(action["uuid"], ["one"])
    events = await subscribe(api, as_="alice")
    follower = await api.client.ws_connect(logs_path(action["uuid"]), headers=api.headers("alice"))
    assert json.loads((await follower.receive()).data)["log"] == "one"
    stopping = asyncio.create_task(api.client.server.close())
    for ws in (events, follower):
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001, "server shutting down")
        assert ws.close_code == 1001      # the close handshake completed
    await stopping
    assert not api.app[STREAMS].sockets
    assert api.app[STREAMS].counts["events_closed"] == api.app[STREAMS].counts["events_opened"]
