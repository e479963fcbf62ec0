"""Big request bodies (above 64 KiB) are parsed in a separate process, so that parsing one does not
stall the other clients (RELIABILITY.md; `python -m bench.stall` measures that). What a client
sees must not change: the same lines stored, the same 400 naming the field, all lines or none."""
import json
import os
import signal
import time
import urllib.request

import pytest

from conftest import ServerProcess, basic, error_of
from auditd.http.appkeys import BODY_PARSER, CONFIG
from auditd.http.bodyparser import OFF_LOOP_BYTES

LOGS = "/api/audit/v1/action/{uuid}/logs/"
LINE = "x" * 99
MANY = 2_000                      # lines of LINE: 200 KB, well above OFF_LOOP_BYTES


def lines_of(messages) -> list[str]:
    return [m["log"] for m in messages]


async def _post_logs(api, uuid, data, content_type):
    return await api.post(LOGS.format(uuid=uuid), as_="producer", data=data,
                          headers={"Content-Type": content_type})


async def test_a_big_json_append_is_stored_whole_in_order_and_parsed_in_another_process(api):
    action = await api.record()
    lines = [f"{i:05d} {LINE}" for i in range(MANY)]
    body = json.dumps(lines)
    assert len(body) > OFF_LOOP_BYTES
    resp = await _post_logs(api, action["uuid"], body, "application/json")
    assert resp.status == 201 and await resp.json() == {"appended": MANY}
    assert lines_of(await api.read_logs(action["uuid"])) == lines
    parser = api.app[BODY_PARSER].pid
    assert parser is not None and parser != os.getpid()


async def test_a_big_text_append_keeps_its_lines_crlf_and_undecodable_bytes(api):
    action = await api.record()
    body = b"".join(b"%05d %s\r\n" % (i, LINE.encode()) for i in range(MANY)) + b"last \xff"
    assert len(body) > OFF_LOOP_BYTES
    resp = await _post_logs(api, action["uuid"], body, "text/plain")
    assert resp.status == 201 and await resp.json() == {"appended": MANY + 1}
    stored = lines_of(await api.read_logs(action["uuid"]))
    assert stored[:MANY] == [f"{i:05d} {LINE}" for i in range(MANY)]
    assert stored[MANY] == "last \ufffd"


async def test_a_big_body_sent_in_chunks_without_a_length_is_read_whole_and_capped(api):
    action = await api.record()
    lines = [f"{i:05d} {LINE}" for i in range(MANY)]
    body = json.dumps(lines).encode()

    async def chunked(data, size=10_000):
        for at in range(0, len(data), size):
            yield data[at:at + size]

    resp = await _post_logs(api, action["uuid"], chunked(body), "application/json")
    assert resp.status == 201, await resp.text()
    assert lines_of(await api.read_logs(action["uuid"])) == lines
    too_big = b"x" * (api.app[CONFIG].max_body_bytes + 1)
    resp = await _post_logs(api, action["uuid"], chunked(too_big, 1 << 20), "text/plain")
    assert "too large" in await error_of(resp, 413)
    assert len(await api.read_logs(action["uuid"])) == MANY


async def test_big_records_and_state_changes_work_as_small_ones(api):
    resp = await api.post("/api/audit/v1/action/", as_="producer",
                          json={"action": "Big", "body": "b" * 200_000, "state": "In progress"})
    assert resp.status == 201, await resp.text()
    action = await resp.json()
    assert (await api.fetch(action["uuid"]))["body"] == "b" * 200_000
    padded = json.dumps({"state": "Success"}) + " " * (OFF_LOOP_BYTES + 1)
    resp = await api.patch(f"/api/audit/v1/action/{action['uuid']}/", as_="producer",
                           data=padded, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert (await api.fetch(action["uuid"]))["state"] == "Success"


def _big_lines(bad_at: int, bad) -> str:
    lines = [LINE] * MANY
    lines[bad_at] = bad
    return json.dumps(lines)


BAD_BIG_BODIES = [
    pytest.param("logs", "application/json", _big_lines(1500, 7), ["lines[1500]"],
                 id="log-line-not-a-string"),
    pytest.param("logs", "application/json", _big_lines(1999, {"log": "a", "timestamp": "x"}),
                 ["lines[1999]", "timestamp"], id="log-object-bad-timestamp"),
    pytest.param("logs", "application/json", json.dumps([LINE] * 10_001), ["lines", "10000"],
                 id="too-many-json-lines"),
    pytest.param("logs", "text/plain", "a\n" * 40_000, ["lines", "10000"],
                 id="too-many-text-lines"),
    pytest.param("logs", "application/json", _big_lines(0, "y" * 70_000), ["lines[0]", "longer"],
                 id="log-line-too-long"),
    pytest.param("logs", "application/json", json.dumps([LINE] * MANY)[:-1], ["JSON"],
                 id="truncated-json"),
    pytest.param("logs", "application/json", json.dumps([LINE] * MANY)[:-1] + ', "\\udfff"]',
                 ["surrogate"], id="lone-surrogate"),
    pytest.param("logs", "application/json", b"[\"" + b"\xff" * 70_000 + b"\"]", ["UTF-8"],
                 id="not-utf8"),
    pytest.param("logs", "application/json", json.dumps({"log": LINE * 1000}), ["array"],
                 id="logs-not-an-array"),
    pytest.param("record", "application/json",
                 json.dumps({"action": "Big", "body": "y" * 400_000}), ["body"],
                 id="record-body-over-256k"),
    pytest.param("record", "application/json", json.dumps([LINE] * MANY), ["JSON object"],
                 id="record-not-an-object"),
    pytest.param("record", "application/json", json.dumps({"action": "A", "colour": LINE * 1000}),
                 ["colour"], id="record-unknown-key"),
    pytest.param("state", "application/json",
                 json.dumps({"state": "Done"}) + " " * OFF_LOOP_BYTES, ["state"],
                 id="state-unknown"),
]


@pytest.mark.parametrize("where,content_type,body,words", BAD_BIG_BODIES)
async def test_a_big_bad_body_gets_the_400_a_small_one_gets_and_changes_nothing(
        api, where, content_type, body, words):
    action = await api.record(state="In progress")
    await api.append(action["uuid"], ["before"])
    path = {"logs": LOGS.format(uuid=action["uuid"]), "record": "/api/audit/v1/action/",
            "state": f"/api/audit/v1/action/{action['uuid']}/"}[where]
    method = "PATCH" if where == "state" else "POST"
    assert len(body) > OFF_LOOP_BYTES
    resp = await api.request(method, path, as_="producer", data=body,
                             headers={"Content-Type": content_type})
    message = await error_of(resp, 400)
    assert all(w.lower() in message.lower() for w in words), message
    assert lines_of(await api.read_logs(action["uuid"])) == ["before"]
    assert await api.all_uuids() == [action["uuid"]]
    assert (await api.fetch(action["uuid"]))["state"] == "In progress"


async def test_the_parser_process_is_started_again_after_it_died(api):
    action = await api.record()
    body = json.dumps([LINE] * MANY)
    assert (await _post_logs(api, action["uuid"], body, "application/json")).status == 201
    first = api.app[BODY_PARSER].pid
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    resp = await _post_logs(api, action["uuid"], body, "application/json")
    assert resp.status == 201, await resp.text()
    assert api.app[BODY_PARSER].pid not in (None, first)
    assert len(await api.read_logs(action["uuid"])) == 2 * MANY


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found.update(int(c) for c in children.read().split())
    return found


def _start_parser(srv) -> set[int]:
    """Make the server start its parser process with a big record; the processes it started."""
    before = _children(srv.proc.pid)
    request = urllib.request.Request(
        f"{srv.url}/api/audit/v1/action/", method="POST", headers=basic("admin", srv.admin_key),
        data=json.dumps({"action": "Big", "body": "b" * 100_000}).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 201
    started = _children(srv.proc.pid) - before   # the parser (and multiprocessing's tracker)
    assert started and all(_alive(pid) for pid in started)
    return started


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_the_parser_process_ends_with_its_server(tmp_path, sig):
    srv = ServerProcess(tmp_path / "big.db").start()
    try:
        started = _start_parser(srv)
    finally:
        code = srv.stop(sig)
    if sig != signal.SIGKILL:
        assert code == 0, "".join(srv.stderr_lines)
        assert not any("Traceback" in line for line in srv.stderr_lines), \
            "".join(srv.stderr_lines)
    deadline = time.monotonic() + 10       # a killed server cannot stop it: it notices
    while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in started)
