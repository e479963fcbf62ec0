"""A write that was answered survives SIGKILL of the server process (CONTRACT.md, issue 2)."""
import asyncio
import json
import signal

import aiohttp

from conftest import ServerProcess, basic


async def _record_everything(session, url, headers):
    """Concurrent writes of each kind; returns what the server acknowledged."""
    async def record(i):
        async with session.post(url + "/api/audit/v1/action/", headers=headers,
                                json={"action": "Service Create", "user": "alice",
                                      "object": f"/api/app/v1/service/S{i}/",
                                      "state": "Pending"}) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    recorded = await asyncio.gather(*(record(i) for i in range(40)))

    async def move(action, state):
        async with session.patch(url + action["resource_uri"], headers=headers,
                                 json={"state": state}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def append(action, lines):
        async with session.post(url + action["resource_uri"] + "logs/", headers=headers,
                                json=lines) as resp:
            assert resp.status == 201, await resp.text()

    async def cancel(action):
        async with session.post(url + action["resource_uri"] + "cancel/",
                                headers=headers) as resp:
            assert resp.status == 202, await resp.text()
            return await resp.json()

    moved = await asyncio.gather(*(move(a, "In progress") for a in recorded[:20]))
    canceled = await asyncio.gather(*(cancel(a) for a in recorded[20:25]))
    logged = {a["uuid"]: [f"{a['uuid']} line {n}" for n in range(3)] for a in recorded[:10]}
    await asyncio.gather(*(append(a, logged[a["uuid"]]) for a in recorded[:10]))
    latest = {a["uuid"]: a for a in [*recorded, *moved, *canceled]}
    return latest, logged


async def _read_logs(session, url, headers, action):
    ws_url = url.replace("http", "ws", 1) + action["resource_uri"] + "logs/?tail=all&follow=false"
    async with session.ws_connect(ws_url, headers=headers) as ws:
        return [json.loads(m.data)["log"] async for m in ws]


async def test_acknowledged_writes_survive_sigkill(server):
    headers = basic("admin", server.admin_key)
    async with aiohttp.ClientSession() as session:
        acknowledged, logged = await _record_everything(session, server.url, headers)
    # every response above is in hand: kill at once, no chance to flush anything
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL

    restarted = ServerProcess(server.db)
    restarted.admin_key = server.admin_key
    restarted.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(restarted.url + "/api/audit/v1/action/?limit=1000",
                                   headers=headers) as resp:
                assert resp.status == 200
                page = await resp.json()
            found = {a["uuid"]: a for a in page["objects"]}
            assert page["meta"]["total_count"] == len(acknowledged)
            assert found == acknowledged
            for uuid, lines in logged.items():
                assert await _read_logs(session, restarted.url, headers, found[uuid]) == lines
    finally:
        restarted.stop()
