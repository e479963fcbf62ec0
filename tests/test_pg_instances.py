"""Several `auditd serve` processes on one PostgreSQL database (issue 12): what is written through
one instance reaches the live streams of the other, exactly once and in order, also across a
dropped listening connection and a restart."""
import asyncio
import json

import aiohttp
import pytest

import pgtools
from conftest import ServerProcess, basic

ACTIONS = "/api/audit/v1/action/"


@pytest.fixture
def pair(tmp_path):
    pgtools.require_postgres()
    db = pgtools.clean_database("instances")
    a = ServerProcess(db).start()
    b = ServerProcess(db)
    b.admin_key = a.admin_key      # the banner is printed by the first instance only
    b.start()
    yield a, b
    for srv in (a, b):
        srv.stop()


class Client:
    """HTTP and WebSocket calls to one instance, as admin."""

    def __init__(self, session, srv):
        self.session, self.srv = session, srv
        self.headers = basic("admin", srv.admin_key)

    async def call(self, method, path, status, **kw):
        async with self.session.request(method, self.srv.url + path, headers=self.headers,
                                        **kw) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    async def record(self, **fields):
        return await self.call("POST", ACTIONS, 201,
                               json={"action": "Service Create", "user": "alice", **fields})

    async def append(self, uuid, lines):
        return await self.call("POST", f"{ACTIONS}{uuid}/logs/", 201, json=lines)

    async def set_state(self, uuid, state):
        return await self.call("PATCH", f"{ACTIONS}{uuid}/", 200, json={"state": state})

    def ws(self, path):
        return self.session.ws_connect(self.srv.url.replace("http", "ws", 1) + path,
                                       headers=self.headers)


async def follow(client, uuid):
    """Every log message a follower on `client` gets, and how the stream closed."""
    async with client.ws(f"{ACTIONS}{uuid}/logs/?tail=all&follow=true") as ws:
        messages = [json.loads(m.data)["log"] async for m in ws]
        return messages, ws.close_code


async def open_follower(client, uuid):
    """A follower task on `client`, started once its socket is open and attached."""
    ready = asyncio.Event()

    async def run():
        async with client.ws(f"{ACTIONS}{uuid}/logs/?tail=all&follow=true") as ws:
            ready.set()
            messages = [json.loads(m.data)["log"] async for m in ws]
            return messages, ws.close_code
    task = asyncio.create_task(run())
    await asyncio.wait_for(ready.wait(), 10)
    return task


async def test_a_follower_on_one_instance_gets_lines_appended_through_both(pair):
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        action = await on_b.record()
        follower = await open_follower(on_a, action["uuid"])
        expected = []
        for batch in range(10):
            lines = [f"b{batch}-{i}" for i in range(5)]
            await (on_b if batch % 2 == 0 else on_a).append(action["uuid"], lines)
            expected += lines
        # lines appended through both at the same moment are numbered one after the other
        both = [f"x{i}" for i in range(20)]
        await asyncio.gather(*(c.append(action["uuid"], [line])
                               for c, line in zip([on_a, on_b] * 10, both)))
        await on_b.set_state(action["uuid"], "Success")
        messages, code = await asyncio.wait_for(follower, 20)
    assert code == 1000
    assert messages[:len(expected)] == expected               # in order, once each
    assert sorted(messages[len(expected):]) == sorted(both) and len(messages) == 70
    # what the follower got is what the log holds, in the same order
    async with aiohttp.ClientSession() as session:
        async with Client(session, b).ws(f"{ACTIONS}{action['uuid']}/logs/?tail=all&follow=false") \
                as ws:
            assert [json.loads(m.data)["log"] async for m in ws] == messages


async def test_events_on_one_instance_see_writes_through_the_other(pair):
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        async with on_a.ws("/api/audit/v1/events/") as events:
            assert (await events.receive_json(timeout=10))["type"] == "auth"
            action = await on_b.record(state="Pending", object="/api/app/v1/service/s1/")
            await on_b.set_state(action["uuid"], "In progress")
            await on_b.call("POST", f"{ACTIONS}{action['uuid']}/cancel/", 202)
            seen = [await events.receive_json(timeout=10) for _ in range(3)]
    assert [(e["action"], e["state"]) for e in seen] == [
        ("create", "Pending"), ("update", "In progress"), ("update", "Canceling")]
    assert {e["resource_uri"] for e in seen} == {action["resource_uri"]}
    assert seen[0]["parents"] == ["/api/app/v1/service/s1/"]


async def test_a_cancel_on_one_instance_reaches_a_producer_watching_the_other(pair):
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        action = await on_b.record(state="In progress")
        async with on_b.ws("/api/audit/v1/events/") as producer:
            assert (await producer.receive_json(timeout=10))["type"] == "auth"
            assert (await on_a.call("POST", f"{ACTIONS}{action['uuid']}/cancel/", 202)
                    )["state"] == "Canceling"
            event = await producer.receive_json(timeout=10)
            assert (event["resource_uri"], event["state"]) == (action["resource_uri"],
                                                               "Canceling")
            await on_b.set_state(action["uuid"], "Canceled")      # the producer finishes it
        assert (await on_a.call("GET", f"{ACTIONS}{action['uuid']}/", 200))["state"] == \
            "Canceled"


async def test_a_dropped_listener_connection_loses_nothing(pair):
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        action = await on_b.record()
        follower = await open_follower(on_a, action["uuid"])
        await on_b.append(action["uuid"], ["before"])
        killed = pgtools.terminate_listeners(a.db)
        assert killed >= 2          # both instances' LISTEN connections were cut
        # written while no instance listens: the change log has it, the poll or the
        # reconnected listener reads it
        await on_b.append(action["uuid"], ["while", "down"])
        await on_a.append(action["uuid"], ["from a"])
        await on_b.set_state(action["uuid"], "Success")
        messages, code = await asyncio.wait_for(follower, 20)
    assert (messages, code) == (["before", "while", "down", "from a"], 1000)


async def test_an_instance_restart_loses_nothing(pair):
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        action = await on_b.record()
        on_b_follower = await open_follower(on_b, action["uuid"])
        await on_a.append(action["uuid"], ["one"])
        a.stop()
        await on_b.append(action["uuid"], ["two"])           # while A is down
        a.start()
        on_a_follower = await open_follower(on_a, action["uuid"])
        await on_a.append(action["uuid"], ["three"])          # through the restarted one
        await on_a.set_state(action["uuid"], "Failed")
        for task in (on_a_follower, on_b_follower):
            assert await asyncio.wait_for(task, 20) == (["one", "two", "three"], 1000)


async def test_notify_payload_limit_cannot_matter(pair):
    """NOTIFY payloads stop at 8000 bytes; a commit of far more travels as a pointer."""
    a, b = pair
    async with aiohttp.ClientSession() as session:
        on_a, on_b = Client(session, a), Client(session, b)
        action = await on_b.record()
        follower = await open_follower(on_a, action["uuid"])
        lines = [f"{i:05d} " + "x" * 2000 for i in range(200)]     # 400 kB in one commit
        await on_b.append(action["uuid"], lines)
        await on_b.set_state(action["uuid"], "Success")
        messages, code = await asyncio.wait_for(follower, 20)
    assert (messages, code) == (lines, 1000)


async def test_credential_changes_take_effect_on_every_instance(pair):
    a, b = pair
    added = a.cli("user", "add", "dave")      # a third process on the same database
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip()
    async with aiohttp.ClientSession() as session:
        async def status(srv, user, key):
            async with session.get(srv.url + ACTIONS, headers=basic(user, key)) as resp:
                return resp.status
        for srv in (a, b):
            assert await status(srv, "dave", key) == 200
        rotated = b.cli("user", "rotate-key", "dave")
        assert rotated.returncode == 0, rotated.stderr
        # every instance drops its cached credentials on the notification (within a second
        # at most, the cache's own limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline and {await status(s, "dave", key) for s in (a, b)} != {401}:
            await asyncio.sleep(0.05)
        assert [await status(s, "dave", key) for s in (a, b)] == [401, 401]
        assert [await status(s, "dave", rotated.stdout.strip()) for s in (a, b)] == [200, 200]
