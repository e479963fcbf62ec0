"""The real docker-cloud CLI 1.0.9 and python-dockercloud SDK 1.0.12 against a real `auditd serve`:
every REST operation on actions (issue 2). Needs Python 2.7; skips with the reason where there is
none.
"""
import json
import time
import uuid as uuidlib

import pytest

from realclients import parse_table, real_clients, rig  # noqa: F401 (fixtures)

HOUR, DAY = 3600, 86400
COLUMNS = ["UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION"]


def ago(seconds: int) -> int:
    """Unix seconds `seconds` before now (the producer API takes Unix seconds for dates)."""
    return int(time.time()) - seconds


def service_uri(namespace: str = "") -> str:
    return f"/api/app/v1/{namespace + '/' if namespace else ''}service/{uuidlib.uuid4()}/"


@pytest.fixture
def alice(rig):
    rig.user("alice")
    return rig


def record_four(rig) -> dict:
    """Four of alice's actions recorded in an order that is not their start order, plus one of
    bob's. Returns them by letter; newest first they are C, D, A, B."""
    rig.user("bob")
    acts = {}
    acts["A"] = rig.record(user="alice", action="Service Create", object=service_uri(),
                           start_date=ago(5 * HOUR), state="Success", end_date=ago(4 * HOUR),
                           ip="10.1.2.3")
    acts["C"] = rig.record(user="alice", action="Node Terminate", object="",
                           start_date=ago(30 * 60), state="Failed", end_date=ago(10 * 60))
    acts["B"] = rig.record(user="alice", action="Cluster Create",
                           object="/api/infra/v1/alice/cluster/" + str(uuidlib.uuid4()) + "/",
                           start_date=ago(2 * DAY), state="In progress")
    acts["D"] = rig.record(user="alice", action="Stack Redeploy", object=service_uri("alice"),
                           start_date=ago(3 * HOUR), state="Pending", ip="8.8.8.8")
    acts["bob"] = rig.record(user="bob", action="Service Scale", start_date=ago(60))
    return acts


# ---------------------------------------------------------------------------- action ls

def test_cli_ls_prints_columns_newest_first_with_humanized_dates(alice):
    acts = record_four(alice)
    names, rows = parse_table(alice.cli_ok("alice", "action", "ls"))
    assert names == COLUMNS
    expected = [
        # uuid[:8], ACTION, START, END, TARGET (the object URI minus /api/<sub>/v1/), IP, LOCATION
        [acts["C"]["uuid"][:8], "Node Terminate", "30 minutes ago", "10 minutes ago", "",
         "127.0.0.1", "Localhost"],
        [acts["D"]["uuid"][:8], "Stack Redeploy", "3 hours ago", "",
         acts["D"]["object"].split("/v1/")[1].strip("/"), "8.8.8.8", ""],
        [acts["A"]["uuid"][:8], "Service Create", "5 hours ago", "4 hours ago",
         acts["A"]["object"].split("/v1/")[1].strip("/"), "10.1.2.3", "Private network"],
        [acts["B"]["uuid"][:8], "Cluster Create", "2 days ago", "",
         acts["B"]["object"].split("/v1/")[1].strip("/"), "127.0.0.1", "Localhost"],
    ]
    assert [[row[name] for name in COLUMNS] for row in rows] == expected
    assert expected[1][4].startswith("alice/service/")   # a namespaced target keeps its namespace


def test_cli_ls_quiet_prints_full_uuids_newest_first(alice):
    acts = record_four(alice)
    out = alice.cli_ok("alice", "action", "ls", "-q")
    assert out.splitlines() == [acts[k]["uuid"] for k in "CDAB"]


def test_cli_ls_last_n_prints_exactly_the_n_newest(alice):
    # 30 actions, one a minute, recorded oldest first: the newest are the last recorded.
    uuids = [alice.record(user="alice", start_date=ago((30 - i) * 60))["uuid"] for i in range(30)]
    newest_first = uuids[::-1]

    out = alice.cli_ok("alice", "action", "ls", "-l", "3")
    names, rows = parse_table(out)
    assert [row["UUID"] for row in rows] == [u[:8] for u in newest_first[:3]]
    assert [row["START"] for row in rows] == ["1 minute ago", "2 minutes ago", "3 minutes ago"]

    # More than one page (the server's default page is 25): the CLI pages on and cuts at 28.
    assert alice.cli_ok("alice", "action", "ls", "-q", "-l", "28").splitlines() \
        == newest_first[:28]
    # The default is the last 25.
    assert alice.cli_ok("alice", "action", "ls", "-q").splitlines() == newest_first[:25]


def test_cli_ls_with_no_actions_prints_the_empty_table(alice):
    out = alice.cli_ok("alice", "action", "ls")
    assert out.split("\n")[0].split() == ["UUID", "ACTION", "START", "END", "TARGET"]
    assert out.strip().count("\n") == 0
    assert alice.cli_ok("alice", "action", "ls", "-q") == ""


# ---------------------------------------------------------------------------- inspect

def inspected(stdout: str) -> dict:
    return json.loads(stdout)


def test_cli_inspect_by_full_uuid_prints_the_action(alice):
    acts = record_four(alice)
    action = alice.get(acts["A"]["uuid"], as_="alice")
    shown = inspected(alice.cli_ok("alice", "action", "inspect", action["uuid"]))
    # The SDK adds dockercloud_action_uri (empty for a GET) to what the server sent.
    assert shown == dict(action, dockercloud_action_uri="")
    assert shown["start_date"].endswith(" +0000")


def test_cli_inspect_by_short_uuid_prints_the_action(alice):
    acts = record_four(alice)
    action = alice.get(acts["D"]["uuid"], as_="alice")
    shown = inspected(alice.cli_ok("alice", "action", "inspect", action["uuid"][:8]))
    assert shown == dict(action, dockercloud_action_uri="")


def test_cli_inspect_of_an_unknown_id_fails_with_the_clients_message(alice):
    record_four(alice)
    missing = str(uuidlib.uuid4())
    result = alice.cli("alice", "action", "inspect", missing)
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.strip() == f"Cannot find an action with the identifier '{missing}'"


# ---------------------------------------------------------------------------- cancel and retry

def test_cli_cancel_moves_the_action_and_prints_nothing(alice):
    pending = alice.record(user="alice", state="Pending")
    running = alice.record(user="alice", state="In progress")

    assert alice.cli_ok("alice", "action", "cancel", pending["uuid"]) == ""
    assert alice.cli_ok("alice", "action", "cancel", running["uuid"][:8]) == ""

    after = alice.get(pending["uuid"], as_="alice")
    assert (after["state"], after["can_be_canceled"], after["can_be_retried"]) \
        == ("Canceled", False, True)
    assert after["end_date"] is not None
    # In progress only asks for the cancel; the producer finishes it.
    assert alice.get(running["uuid"], as_="alice")["state"] == "Canceling"


def test_cli_cancel_of_a_finished_action_shows_the_servers_error(alice):
    done = alice.record(user="alice", state="Success")
    result = alice.cli("alice", "action", "cancel", done["uuid"])
    assert (result.returncode, result.stdout) == (3, "")
    url = f"{alice.server.url}/api/audit/v1/action/{done['uuid']}/cancel/"
    assert result.stderr.startswith(f"Status 400 (POST {url}). Response: ")
    error = json.loads(result.stderr.split("Response: ", 1)[1])
    assert error == {"error": f"Action {done['uuid']} cannot be canceled: it is Success"}
    assert alice.get(done["uuid"])["state"] == "Success"


def test_cli_retry_records_a_new_pending_action(alice):
    original = alice.record(user="alice", action="Service Redeploy", object=service_uri(),
                            state="Failed", method="POST", path="/api/app/v1/service/x/redeploy/",
                            start_date=ago(HOUR))

    assert alice.cli_ok("alice", "action", "retry", original["uuid"][:8]) == ""

    listed = alice.list_actions(as_="alice")["objects"]
    assert len(listed) == 2
    new = listed[0]                    # newest first: the retry
    assert new["uuid"] != original["uuid"]
    assert {k: new[k] for k in ("action", "object", "method", "path", "state", "user")} == \
        {"action": "Service Redeploy", "object": original["object"], "method": "POST",
         "path": original["path"], "state": "Pending", "user": "alice"}
    assert "python-dockercloud/1.0.12" in new["user_agent"]
    assert alice.get(original["uuid"], as_="alice") == original     # the original is unchanged


# ---------------------------------------------------------------------------- auth and isolation

def test_cli_with_a_wrong_key_prints_not_authorized(alice):
    acts = record_four(alice)
    wrong = alice.keys["alice"][:-4] + "XXXX"
    for args in (("action", "ls"), ("action", "inspect", acts["A"]["uuid"][:8]),
                 ("action", "cancel", acts["D"]["uuid"][:8])):
        result = alice.cli("alice", *args, key=wrong)
        assert (result.returncode, result.stdout, result.stderr.strip()) == \
            (3, "", "Not authorized"), args
    assert alice.get(acts["D"]["uuid"])["state"] == "Pending"
    # An unknown user is refused the same way.
    result = alice.cli("mallory", "action", "ls", key=alice.keys["alice"])
    assert (result.returncode, result.stderr.strip()) == (3, "Not authorized")


def test_a_second_user_sees_none_of_the_first_users_actions(alice):
    acts = record_four(alice)
    bobs = alice.cli_ok("bob", "action", "ls", "-q").splitlines()
    assert bobs == [acts["bob"]["uuid"]]

    target = acts["D"]      # alice's, Pending: cancelable by her
    result = alice.cli("bob", "action", "inspect", target["uuid"])
    assert (result.returncode, result.stdout, result.stderr.strip()) == \
        (3, "", f"Cannot find an action with the identifier '{target['uuid']}'")
    result = alice.cli("bob", "action", "inspect", target["uuid"][:8])
    assert (result.returncode, result.stdout, result.stderr.strip()) == \
        (3, "", f"Cannot find an action cluster with the identifier '{target['uuid'][:8]}'")
    for verb in ("cancel", "retry"):
        result = alice.cli("bob", "action", verb, target["uuid"])
        assert result.returncode == 3
    assert alice.get(target["uuid"]) == target
    assert alice.list_actions(as_="alice")["meta"]["total_count"] == 4


# ---------------------------------------------------------------------------- the SDK

SDK_LIST = """
import json, sys
filters = json.loads(sys.argv[1])
limit = filters.pop("limit", None)
found = dockercloud.Action.list(limit=limit, **filters)
print(json.dumps([a.uuid for a in found]))
"""


def test_sdk_list_pages_through_every_action_with_filters(alice):
    # 60 actions, one a minute; every 6th Failed, every 4th a "Service Redeploy".
    acts = []
    for i in range(60):
        acts.append(alice.record(user="alice", start_date=ago((60 - i) * 60),
                                 state="Failed" if i % 6 == 0 else "Success",
                                 action="Service Redeploy" if i % 4 == 0 else "Service Create"))
    newest_first = acts[::-1]

    def sdk_list(**filters):
        return alice.sdk_json("alice", SDK_LIST, json.dumps(filters))

    assert sdk_list() == [a["uuid"] for a in newest_first]                 # 3 pages
    success = [a["uuid"] for a in newest_first if a["state"] == "Success"]
    assert len(success) == 50
    assert sdk_list(state="Success") == success                            # 2 pages
    assert sdk_list(state="Failed") == [a["uuid"] for a in newest_first if a["state"] == "Failed"]
    assert sdk_list(state="Success", action="Service Create") == \
        [a["uuid"] for a in newest_first
         if a["state"] == "Success" and a["action"] == "Service Create"]
    assert sdk_list(order_by="start_date") == [a["uuid"] for a in acts]
    assert sdk_list(limit=30) == [a["uuid"] for a in newest_first[:30]]
    oldest = acts[0]
    assert sdk_list(start_date__lte=oldest["start_date"]) == [oldest["uuid"]]


SDK_FETCH = """
import json, sys
action = dockercloud.Action.fetch(sys.argv[1])
print(json.dumps(action.get_all_attributes()))
"""


def test_sdk_fetch_loads_every_key(alice):
    acts = record_four(alice)
    for key in "AB":
        fetched = alice.sdk_json("alice", SDK_FETCH, acts[key]["uuid"])
        assert fetched == dict(alice.get(acts[key]["uuid"]), dockercloud_action_uri="")


SDK_OPERATE = """
import json, sys
action = dockercloud.Action.fetch(sys.argv[1])
done = getattr(action, sys.argv[2])()
print(json.dumps({"returned": done, "after": action.get_all_attributes()}))
"""


def test_sdk_cancel_updates_the_object_and_the_server(alice):
    running = alice.record(user="alice", state="In progress")
    out = alice.sdk_json("alice", SDK_OPERATE, running["uuid"], "cancel")
    assert out["returned"] is True
    assert (out["after"]["uuid"], out["after"]["state"]) == (running["uuid"], "Canceling")
    assert out["after"]["dockercloud_action_uri"] == f"/api/audit/v1/action/{running['uuid']}/"
    assert alice.get(running["uuid"])["state"] == "Canceling"


def test_sdk_retry_turns_the_object_into_the_new_action(alice):
    failed = alice.record(user="alice", state="Failed", action="Service Redeploy",
                          object=service_uri())
    out = alice.sdk_json("alice", SDK_OPERATE, failed["uuid"], "retry")
    assert out["returned"] is True
    new = out["after"]
    assert new["uuid"] != failed["uuid"]
    assert new["dockercloud_action_uri"] == f"/api/audit/v1/action/{new['uuid']}/"
    assert dict(alice.get(new["uuid"]), dockercloud_action_uri=new["dockercloud_action_uri"]) \
        == new
    assert (new["state"], new["action"], new["object"], new["user"]) == \
        ("Pending", "Service Redeploy", failed["object"], "alice")
    assert alice.get(failed["uuid"]) == failed


def test_sdk_refused_cancel_raises_the_servers_error(alice):
    done = alice.record(user="alice", state="Success")
    result = alice.sdk("alice", "import sys\ndockercloud.Action.fetch(sys.argv[1]).cancel()",
                       done["uuid"])
    assert result.returncode == 1
    assert "dockercloud.api.exceptions.ApiError: Status 400" in result.stderr
    assert f"Action {done['uuid']} cannot be canceled: it is Success" in result.stderr
