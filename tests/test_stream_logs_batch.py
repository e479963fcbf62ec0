"""The log stream's `batch=true` (an auditd extension the console uses): the same lines, in the
same order, with each message a JSON array of the lines of one write instead of one line, so a
browser following 100,000 lines handles a hundred message events, not 100,000."""
import io
import json

import aiohttp
import pytest
from aiohttp import WSMsgType

from test_stream_logs import UPGRADE, logs_path, new_action, read_stream


async def read_arrays(ws) -> tuple[list[list[dict]], int]:
    """Every message until the server closes, each parsed: (arrays, close code)."""
    arrays = []
    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.CLOSE:
            return arrays, msg.data
        assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
        arrays.append(json.loads(msg.data))


async def test_batched_messages_hold_the_same_lines_as_one_per_line(api):
    action = await new_action(api, lines=3)
    uuid = action["uuid"]
    # Lines of each frame header size: short (< 126 bytes), medium (< 64 KiB), long (80 KB).
    lines = [f"short {i}" for i in range(2000)] + ["medium " + "m" * 300, "long " + "é" * 40_000,
                                                   {"log": "to stderr", "streamType": "stderr",
                                                    "timestamp": 1454345248}]
    resp = await api.post(logs_path(uuid), as_="producer",
                          data=io.BytesIO(json.dumps(lines).encode()),
                          headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    async with api.client.ws_connect(logs_path(uuid, "tail=all&batch=true"),
                                     headers=api.headers("alice")) as ws:
        # following: the history, then a live line, then the close once the action is final
        history = []
        while len(history) < 3 + len(lines):
            message = json.loads((await ws.receive()).data)
            assert type(message) is list and message
            history += message
        await api.append(uuid, ["live"])
        await api.set_state(uuid, "Success")
        live, code = await read_arrays(ws)
    assert code == 1000
    batched = history + [m for array in live for m in array]
    async with api.client.ws_connect(logs_path(uuid, "tail=all"),
                                     headers=api.headers("alice")) as ws:
        one_per_line, code, _ = await read_stream(ws)
    assert code == 1000
    assert batched == one_per_line
    assert [m["log"] for m in batched[:4]] == ["line 1", "line 2", "line 3", "short 0"]
    assert batched[-2] == {"type": "log", "log": "to stderr", "timestamp": 1454345248,
                           "streamType": "stderr"}
    assert batched[-1]["log"] == "live"


async def test_a_batch_is_one_write_of_lines_not_one_message_per_line(api):
    action = await new_action(api, lines=5000)
    async with api.client.ws_connect(logs_path(action["uuid"], "tail=all&follow=false&batch=1"),
                                     headers=api.headers("alice")) as ws:
        arrays, code = await read_arrays(ws)
    assert code == 1000
    assert [m["log"] for array in arrays for m in array] == [f"line {i}"
                                                            for i in range(1, 5001)]
    assert len(arrays) < 100, f"{len(arrays)} messages for 5,000 lines"
    # and without lines, nothing: no empty arrays
    empty = await new_action(api)
    async with api.client.ws_connect(logs_path(empty["uuid"], "follow=false&batch=true"),
                                     headers=api.headers("alice")) as ws:
        assert await read_arrays(ws) == ([], 1000)


@pytest.mark.parametrize("value", ["maybe", "", "yes please"])
async def test_a_bad_batch_value_is_refused_before_the_upgrade(api, value):
    action = await new_action(api, lines=1)
    path = logs_path(action["uuid"], f"batch={value}")
    resp = await api.client.get(path, headers={**api.headers("alice"), **UPGRADE})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert "batch" in error and "true" in error, error
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await api.client.ws_connect(path, headers=api.headers("alice"))
