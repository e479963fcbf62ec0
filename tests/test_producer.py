"""The producer API: record an action, move its state, append log lines (CONTRACT.md section 6)."""
import json
import time
import uuid as uuidlib
from email.utils import parsedate_to_datetime

import pytest

from conftest import error_of

URI_HEADER = "X-DockerCloud-Action-URI"
T = 1410942382   # Wed, 17 Sep 2014 08:26:22 +0000


def ts(rfc2822: str) -> int:
    return int(parsedate_to_datetime(rfc2822).timestamp())


# ---------------------------------------------------------------------------- recording

async def test_record_with_defaults(api):
    before = int(time.time())
    resp = await api.post("/api/audit/v1/action/", as_="producer", json={"action": "Node Deploy"},
                          headers={"User-Agent": "my-producer/2.0"})
    after = int(time.time())
    assert resp.status == 201, await resp.text()
    action = await resp.json()
    assert resp.headers[URI_HEADER] == action["resource_uri"] == \
        f"/api/audit/v1/action/{action['uuid']}/"
    assert before <= ts(action["start_date"]) <= after
    assert {k: v for k, v in action.items() if k not in ("uuid", "resource_uri", "start_date")} \
        == {"action": "Node Deploy", "object": "", "method": "", "path": "", "user": "producer",
            "user_agent": "my-producer/2.0", "end_date": None, "state": "In progress",
            "ip": "127.0.0.1", "location": "Localhost", "is_user_action": True,
            "can_be_canceled": True, "can_be_retried": False, "body": None}
    assert await api.fetch(action["uuid"]) == action


async def test_recorded_user_owns_the_action_namespace(api):
    action = await api.record(user="alice")
    assert (await api.fetch(action["uuid"], as_="alice"))["user"] == "alice"
    await error_of(await api.get(f"/api/audit/v1/action/{action['uuid']}/", as_="bob"), 404)


async def test_namespace_field_and_namespaced_path(api):
    in_org = await api.record(user="dave", namespace="acme")
    resp = await api.post("/api/audit/v1/acme/action/", as_="producer",
                          json={"action": "Stack Start", "user": "erin"})
    assert resp.status == 201, await resp.text()
    via_path = await resp.json()
    for member in ("alice", "carol"):
        page = await api.list(as_=member)
        assert {a["uuid"] for a in page["objects"]} == {in_org["uuid"], via_path["uuid"]}
    assert (await api.list(as_="bob"))["objects"] == []

    resp = await api.post("/api/audit/v1/acme/action/", as_="producer",
                          json={"action": "Stack Start", "namespace": "other"})
    message = await error_of(resp, 400)
    assert "acme" in message and "other" in message


async def test_explicit_fields_are_kept(api):
    fields = {"action": "Service Scale", "object": "/api/app/v1/service/S/", "method": "PATCH",
              "path": "/api/app/v1/service/S/", "user": "alice", "ip": "10.0.0.7",
              "user_agent": "docker-cloud/1.0.9", "is_user_action": False,
              "can_be_canceled": False, "can_be_retried": False, "state": "Pending",
              "start_date": T}
    action = await api.record(**fields)
    for key in ("action", "object", "method", "path", "user", "ip", "user_agent",
                "is_user_action", "state"):
        assert action[key] == fields[key], key
    assert action["location"] == "Private network"
    assert action["can_be_canceled"] is False and action["can_be_retried"] is False
    assert ts(action["start_date"]) == T


@pytest.mark.parametrize("ip, location", [("127.0.0.1", "Localhost"), ("::1", "Localhost"),
                                          ("192.168.1.20", "Private network"),
                                          ("172.16.5.4", "Private network"),
                                          ("8.8.8.8", "")])
async def test_location_without_a_geoip_database(api, ip, location):
    assert (await api.record(ip=ip))["location"] == location


@pytest.mark.parametrize("body, stored", [
    ('{"name": "web"}', '{"name": "web"}'),          # a string is kept as is
    ("not json at all", "not json at all"),
    ("", ""),
    (None, None),
    ({"name": "web", "target_num_containers": 3}, None),   # other JSON values are encoded
    ([1, "two"], None),
    (42, None),
    (True, None),
])
async def test_body_string_or_json_value(api, body, stored):
    action = await api.record(body=body)
    assert isinstance(action["body"], (str, type(None)))
    if stored is None and body is not None:
        assert json.loads(action["body"]) == body
    else:
        assert action["body"] == stored


@pytest.mark.parametrize("state", ["Pending", "In progress", "Success", "Failed"])
async def test_start_states(api, state):
    before = int(time.time())
    action = await api.record(state=state)
    after = int(time.time())
    assert action["state"] == state
    if state in ("Success", "Failed"):
        assert before <= ts(action["end_date"]) <= after   # default: the time of recording
    else:
        assert action["end_date"] is None


@pytest.mark.parametrize("state", ["Canceling", "Canceled", "Done", "success", ""])
async def test_refused_start_states(api, state):
    resp = await api.post("/api/audit/v1/action/", as_="producer",
                          json={"action": "Service Stop", "state": state})
    message = await error_of(resp, 400)
    assert "state" in message and "Pending" in message
    assert (await api.list())["meta"]["total_count"] == 0


async def test_end_date_with_a_final_state(api):
    action = await api.record(state="Failed", start_date=T, end_date="2014-09-17T09:00:00Z")
    assert ts(action["start_date"]) == T
    assert action["end_date"] == "Wed, 17 Sep 2014 09:00:00 +0000"


@pytest.mark.parametrize("fields, named", [
    ({"state": "In progress", "end_date": T}, "end_date"),
    ({"end_date": T}, "end_date"),
    ({"state": "Success", "start_date": T, "end_date": T - 1}, "end_date"),
])
async def test_end_date_refused(api, fields, named):
    resp = await api.post("/api/audit/v1/action/", as_="producer",
                          json={"action": "Service Stop", **fields})
    assert named in await error_of(resp, 400)
    assert (await api.list())["meta"]["total_count"] == 0


@pytest.mark.parametrize("value", [T, str(T), "Wed, 17 Sep 2014 08:26:22 +0000",
                                   "Wed, 17 Sep 2014 10:26:22 +0200", "2014-09-17T08:26:22Z",
                                   "2014-09-17T08:26:22", "2014-09-17T04:26:22-04:00"])
async def test_start_date_in_each_filter_format(api, value):
    action = await api.record(start_date=value)
    assert action["start_date"] == "Wed, 17 Sep 2014 08:26:22 +0000"


async def test_parents_build_the_object_graph(api):
    svc, stack = "/api/app/v1/service/S/", "/api/app/v1/stack/ST/"
    container = await api.record(object="/api/app/v1/container/C/", parents=[svc, stack])
    on_stack = await api.record(object=stack)
    page = await api.list(f"object={svc}&include_related=true")
    assert [a["uuid"] for a in page["objects"]] == [on_stack["uuid"], container["uuid"]]


async def test_producer_moves_any_namespace_action(api):
    action = await api.record(user="alice")
    assert (await api.set_state(action["uuid"], "Success"))["state"] == "Success"
    resp = await api.patch(f"/api/audit/v1/action/{action['uuid']}/", as_="producer",
                           json={"state": "Failed"})
    message = await error_of(resp, 400)
    assert "Success" in message and "Failed" in message


# ---------------------------------------------------------------------------- log lines

def lines_of(messages):
    return [m["log"] for m in messages]


async def test_append_strings_keeps_order_across_requests(api):
    action = await api.record()
    before = int(time.time())
    assert await api.append(action["uuid"], ["one", "two"]) == {"appended": 2}
    assert await api.append(action["uuid"], ["three", "", "fünf ✓"]) == {"appended": 3}
    after = int(time.time())
    messages = await api.read_logs(action["uuid"])
    assert lines_of(messages) == ["one", "two", "three", "", "fünf ✓"]
    for message in messages:
        assert set(message) == {"type", "log", "timestamp"} and message["type"] == "log"
        assert before <= message["timestamp"] <= after


async def test_append_log_objects(api):
    action = await api.record()
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/logs/", as_="producer",
                          json=[{"log": "pulling", "timestamp": T, "streamType": "stdout"},
                                {"log": "oops", "timestamp": T + 1, "streamType": "stderr"},
                                {"log": "no extras"}])
    assert resp.status == 201 and await resp.json() == {"appended": 3}
    assert resp.headers["X-DockerCloud-Action-URI"] == action["resource_uri"]
    messages = await api.read_logs(action["uuid"])
    assert messages[:2] == [
        {"type": "log", "log": "pulling", "timestamp": T, "streamType": "stdout"},
        {"type": "log", "log": "oops", "timestamp": T + 1, "streamType": "stderr"}]
    assert messages[2]["log"] == "no extras" and "streamType" not in messages[2]
    assert isinstance(messages[2]["timestamp"], int)


async def test_append_text_plain_one_line_each(api):
    action = await api.record()
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/logs/", as_="producer",
                          data="first\r\nsecond\n\nfourth\n",
                          headers={"Content-Type": "text/plain; charset=utf-8"})
    assert resp.status == 201, await resp.text()
    assert await resp.json() == {"appended": 4}
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/logs/", as_="producer",
                          data="no newline at the end", headers={"Content-Type": "text/plain"})
    assert await resp.json() == {"appended": 1}
    assert lines_of(await api.read_logs(action["uuid"])) == \
        ["first", "second", "", "fourth", "no newline at the end"]


async def test_append_is_all_or_nothing(api):
    action = await api.record()
    await api.append(action["uuid"], ["kept"])
    for bad, index in ((["fine", 3], 1), (["fine", {"log": "x", "timestamp": "soon"}], 1),
                       ([{"log": "fine"}, {"text": "wrong key"}], 1), (["fine", None], 1),
                       (["fine", "ok", "x" * 70_000], 2), ([{"log": "x", "streamType": 1}], 0)):
        resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/logs/", as_="producer",
                              json=bad)
        assert f"lines[{index}]" in await error_of(resp, 400)
    assert lines_of(await api.read_logs(action["uuid"])) == ["kept"]


@pytest.mark.parametrize("payload", [{"log": "not a list"}, "a string", 7])
async def test_append_needs_an_array(api, payload):
    action = await api.record()
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/logs/", as_="producer",
                          json=payload)
    assert "array" in await error_of(resp, 400)


async def test_append_to_unknown_action_is_404(api):
    resp = await api.post(f"/api/audit/v1/action/{uuidlib.uuid4()}/logs/", as_="producer",
                          json=["line"])
    await error_of(resp, 404)


@pytest.mark.parametrize("final", ["Success", "Failed", "Canceled"])
async def test_late_lines_on_final_actions_are_kept(api, final):
    action = await api.record(state="Pending")
    await api.append(action["uuid"], ["before"])
    if final == "Success":
        await api.set_state(action["uuid"], "In progress")
    await api.set_state(action["uuid"], final)
    assert await api.append(action["uuid"], ["late"]) == {"appended": 1}
    assert lines_of(await api.read_logs(action["uuid"])) == ["before", "late"]
    assert (await api.fetch(action["uuid"]))["state"] == final


async def test_append_on_a_namespaced_path(api):
    action = await api.record(user="alice")
    resp = await api.post(f"/api/audit/v1/alice/action/{action['uuid']}/logs/", as_="producer",
                          json=["namespaced"])
    assert resp.status == 201
    resp = await api.post(f"/api/audit/v1/bob/action/{action['uuid']}/logs/", as_="producer",
                          json=["wrong namespace"])
    await error_of(resp, 404)
    assert lines_of(await api.read_logs(action["uuid"], as_="alice")) == ["namespaced"]


def test_new_uuids_are_random_version_4_uuids():
    from auditd.model.actions import new_uuid
    made = [new_uuid() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuidlib.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuidlib.RFC_4122, text)
    # every hex digit outside the fixed version and variant bits varies
    for position in (0, 9, 15, 20, 35):
        assert len({text[position] for text in made}) == 16


def test_a_forked_process_never_repeats_its_parents_uuids():
    import os

    from auditd.model.actions import new_uuid
    new_uuid()          # the pool of random bytes is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child
        os.write(write, new_uuid().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 64).decode() != new_uuid()
