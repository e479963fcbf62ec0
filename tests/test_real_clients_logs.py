"""`docker-cloud action logs` and the SDK's Action.logs against a real `auditd serve` (issue 3).

The follow tests read the client's stdout as it prints: lines are appended over HTTP only after the
history has been printed (so the client is connected), and the client must exit by itself once the
action is moved to a final state.
"""
import json
import re
import threading

import pytest

from realclients import real_clients, rig  # noqa: F401 (fixtures)


@pytest.fixture
def alice(rig):
    rig.user("alice")
    return rig


def lines(first: int, last: int) -> list[str]:
    return [f"step {i}: pulling layer {i:04x} \u2713" for i in range(first, last + 1)]


FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def access_log(rig, path: str) -> list[dict]:
    """The server's access-log entries for `path`: its key=value fields (quoted values decoded)."""
    entries = []
    for line in rig.server.stderr_lines:
        fields = {k: json.loads(v) if v.startswith('"') else v for k, v in FIELD.findall(line)}
        if fields.get("path") == path and "status" in fields:
            entries.append(fields)
    return entries


def test_cli_logs_tail_prints_exactly_the_last_lines(alice):
    action = alice.record(user="alice", state="In progress")
    alice.append(action["uuid"], lines(1, 12))

    out = alice.cli_ok("alice", "action", "logs", "-t", "5", action["uuid"])
    assert out.splitlines() == lines(8, 12)
    # Without -t the server's default (300) applies; by short id too.
    assert alice.cli_ok("alice", "action", "logs", action["uuid"][:8]).splitlines() == lines(1, 12)
    alice.append(action["uuid"], lines(13, 350))
    assert alice.cli_ok("alice", "action", "logs", action["uuid"]).splitlines() == lines(51, 350)


def test_cli_logs_follow_prints_history_then_live_lines_and_exits_on_success(alice):
    action = alice.record(user="alice", state="In progress")
    alice.append(action["uuid"], lines(1, 3))

    follower = alice.start_cli("alice", "action", "logs", "-f", action["uuid"])
    assert follower.take(3) == lines(1, 3)                  # connected: the history is out

    alice.append(action["uuid"], lines(4, 5))
    assert follower.take(2) == lines(4, 5)
    alice.append(action["uuid"], lines(6, 6))
    assert follower.next_line() == lines(6, 6)[0]

    alice.append(action["uuid"], lines(7, 8))
    alice.set_state(action["uuid"], "Success")
    rc, rest = follower.finish()
    assert (rc, rest) == (0, lines(7, 8))                   # the last lines, then the close
    assert "".join(follower.stderr) == ""


def test_cli_logs_follow_of_a_finished_action_prints_its_lines_and_exits(alice):
    action = alice.record(user="alice", state="Failed")
    alice.append(action["uuid"], lines(1, 4))
    result = alice.cli("alice", "action", "logs", "-f", action["uuid"])
    assert (result.returncode, result.stdout.splitlines(), result.stderr) == (0, lines(1, 4), "")


def test_cli_logs_follow_ends_when_the_action_is_canceled_with_the_cli(alice):
    action = alice.record(user="alice", state="Pending")
    alice.append(action["uuid"], lines(1, 2))
    follower = alice.start_cli("alice", "action", "logs", "-f", action["uuid"][:8])
    assert follower.take(2) == lines(1, 2)
    assert alice.cli_ok("alice", "action", "cancel", action["uuid"]) == ""    # Pending: Canceled
    assert follower.finish() == (0, [])
    assert alice.get(action["uuid"])["state"] == "Canceled"


def test_cli_logs_follow_while_lines_arrive_prints_each_once_in_order(alice):
    """A producer appends batches all the while the client starts, connects and reads its
    history, and on after the first line is printed: wherever the boundary between history and
    live lines falls, every line is printed once, in order."""
    action = alice.record(user="alice", state="In progress")
    printing = threading.Event()
    appended, errors = [], []

    def produce():
        try:
            after_first = 0
            while after_first < 20 and len(appended) < 20000:
                batch = lines(len(appended) + 1, len(appended) + 5)
                alice.append(action["uuid"], batch)
                appended.extend(batch)
                after_first += printing.is_set()
        except Exception as err:    # noqa: BLE001 - reported by the test thread below
            errors.append(err)
            printing.set()

    producer = threading.Thread(target=produce)
    producer.start()
    follower = alice.start_cli("alice", "action", "logs", "-f", "-t", "100000", action["uuid"])
    try:
        printed = [follower.next_line()]
    finally:
        printing.set()
        producer.join(timeout=120)
    assert not producer.is_alive() and errors == []
    printed += follower.take(len(appended) - 1)
    assert printed == appended
    alice.set_state(action["uuid"], "Success")
    assert follower.finish() == (0, [])


SDK_FOLLOW = """
import json, sys

def show(message):
    msg = json.loads(message)
    if msg.get("type") == "log":
        sys.stdout.write(msg["log"] + u"\\n")
        sys.stdout.flush()

dockercloud.Action.fetch(sys.argv[1]).logs(None, True, show)
sys.stdout.write("-- stream closed --\\n")
"""


def test_sdk_follow_through_the_namespaced_path(alice):
    alice.user("carol")
    alice.org("acme", "alice", "carol")
    action = alice.record(user="carol", namespace="acme", state="In progress")
    alice.append(action["uuid"], lines(1, 2))

    follower = alice.start_sdk("alice", SDK_FOLLOW, action["uuid"],
                               env={"DOCKERCLOUD_NAMESPACE": "acme"})
    assert follower.take(2) == lines(1, 2)
    alice.append(action["uuid"], lines(3, 5))
    assert follower.take(3) == lines(3, 5)
    alice.append(action["uuid"], lines(6, 6))
    alice.set_state(action["uuid"], "Success")
    rc, rest = follower.finish()
    assert (rc, rest, "".join(follower.stderr)) == (0, lines(6, 6) + ["-- stream closed --"], "")

    served = access_log(alice, f"/api/audit/v1/acme/action/{action['uuid']}/logs/")
    assert [entry["status"] for entry in served] == ["101"], served


def test_sdk_logs_in_a_namespace_the_user_cannot_see_gets_nothing(alice):
    alice.user("bob")
    action = alice.record(user="bob", state="Success")
    alice.append(action["uuid"], lines(1, 3))
    # alice cannot see bob's namespace: the handshake is refused (404) before the upgrade, so the
    # client prints no line (it reports handshake failures silently) and ends.
    code = SDK_FOLLOW.replace("dockercloud.Action.fetch(sys.argv[1])",
                              "dockercloud.Action(uuid=sys.argv[1])")
    follower = alice.start_sdk("alice", code, action["uuid"],
                               env={"DOCKERCLOUD_NAMESPACE": "bob"})
    rc, rest = follower.finish()
    assert (rc, rest) == (0, ["-- stream closed --"])
    served = access_log(alice, f"/api/audit/v1/bob/action/{action['uuid']}/logs/")
    assert [entry["status"] for entry in served] == ["404"], served
    # Through the CLI bob's action cannot even be resolved.
    result = alice.cli("alice", "action", "logs", action["uuid"])
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.strip() == f"Cannot find an action with the identifier '{action['uuid']}'"
