"""The log stream (CONTRACT.md section 7) over real WebSocket connections."""
import asyncio
import io
import json
import random
import signal
import socket

import aiohttp
import pytest
from aiohttp import WSMsgType

from auditd.http.appkeys import STREAMS

BASE = "/api/audit/v1"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def logs_path(uuid, query="", prefix=BASE, namespace=None):
    ns = f"/{namespace}" if namespace else ""
    return f"{prefix}{ns}/action/{uuid}/logs/" + (f"?{query}" if query else "")


async def read_stream(ws) -> tuple[list[dict], int, str]:
    """Every message until the server closes: (messages, close code, close reason)."""
    texts = []
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.TEXT:
            texts.append(msg.data)
        elif msg.type == WSMsgType.CLOSE:
            # One parse for all of them: each message must be one JSON object on its own.
            messages = json.loads("[" + ",".join(texts) + "]")
            assert len(messages) == len(texts) and all(type(m) is dict for m in messages)
            return messages, msg.data, msg.extra or ""
        else:
            raise AssertionError(f"unexpected {msg.type} ({msg.data!r}) after {len(texts)} "
                                 "messages")


async def read_lines(ws) -> tuple[list[str], int]:
    messages, code, _ = await read_stream(ws)
    assert all(m["type"] == "log" for m in messages)
    return [m["log"] for m in messages], code


def small_receive_buffer(addr_info):
    """A client socket with a small kernel receive buffer, so a client that stops reading
    pushes back on the server after a few kilobytes instead of megabytes."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    return sock


def stalling_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        socket_factory=small_receive_buffer))


async def new_action(api, lines=0, **fields):
    fields.setdefault("user", "alice")
    action = await api.record(**fields)
    if lines:
        await api.append(action["uuid"], [f"line {i}" for i in range(1, lines + 1)])
    return action


# ---------------------------------------------------------------------------- handshake

async def test_go_client_path_with_query_auth(api):
    """go-dockercloud dials /audit/v1/... with ?user=&token= and no Authorization header."""
    action = await new_action(api, lines=3, user="carol", namespace="acme")
    await api.set_state(action["uuid"], "Success")
    auth = f"user=alice&token={api.keys['alice']}"
    for path in (logs_path(action["uuid"], auth, prefix="/audit/v1"),
                 logs_path(action["uuid"], auth, prefix="/audit/v1", namespace="acme"),
                 logs_path(action["uuid"], auth)):
        async with api.client.ws_connect(path) as ws:
            assert await read_lines(ws) == (["line 1", "line 2", "line 3"], 1000)


async def test_python_sdk_paths_with_basic_auth(api):
    """The SDK sends follow and tail explicitly, namespaced when DOCKERCLOUD_NAMESPACE is set."""
    action = await new_action(api, lines=4, user="carol", namespace="acme")
    for path in (logs_path(action["uuid"], "follow=false&tail=2"),
                 logs_path(action["uuid"], "follow=false&tail=2", namespace="acme"),
                 logs_path(action["uuid"].upper(), "follow=0&tail=2")):
        async with api.client.ws_connect(path, headers=api.headers("alice")) as ws:
            assert await read_lines(ws) == (["line 3", "line 4"], 1000)


@pytest.mark.parametrize("who, path_of, status", [
    (None, lambda u: logs_path(u), 401),
    ("wrong-key", lambda u: logs_path(u), 401),
    ("query-wrong-key", lambda u: logs_path(u, "user=alice&token=nope", prefix="/audit/v1"), 401),
    ("alice", lambda u: logs_path("0c8b3a9e-0000-4000-8000-000000000000"), 404),
    ("bob", lambda u: logs_path(u), 404),                         # alice's action
    ("bob", lambda u: logs_path(u, namespace="alice"), 404),      # a namespace bob cannot see
    ("alice", lambda u: logs_path(u, namespace="bob"), 404),
    ("alice", lambda u: logs_path(u, "tail=-1"), 400),
    ("alice", lambda u: logs_path(u, "follow=maybe"), 400),
    ("alice", lambda u: logs_path(u, "lines=5"), 400),
])
async def test_refused_before_the_upgrade_with_a_json_error(api, who, path_of, status):
    action = await new_action(api, lines=1)
    path = path_of(action["uuid"])
    if who == "wrong-key":
        headers = {"Authorization": "ApiKey alice:not-the-key"}
    elif who in (None, "query-wrong-key"):
        headers = {}
    else:
        headers = api.headers(who)
    resp = await api.client.get(path, headers={**headers, **UPGRADE})
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "Sec-WebSocket-Accept" not in resp.headers
    assert set(await resp.json()) == {"error"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
        await api.client.ws_connect(path, headers=headers)
    assert failed.value.status == status


async def test_plain_get_is_told_to_upgrade(api):
    action = await new_action(api, lines=1)
    resp = await api.get(logs_path(action["uuid"]), as_="alice")
    assert resp.status == 400
    assert "WebSocket" in (await resp.json())["error"]


# ---------------------------------------------------------------------------- tail and follow

async def test_tail_default_zero_all_and_follow_false(api):
    action = await new_action(api, lines=350)
    everything = [f"line {i}" for i in range(1, 351)]
    for query, expected in (("follow=false", everything[-300:]),
                            ("follow=false&tail=5", everything[-5:]),
                            ("follow=false&tail=0", []),
                            ("follow=false&tail=all", everything),
                            ("follow=false&tail=ALL", everything),
                            ("follow=false&tail=1000", everything)):
        async with api.client.ws_connect(logs_path(action["uuid"], query),
                                         headers=api.headers("alice")) as ws:
            assert await read_lines(ws) == (expected, 1000), query


async def test_message_format(api):
    action = await new_action(api)
    await api.append(action["uuid"], [{"log": "to stderr", "timestamp": 1454345248,
                                       "streamType": "stderr"}, "plain ünïcode"])
    async with api.client.ws_connect(logs_path(action["uuid"], "follow=false"),
                                     headers=api.headers("alice")) as ws:
        messages, code, _ = await read_stream(ws)
    assert code == 1000
    assert messages[0] == {"type": "log", "log": "to stderr", "timestamp": 1454345248,
                           "streamType": "stderr"}
    assert set(messages[1]) == {"type", "log", "timestamp"}
    assert messages[1]["log"] == "plain ünïcode" and isinstance(messages[1]["timestamp"], int)


async def test_follow_sends_history_then_live_lines_then_closes_when_final(api):
    action = await new_action(api, lines=5)
    uuid = action["uuid"]
    async with api.client.ws_connect(logs_path(uuid, "tail=2"), headers=api.headers("alice")) as ws:
        assert [json.loads((await ws.receive()).data)["log"] for _ in range(2)] == \
            ["line 4", "line 5"]
        await api.append(uuid, ["live 1", "live 2"])
        assert [json.loads((await ws.receive()).data)["log"] for _ in range(2)] == \
            ["live 1", "live 2"]
        await api.append(uuid, ["last words"])
        await api.set_state(uuid, "Success")
        assert await read_lines(ws) == (["last words"], 1000)


async def test_late_lines_on_a_final_action_are_kept_but_do_not_reopen_streams(api):
    action = await new_action(api, lines=3)
    uuid = action["uuid"]
    async with api.client.ws_connect(logs_path(uuid, "tail=all"),
                                     headers=api.headers("alice")) as open_ws:
        first = [json.loads((await open_ws.receive()).data)["log"] for _ in range(3)]
        # While this follower is not reading, the action ends and late lines arrive.
        await api.set_state(uuid, "Failed")
        assert await api.append(uuid, ["late 1", "late 2"]) == {"appended": 2}
        rest, code = await read_lines(open_ws)
        assert (first + rest, code) == (["line 1", "line 2", "line 3"], 1000)
        assert open_ws.close_code == 1000     # a complete close handshake, not a dropped socket
    # A new follower of the final action gets everything stored, late lines included, and the
    # stream ends by itself.
    async with api.client.ws_connect(logs_path(uuid, "tail=all"),
                                     headers=api.headers("alice")) as ws:
        assert await read_lines(ws) == (["line 1", "line 2", "line 3", "late 1", "late 2"], 1000)


async def test_follow_on_an_action_without_lines_waits_for_the_first(api):
    action = await new_action(api)
    async with api.client.ws_connect(logs_path(action["uuid"]), headers=api.headers("alice")) as ws:
        await api.append(action["uuid"], ["first"])
        assert json.loads((await ws.receive()).data)["log"] == "first"
        await api.set_state(action["uuid"], "Success")
        assert await read_lines(ws) == ([], 1000)


async def test_pings_are_answered(api):
    action = await new_action(api)
    async with api.client.ws_connect(logs_path(action["uuid"], "tail=0"), autoping=False,
                                     headers=api.headers("alice")) as ws:
        await ws.ping(b"still there?")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"still there?")
        await api.append(action["uuid"], ["after the ping"])
        assert json.loads((await ws.receive()).data)["log"] == "after the ping"


async def test_client_leaving_ends_its_stream(api):
    action = await new_action(api)
    streams = api.app[STREAMS]
    async with api.client.ws_connect(logs_path(action["uuid"]), headers=api.headers("alice")):
        assert len(streams.sockets) == 1 and len(streams.logs.feeds) == 1
    await streams.wait_until(lambda: streams.counts["logs_closed"] == 1)
    assert not streams.sockets and not streams.logs.feeds


# ---------------------------------------------------------------------------- under load

def assert_consecutive(lines: list[str], last: int, first: int = 1):
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(first, last + 1)), (
        f"expected lines {first}..{last}, got {len(numbers)} lines "
        f"({numbers[:3]}...{numbers[-3:]})")


async def test_no_gap_and_no_duplicate_across_history_and_live_while_appending_fast(api):
    """Followers connect at random moments while bursts are appended back to back; each gets
    every line once, in order: its history and its live lines meet exactly."""
    action = await new_action(api)
    uuid = action["uuid"]
    rng = random.Random(3)
    bursts, size = 60, 50

    async def follower(query):
        async with api.client.ws_connect(logs_path(uuid, query),
                                         headers=api.headers("alice")) as ws:
            return query, await read_lines(ws)

    followers = []
    for burst in range(bursts):
        if rng.random() < 0.5:
            query = rng.choice(["tail=all", "tail=all", "tail=all", "", "tail=7"])
            followers.append(asyncio.create_task(follower(query)))
            if rng.random() < 0.5:
                await asyncio.sleep(0)   # let some handshakes land in the middle of a commit
        await api.append(uuid, [f"line {burst * size + i}" for i in range(1, size + 1)])
    await api.set_state(uuid, "Success")
    results = await asyncio.gather(*followers)
    assert len(results) > 10
    for query, (lines, code) in results:
        assert code == 1000
        if query == "tail=all":
            assert_consecutive(lines, bursts * size)
        else:   # a tail: whatever it started with, nothing missing up to the end
            assert lines, query
            assert_consecutive(lines, bursts * size, first=int(lines[0].split()[1]))


async def test_200_followers_each_get_5000_lines_in_bursts_once_in_order(api):
    action = await new_action(api)
    uuid = action["uuid"]
    streams = api.app[STREAMS]
    count = 200

    async def follower(session):
        # A session of its own: the test client's connection pool stops at 100.
        async with session.ws_connect(api.client.make_url(logs_path(uuid, "tail=all")),
                                      headers=api.headers("alice")) as ws:
            return await read_lines(ws)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.create_task(follower(session)) for _ in range(count)]
        await streams.wait_until(lambda: streams.counts["logs_opened"] == count)
        for burst in range(50):
            await api.append(uuid, [f"line {burst * 100 + i}" for i in range(1, 101)])
        await api.set_state(uuid, "Success")
        for lines, code in await asyncio.gather(*tasks):
            assert code == 1000
            assert_consecutive(lines, 5000)


async def test_followers_get_every_line_of_appends_bigger_than_the_window(api):
    """A commit renders only the lines that can stay in the window (the last 2,048, or 512 KB):
    followers get the others from the store, every line once and in order."""
    action = await new_action(api, lines=3)
    uuid = action["uuid"]
    pad = "p" * 700
    async with api.client.ws_connect(logs_path(uuid, "tail=all"), headers=api.headers("alice")) \
            as ws:
        first = [json.loads((await ws.receive()).data)["log"] for _ in range(3)]
        for lines in ([f"line {i} {pad}" for i in range(4, 10_004)],
                      [f"line {i} {'q' * 60_000}" for i in range(10_004, 10_024)]):
            resp = await api.post(logs_path(uuid), as_="producer",
                                  data=io.BytesIO(json.dumps(lines).encode()),
                                  headers={"Content-Type": "application/json"})
            assert resp.status == 201, await resp.text()
        await api.append(uuid, ["line 10024"])
        await api.set_state(uuid, "Success")
        lines, code = await read_lines(ws)
    assert code == 1000
    assert_consecutive(first + lines, 10_024)


async def test_a_stalled_follower_is_closed_with_1013_and_the_others_get_everything(api, config):
    streams = api.app[STREAMS]
    config.stream_stall_seconds = 0.2
    action = await new_action(api)
    uuid = action["uuid"]
    path = str(api.client.make_url(logs_path(uuid, "tail=all")))
    big = "x" * 1000
    async with stalling_session() as session:
        stalled = await session.ws_connect(path, headers=api.headers("alice"))
        async with api.client.ws_connect(logs_path(uuid, "tail=all"),
                                         headers=api.headers("alice")) as reader:
            reading = asyncio.create_task(read_lines(reader))
            total = 0
            while streams.counts["logs_closed_slow"] == 0:
                assert total < 50_000, "the stalled follower was never closed"
                await api.append(uuid, [f"line {total + i} {big}" for i in range(1, 501)])
                total += 500
            await api.append(uuid, [f"line {total + 1} {big}"])
            await api.set_state(uuid, "Success")
            lines, code = await reading
            assert code == 1000
            assert_consecutive(lines, total + 1)
        # The stalled client now reads what reached it: a prefix of the log, then the close.
        messages, code, reason = await read_stream(stalled)
        assert code == 1013
        assert "too slow" in reason
        if messages:
            assert_consecutive([m["log"] for m in messages], int(messages[-1]["log"].split()[1]))
        assert len(messages) < total
        await stalled.close()


# ---------------------------------------------------------------------------- real server

def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_follower_that_never_reads_costs_bounded_memory_and_shutdown_closes_1001(server):
    """Real server: one follower never reads while 50,000 lines (about 50 MB) are appended; the
    others get every line, the server's memory stays bounded, and SIGTERM closes the rest with
    1001 and ends the process although one client never reads."""
    headers = {"Authorization": f"ApiKey admin:{server.admin_key}"}
    url = server.url + BASE
    padding = "p" * 1000
    async with aiohttp.ClientSession(headers=headers) as http, stalling_session() as slow:
        resp = await http.post(url + "/action/", json={"action": "Stack Deploy"})
        uuid = (await resp.json())["uuid"]

        async def append(first, n):
            resp = await http.post(f"{url}/action/{uuid}/logs/",
                                   json=[f"line {first + i} {padding}" for i in range(n)])
            assert resp.status == 201, await resp.text()

        ws_url = server.url.replace("http", "ws") + logs_path(uuid, "tail=0")
        stalled = await slow.ws_connect(ws_url, headers=headers)
        readers = [await http.ws_connect(ws_url) for _ in range(2)]
        received = [[] for _ in readers]

        async def read(ws, into, until):
            while len(into) < until:
                msg = await ws.receive()
                assert msg.type == WSMsgType.TEXT, msg
                into.append(int(json.loads(msg.data)["log"].split()[1]))

        # Warm up (caches, the window, the allocator), then measure.
        for first in range(1, 5001, 500):
            await append(first, 500)
        await asyncio.gather(*(read(ws, into, 5000) for ws, into in zip(readers, received)))
        before = rss_kib(server.proc.pid)
        reading = [asyncio.create_task(read(ws, into, 55_000))
                   for ws, into in zip(readers, received)]
        for first in range(5001, 55_001, 500):
            await append(first, 500)
        await asyncio.gather(*reading)
        grown_mib = (rss_kib(server.proc.pid) - before) / 1024
        for into in received:
            assert into == list(range(1, 55_001))
        assert grown_mib <= 20, f"server RSS grew by {grown_mib:.1f} MiB"

        server.proc.send_signal(signal.SIGTERM)
        for ws in readers:
            msg = await ws.receive()
            assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1001,
                                                       "server shutting down")
        assert await asyncio.to_thread(server.proc.wait, 60) == 0
        await stalled.close()
