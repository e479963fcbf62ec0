"""One action: its wire shape (section 2), the state machine (section 3), cancel and retry (5)."""
import re
import uuid as uuidlib
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest

from conftest import error_of

ACTION_KEYS = {
    "resource_uri": str, "uuid": str, "object": str, "action": str, "method": str, "path": str,
    "user": str, "user_agent": str, "start_date": str, "end_date": (str, type(None)),
    "state": str, "ip": str, "location": str, "is_user_action": bool, "can_be_canceled": bool,
    "can_be_retried": bool, "body": (str, type(None)),
}
DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
                     r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
                     r"\d\d:\d\d:\d\d \+0000$")
URI_HEADER = "X-DockerCloud-Action-URI"
STATES = ("Pending", "In progress", "Canceling", "Canceled", "Success", "Failed")
FINAL = {"Success", "Failed", "Canceled"}
# CONTRACT.md section 3, written out here so that a wrong table in the code fails these tests.
ALLOWED = {
    ("Pending", "In progress"), ("Pending", "Canceling"), ("Pending", "Canceled"),
    ("Pending", "Failed"),
    ("In progress", "Success"), ("In progress", "Failed"), ("In progress", "Canceling"),
    ("Canceling", "Canceled"), ("Canceling", "Success"), ("Canceling", "Failed"),
}


def assert_wire_action(action: dict):
    """Exactly the 17 keys with their JSON types, dates in the contract's format."""
    assert set(action) == set(ACTION_KEYS), set(action) ^ set(ACTION_KEYS)
    for key, kind in ACTION_KEYS.items():
        assert isinstance(action[key], kind), (key, action[key])
    assert action["resource_uri"] == f"/api/audit/v1/action/{action['uuid']}/"
    parsed = uuidlib.UUID(action["uuid"])
    assert parsed.version == 4 and str(parsed) == action["uuid"]   # lowercase, canonical
    assert DATE_RE.match(action["start_date"]), action["start_date"]
    if action["end_date"] is not None:
        assert DATE_RE.match(action["end_date"]), action["end_date"]
    assert action["state"] in STATES
    assert not action["can_be_canceled"] or action["state"] in ("Pending", "In progress")
    assert not action["can_be_retried"] or action["state"] in FINAL


async def in_state(api, state: str, **fields) -> dict:
    """A new action in `state`, reached the way a producer would reach it."""
    if state in ("Pending", "In progress", "Success", "Failed"):
        return await api.record(state=state, **fields)
    if state == "Canceling":
        action = await api.record(state="In progress", **fields)
        return await api.set_state(action["uuid"], "Canceling")
    action = await api.record(state="Pending", **fields)
    return await api.set_state(action["uuid"], "Canceled")


# ---------------------------------------------------------------------------- the Action object

async def test_action_object_has_exactly_the_contract_keys(api):
    recorded = await api.record(action="Service Redeploy", object="/api/app/v1/service/S/",
                                method="POST", path="/api/app/v1/service/S/redeploy/",
                                user="alice", body={"reuse_volumes": False},
                                start_date="2014-09-17T08:26:22Z", state="Success",
                                end_date=1410942400)
    fetched = await api.fetch(recorded["uuid"])
    listed = (await api.list())["objects"][0]
    for action in (recorded, fetched, listed):
        assert_wire_action(action)
    assert recorded == fetched == listed
    assert fetched["start_date"] == "Wed, 17 Sep 2014 08:26:22 +0000"
    assert parsedate_to_datetime(fetched["end_date"]) == \
        datetime.fromtimestamp(1410942400, timezone.utc)
    assert fetched["body"] == '{"reuse_volumes":false}'


async def test_defaults_are_strings_never_null(api):
    action = await api.fetch((await api.record())["uuid"])
    assert_wire_action(action)
    for key in ("object", "method", "path", "ip", "location", "user_agent"):
        assert isinstance(action[key], str)
    assert action["end_date"] is None and action["body"] is None


@pytest.mark.parametrize("state, cancelable, retriable, can_cancel, can_retry", [
    ("Pending", True, True, True, False),
    ("In progress", True, True, True, False),
    ("In progress", False, True, False, False),
    ("Canceling", True, True, False, False),
    ("Success", True, True, False, True),
    ("Failed", True, False, False, False),
    ("Canceled", True, True, False, True),
    ("Failed", False, True, False, True),
])
async def test_can_be_flags_combine_flag_and_state(api, state, cancelable, retriable, can_cancel,
                                                  can_retry):
    action = await in_state(api, state, can_be_canceled=cancelable, can_be_retried=retriable)
    fetched = await api.fetch(action["uuid"])
    assert (fetched["can_be_canceled"], fetched["can_be_retried"]) == (can_cancel, can_retry)


async def test_get_by_uuid_any_case_and_without_trailing_slash(api):
    action = await api.record()
    resp = await api.get(f"/api/audit/v1/action/{action['uuid']}")
    assert resp.status == 200 and (await resp.json()) == action
    resp = await api.get(f"/api/audit/v1/action/{action['uuid'].upper()}/")
    assert resp.status == 200 and (await resp.json())["uuid"] == action["uuid"]


async def test_get_unknown_action_is_404(api):
    message = await error_of(await api.get(f"/api/audit/v1/action/{uuidlib.uuid4()}/"), 404)
    assert "action" in message.lower()


# ---------------------------------------------------------------------------- state moves

async def test_every_state_move(api):
    """All 36 (from, to) pairs, each on a fresh action; every misbehaving pair is reported."""
    problems = []
    for start in STATES:
        for target in STATES:
            try:
                await _check_move(api, start, target)
            except AssertionError as err:
                problems.append(f"{start} -> {target}: {err}")
    assert not problems, "\n".join(problems)


async def _check_move(api, start, target):
    action = await in_state(api, start)
    before = await api.fetch(action["uuid"])
    resp = await api.patch(f"/api/audit/v1/action/{action['uuid']}/", json={"state": target})
    if (start, target) in ALLOWED:
        assert resp.status == 200, await resp.text()
        assert resp.headers[URI_HEADER] == before["resource_uri"]
        moved = await resp.json()
        assert_wire_action(moved)
        assert moved["state"] == target
        assert (moved["end_date"] is not None) == (target in FINAL), moved["end_date"]
        assert await api.fetch(action["uuid"]) == moved
        unchanged = {k for k in before if k not in
                     ("state", "end_date", "can_be_canceled", "can_be_retried")}
        assert {k: moved[k] for k in unchanged} == {k: before[k] for k in unchanged}
    else:
        message = await error_of(resp, 400)
        assert start in message and target in message, message
        assert await api.fetch(action["uuid"]) == before, "a refused move changed the action"


async def test_end_date_is_set_only_when_final(api):
    action = await api.record(state="Pending")
    for state in ("In progress", "Canceling"):
        assert (await api.set_state(action["uuid"], state))["end_date"] is None
    done = await api.set_state(action["uuid"], "Success")
    end = parsedate_to_datetime(done["end_date"])
    assert end >= parsedate_to_datetime(done["start_date"])
    assert abs((datetime.now(timezone.utc) - end).total_seconds()) < 3600


async def test_state_move_is_refused_for_unknown_and_invisible_actions(api):
    resp = await api.patch(f"/api/audit/v1/action/{uuidlib.uuid4()}/", json={"state": "Success"})
    await error_of(resp, 404)


# ---------------------------------------------------------------------------- cancel

@pytest.mark.parametrize("state, after", [("Pending", "Canceled"), ("In progress", "Canceling")])
async def test_cancel_allowed(api, state, after):
    action = await in_state(api, state, user="alice")
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/cancel/", as_="alice")
    assert resp.status == 202, await resp.text()
    assert resp.headers[URI_HEADER] == action["resource_uri"]
    canceled = await resp.json()
    assert_wire_action(canceled)
    assert canceled["uuid"] == action["uuid"] and canceled["state"] == after
    assert canceled["can_be_canceled"] is False
    assert (canceled["end_date"] is not None) == (after in FINAL)
    assert await api.fetch(action["uuid"]) == canceled


async def test_canceling_is_finished_by_the_producer(api):
    action = await in_state(api, "In progress", user="alice")
    await api.post(f"/api/audit/v1/action/{action['uuid']}/cancel/", as_="alice")
    done = await api.set_state(action["uuid"], "Canceled")
    assert done["state"] == "Canceled" and done["end_date"] is not None
    assert done["can_be_retried"] is True


@pytest.mark.parametrize("state", ["Canceling", "Canceled", "Success", "Failed"])
async def test_cancel_refused_in_state(api, state):
    action = await in_state(api, state, user="alice")
    before = await api.fetch(action["uuid"])
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/cancel/", as_="alice")
    message = await error_of(resp, 400)
    assert message == f"Action {action['uuid']} cannot be canceled: it is {state}"
    assert await api.fetch(action["uuid"]) == before


@pytest.mark.parametrize("state", ["Pending", "In progress"])
async def test_cancel_refused_by_the_flag(api, state):
    action = await in_state(api, state, user="alice", can_be_canceled=False)
    before = await api.fetch(action["uuid"])
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/cancel/", as_="alice")
    message = await error_of(resp, 400)
    assert action["uuid"] in message and "cancel" in message
    assert await api.fetch(action["uuid"]) == before


async def test_cancel_unknown_or_foreign_action_is_404(api):
    foreign = await api.record(user="bob")
    for uuid in (str(uuidlib.uuid4()), foreign["uuid"]):
        await error_of(await api.post(f"/api/audit/v1/action/{uuid}/cancel/", as_="alice"), 404)
    assert (await api.fetch(foreign["uuid"]))["state"] == "In progress"


# ---------------------------------------------------------------------------- retry

@pytest.mark.parametrize("state", ["Success", "Failed", "Canceled"])
async def test_retry_records_a_new_action_for_the_caller(api, state):
    original = await in_state(
        api, state, user="carol", namespace="acme", action="Service Redeploy", method="POST",
        path="/api/app/v1/acme/service/S/redeploy/", object="/api/app/v1/acme/service/S/",
        body='{"reuse_volumes": true}', is_user_action=False, can_be_canceled=False,
        parents=["/api/app/v1/acme/stack/ST/"], ip="10.1.2.3", user_agent="producer/1.0")
    before = await api.fetch(original["uuid"])
    resp = await api.post(f"/api/audit/v1/action/{original['uuid']}/retry/", as_="alice",
                          headers={"User-Agent": "docker-cloud/1.0.9"})
    assert resp.status == 202, await resp.text()
    retried = await resp.json()
    assert_wire_action(retried)
    assert resp.headers[URI_HEADER] == retried["resource_uri"] != original["resource_uri"]
    assert retried["uuid"] != original["uuid"]
    for key in ("action", "method", "path", "object", "body"):
        assert retried[key] == original[key], key
    assert retried["user"] == "alice"
    assert retried["user_agent"] == "docker-cloud/1.0.9"
    assert retried["ip"] == "127.0.0.1" and retried["location"] == "Localhost"
    assert retried["state"] == "Pending" and retried["end_date"] is None
    assert retried["is_user_action"] is True
    assert retried["can_be_canceled"] is False          # the original's flag is kept
    assert await api.fetch(retried["uuid"]) == retried
    assert await api.fetch(original["uuid"]) == before    # the original is unchanged
    # in the original's namespace: the other org member sees it, an outsider does not
    assert (await api.fetch(retried["uuid"], as_="carol"))["uuid"] == retried["uuid"]
    await error_of(await api.get(f"/api/audit/v1/action/{retried['uuid']}/", as_="bob"), 404)
    # and with the original's parents: it is related to the stack
    related = await api.list("object=/api/app/v1/stack/ST/&include_related=true")
    assert {a["uuid"] for a in related["objects"]} == {original["uuid"], retried["uuid"]}


async def test_retried_action_keeps_the_retriable_flag_and_can_be_retried_again(api):
    original = await in_state(api, "Failed", user="alice")
    first = await (await api.post(f"/api/audit/v1/action/{original['uuid']}/retry/",
                                  as_="alice")).json()
    await api.set_state(first["uuid"], "Failed")
    resp = await api.post(f"/api/audit/v1/action/{first['uuid']}/retry/", as_="alice")
    assert resp.status == 202
    page = await api.list("user=alice", as_="alice")
    assert len(page["objects"]) == 3


@pytest.mark.parametrize("state", ["Pending", "In progress", "Canceling"])
async def test_retry_refused_in_state(api, state):
    action = await in_state(api, state, user="alice")
    before = await api.fetch(action["uuid"])
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/retry/", as_="alice")
    message = await error_of(resp, 400)
    assert action["uuid"] in message and state in message
    assert await api.fetch(action["uuid"]) == before
    assert (await api.list())["meta"]["total_count"] == 1


@pytest.mark.parametrize("state", ["Success", "Failed", "Canceled"])
async def test_retry_refused_by_the_flag(api, state):
    action = await in_state(api, state, user="alice", can_be_retried=False)
    resp = await api.post(f"/api/audit/v1/action/{action['uuid']}/retry/", as_="alice")
    message = await error_of(resp, 400)
    assert action["uuid"] in message and "retr" in message
    assert (await api.list())["meta"]["total_count"] == 1


async def test_retry_unknown_or_foreign_action_is_404(api):
    foreign = await in_state(api, "Failed", user="bob")
    for uuid in (str(uuidlib.uuid4()), foreign["uuid"]):
        await error_of(await api.post(f"/api/audit/v1/action/{uuid}/retry/", as_="alice"), 404)
    assert (await api.list())["meta"]["total_count"] == 1
