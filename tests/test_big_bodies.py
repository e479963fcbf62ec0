"""Big request bodies (above 64 KiB) are parsed in a separate process, so that parsing one does not
stall the other clients (RELIABILITY.md; `python -m bench.stall` measures that). What a client
sees must not change: the same lines stored, the same 400 naming the field, all lines or none."""
import asyncio
import gc
import io
import json
import os
import signal
import threading
import time
import urllib.request
import uuid as uuidlib

import pytest

from conftest import ServerProcess, basic, error_of
from auditd.http import bodies
from auditd.http.appkeys import BODY_PARSER, CONFIG
from auditd.http.bodyparser import OFF_LOOP_BYTES, BodyParser
from auditd.model.notes import ActionChanged
from auditd.store.sqlite import SQLiteStore, lifecycle
from auditd.store.sqlite.writer import heavy_job
from auditd.streams import NOTES_AT_ONCE, Streams

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


# ---------------------------------------------------------------------------- seeds

SEED = "/_auditd/seed"
FIXED_UUID = "6f0f7c8e-0d3c-4b8a-9c55-0d8a2f0e1a11"


def _seed_items(count: int, lines: int = 4) -> list[dict]:
    return [{"action": "Service Deploy", "uuid": str(uuidlib.uuid4()), "user": f"user{i % 7}",
             "object": f"/api/app/v1/service/{i:06d}/", "ip": "10.0.0.9", "state": "Success",
             "body": '{"image": "nginx"}', "logs": [f"{i} line {j} {LINE}" for j in range(lines)]}
            for i in range(count)]


async def _seed(api, body, content_type="application/json"):
    data = io.BytesIO(body.encode() if isinstance(body, str) else body)   # aiohttp: over 1 MiB
    return await api.post(SEED, data=data, headers={"Content-Type": content_type})


async def test_a_big_seed_is_parsed_and_checked_in_the_parser_process_and_loads_whole(
        api, monkeypatch):
    """A seed of several MB: its items are decoded, checked and made into records in the parser
    process (never here), and the answer, written in pieces, is the one a small seed gets."""
    prepared_here = []
    prepare = bodies.prepare_fixtures

    def watched(items, *args):
        prepared_here.append(len(items))
        return prepare(items, *args)

    monkeypatch.setattr(bodies, "prepare_fixtures", watched)
    items = _seed_items(6_000)
    body = json.dumps(items).encode()
    assert len(body) > 3_000_000
    resp = await _seed(api, body)
    text = await resp.text()
    assert resp.status == 201, text
    assert resp.content_length == len(text.encode())
    loaded = json.loads(text)
    assert (loaded["loaded"], loaded["log_lines"]) == (6_000, 24_000)
    assert [a["uuid"] for a in loaded["objects"]] == [i["uuid"] for i in items]
    assert {a["location"] for a in loaded["objects"]} == {"Private network"}
    assert prepared_here == []
    parser = api.app[BODY_PARSER].pid
    assert parser is not None and parser != os.getpid()
    assert (await api.list())["meta"]["total_count"] == 6_000
    assert lines_of(await api.read_logs(items[4321]["uuid"])) == items[4321]["logs"]
    assert gc.isenabled()

    small = json.dumps(_seed_items(2)).encode()           # a small one: checked right here
    assert len(small) <= bodies.seed_items.off_loop_bytes
    resp = await _seed(api, small, "application/x-ndjson")
    assert resp.status == 201 and (await resp.json())["loaded"] == 2
    assert prepared_here == [2]
    # checking an item costs the same however small it is: 5 KB of them is not "small"
    many = "\n".join(json.dumps({"action": "A"}) for _ in range(300))
    assert bodies.seed_items.off_loop_bytes < len(many) < OFF_LOOP_BYTES
    resp = await _seed(api, many, "application/x-ndjson")
    assert resp.status == 201 and (await resp.json())["loaded"] == 300
    assert prepared_here == [2]


@pytest.mark.writer_on_loop    # holds the load job, which must run in this process for that
async def test_the_loop_answers_others_while_a_big_seed_is_parsed_and_stored(api, monkeypatch):
    """Held at the point where the body is parsed (the parser's thread, then its process) and
    where it is stored (the writer's thread): meanwhile the server answers other clients, and
    the cyclic garbage collector waits (a full collection over a big seed's objects held the GIL
    ~30 ms); it runs again once the seed is answered."""
    parsing, loading, go_on = threading.Event(), threading.Event(), threading.Event()
    on_loop = []
    exchange = BodyParser._exchange

    def held_exchange(self, *args):
        parsing.set()
        go_on.wait(30)
        return exchange(self, *args)

    monkeypatch.setattr(BodyParser, "_exchange", held_exchange)
    if isinstance(api.store, SQLiteStore):
        load = lifecycle.load

        @heavy_job
        def held_load(conn, items):
            on_loop.append(threading.current_thread() is threading.main_thread())
            loading.set()
            go_on.wait(30)
            return load(conn, items)

        monkeypatch.setattr(lifecycle, "load", held_load)
    else:
        loading.set()
    kept = await api.record()
    seeding = asyncio.create_task(_seed(api, json.dumps(_seed_items(2_000)).encode()))
    for phase in (parsing, loading):
        assert await asyncio.to_thread(phase.wait, 30), "the seed never got there"
        assert not gc.isenabled()
        health = await api.client.get("/_auditd/health")
        assert health.status == 200
        assert (await api.fetch(kept["uuid"], as_="producer"))["uuid"] == kept["uuid"]
        assert not seeding.done()
        go_on.set()
        if phase is parsing:
            go_on = threading.Event()      # the load waits on a fresh one
    resp = await seeding
    assert resp.status == 201 and (await resp.json())["loaded"] == 2_000
    assert on_loop in ([], [False])
    assert gc.isenabled()


def _padded(body: str) -> str:
    return body + "\n" + " " * OFF_LOOP_BYTES      # whitespace: the same seed, made big


BAD_SEEDS = [
    pytest.param('[{"action": "A"}, {"state": "Success"}]', 400, "seed: item 1: action: Missing",
                 id="item-without-action"),
    pytest.param('[{"action": "A", "uuid": "not-a-uuid"}]', 400, "seed: item 0: uuid",
                 id="bad-uuid"),
    pytest.param('[{"action": "A", "logs": [7]}]', 400, "seed: item 0: logs[0]",
                 id="bad-log-line"),
    pytest.param("[1, 2]", 400, "seed: item 0 must be a JSON object", id="not-objects"),
    pytest.param('"text"', 400, "seed: must be a JSON array", id="not-an-array"),
    pytest.param('{"action": "A"}\n{"action": ', 400, "seed: line 2 is not JSON",
                 id="ndjson-line-not-json"),
    pytest.param('{"logs_of": "%s"}' % uuidlib.uuid4(), 400, "is not the uuid of an action",
                 id="logs-of-nothing"),
    pytest.param('[{"action": "A", "uuid": "%s"}, {"action": "B", "uuid": "%s"}]'
                 % ((FIXED_UUID,) * 2), 409, "already exists", id="same-uuid-twice"),
]


@pytest.mark.parametrize("body,status,message", BAD_SEEDS)
async def test_a_big_bad_seed_gets_the_error_a_small_one_gets_and_loads_nothing(
        api, body, status, message):
    kept = await api.record()
    answers = []
    for data in (body, _padded(body)):
        resp = await _seed(api, data)
        answers.append(await error_of(resp, status))
        assert gc.isenabled()
    assert len(_padded(body)) > OFF_LOOP_BYTES
    assert answers[0] == answers[1] and message in answers[0], answers
    assert await api.all_uuids() == [kept["uuid"]]


async def test_a_big_seed_keeps_the_body_checks_that_come_before_parsing(api):
    not_utf8 = b'[{"action": "\xff"}]' + b" " * OFF_LOOP_BYTES
    for data in (not_utf8[:30], not_utf8):
        assert "not UTF-8" in await error_of(await _seed(api, data), 400)
    too_big = b" " * (api.app[CONFIG].max_body_bytes + 1)
    assert "too large" in await error_of(await _seed(api, too_big), 413)
    resp = await _seed(api, json.dumps(_seed_items(500)), "image/png")
    assert "Content-Type" in await error_of(resp, 415)
    assert await api.all_uuids() == []
    assert api.app[BODY_PARSER].pid is not None    # the big one that was not UTF-8 went there


async def test_a_big_commits_notes_reach_the_streams_a_slice_at_a_time_in_order():
    """A seed of 30,000 actions commits 30,000 notes at once; the streams take them NOTES_AT_ONCE
    per turn of the loop (all at once held it ~10 ms, ~140 ms with an events stream open), and
    a later commit's notes come after them."""
    streams = Streams()
    seen = []
    streams.events.action_committed = lambda kind, action, lineage: seen.append(action["id"])

    def notes(ids):
        return [ActionChanged("create", {"id": i, "log_count": 0, "state": "Success"}, ())
                for i in ids]

    streams.committed(notes(range(3 * NOTES_AT_ONCE + 7)))
    assert seen == list(range(NOTES_AT_ONCE))
    streams.committed(notes([-1, -2]))                    # waits behind the big one
    assert seen == list(range(NOTES_AT_ONCE))
    turns = 0
    while streams._queued:
        await asyncio.sleep(0)
        turns += 1
    assert seen == list(range(3 * NOTES_AT_ONCE + 7)) + [-1, -2]
    assert turns >= 3
    streams.committed(notes([5]))                         # nothing queued: at once again
    assert seen[-1] == 5
