"""Forwarding end to end: a real `auditd serve` with [[forward]] sinks, and real receivers in the
test process. Every event arrives at least once, in order, with its id and the Action JSON as it
was after it: across a receiver answering 500 and then refusing connections, across a SIGKILL of
auditd, with filters, and over syslog."""
import re
import signal

import json

from forward_helpers import (Auditd, Receiver, SyslogReceiver, SyslogTcpReceiver, sink_toml, until,
                             until_true)

TOKEN = "Bearer s3cret-t0ken-never-shown"
WIRE_KEYS = {"resource_uri", "uuid", "object", "action", "method", "path", "user", "user_agent",
             "start_date", "end_date", "state", "ip", "location", "is_user_action",
             "can_be_canceled", "can_be_retried", "body"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def _workload(auditd: Auditd, n: int = 8) -> dict:
    """Records, log lines, state changes, a cancel and a retry; the actions as the API has
    them at the end, by uuid."""
    made = [await auditd.record(namespace="acme" if i % 2 else "admin", state="Pending",
                                object=f"/api/app/v1/service/{i}/") for i in range(n)]
    base = "/api/audit/v1/action/"
    await auditd.call("POST", f"{base}{made[0]['uuid']}/logs/", ["one", "two"], 201)
    await auditd.call("PATCH", f"{base}{made[0]['uuid']}/", {"state": "In progress"}, 200)
    await auditd.call("PATCH", f"{base}{made[0]['uuid']}/", {"state": "Success"}, 200)
    await auditd.call("POST", f"{base}{made[0]['uuid']}/logs/", ["late"], 201)
    await auditd.call("POST", f"{base}{made[1]['uuid']}/cancel/", None, 202)
    retried = await auditd.call("POST", f"{base}{made[0]['uuid']}/retry/", None, 202)
    uuids = [a["uuid"] for a in made] + [retried["uuid"]]
    return {u: await auditd.call("GET", f"{base}{u}/", status=200) for u in uuids}


def _in_order_without_gaps(ids: list[int], head: int):
    """Every id from 0 to head - 1 arrived; duplicates only as a repeated run (a batch sent
    again), and the first arrivals in increasing order."""
    assert set(ids) == set(range(head)), sorted(set(range(head)) ^ set(ids))
    first = list(dict.fromkeys(ids))
    assert first == sorted(first)


async def test_every_event_arrives_once_in_order_with_the_action_as_after_it(tmp_path):
    receiver = await Receiver().start()
    auditd = await Auditd(tmp_path, sink_toml(siem={
        "url": receiver.url(), "headers": {"Authorization": TOKEN}, "batch_size": 7,
        "start": "beginning"})).start()
    try:
        final = await _workload(auditd)
        head = await auditd.head()
        await until(lambda: len(receiver.ids()) >= head, f"{head} events at the receiver")
        assert receiver.ids() == list(range(head))       # no failure, so no repeat either
        assert all(len(batch) <= 7 for batch in receiver.batches["ingest"])
        assert {h["Authorization"] for h in receiver.headers} == {TOKEN}
        assert {h["Content-Type"] for h in receiver.headers} == {"application/x-ndjson"}

        events = receiver.events()
        last = {}
        for event in events:
            assert ISO.match(event["time"]), event
            assert event["action"] is None or set(event["action"]) == WIRE_KEYS
            if event["type"] in ("state", "cancel"):
                assert event["action"]["state"] == event["event"]["to"]
            last[event["uuid"]] = event
        # each action's last event carries it exactly as the API shows it now
        assert {u: e["action"] for u, e in last.items()} == final
        assert {u: e["namespace"] for u, e in last.items()} == {
            u: "acme" if i % 2 and i < 8 else "admin" for i, u in enumerate(final)}
        first = events[0]["action"]["uuid"]
        kinds = [(e["type"], e["action"]["state"]) for e in events if e["uuid"] == first]
        assert kinds == [("record", "Pending"), ("logs", "Pending"), ("state", "In progress"),
                         ("state", "Success"), ("logs", "Success"), ("retry", "Success")]
        logs = [e["event"] for e in events if e["type"] == "logs"]
        assert [[line[3] for line in batch["lines"]] for batch in logs] == [
            ["one", "two"], ["late"]]
        assert logs[1]["first_seq"] == 3

        status = await auditd.status()
        assert status["siem"]["lag"] == 0 and status["siem"]["delivered"] == head
        shown = await auditd.cli("config", "show")
        assert shown.returncode == 0 and "s3cret" not in shown.stdout + shown.stderr
        assert "# headers: Authorization (values hidden)" in shown.stdout
    finally:
        await auditd.stop()
        await receiver.stop()
    assert "s3cret" not in "".join(auditd.srv.stderr_lines)


async def test_a_receiver_down_for_a_while_loses_nothing(tmp_path):
    receiver = await Receiver().start()
    auditd = await Auditd(tmp_path, sink_toml(siem={
        "url": receiver.url(), "headers": {"Authorization": TOKEN}, "batch_size": 5,
        "backoff_max": 0.5, "start": "beginning"})).start()
    try:
        await auditd.record(action="Before")
        await until(lambda: len(receiver.ids()) == 1, "the first event")
        receiver.mode = "fail"                           # 1. it answers 500
        for i in range(6):
            await auditd.record(action=f"During 500 {i}")
        await until(lambda: receiver.failures >= 2, "two refused attempts")
        status = await auditd.status()
        assert status["siem"]["lag"] > 0 and status["siem"]["errors"] >= 2
        assert status["siem"]["last_error"].startswith("HTTP 500")
        text = (await auditd.cli("forward", "status")).stdout
        assert "siem  ->  " + receiver.url() in text and "HTTP 500" in text
        assert "lag 6" in text and "s3cret" not in text
        metrics = await auditd.metrics()
        assert re.search(r'^auditd_forward_lag\{sink="siem"\} [1-9]', metrics, re.M)
        assert re.search(r'^auditd_forward_errors_total\{sink="siem"\} [1-9]', metrics, re.M)

        await receiver.stop()                            # 2. it refuses connections
        for i in range(6):
            await auditd.record(action=f"During refusal {i}")

        async def refused():
            error = (await auditd.status())["siem"]["last_error"] or ""
            return "connect" in error.lower()
        await until_true(refused, "a refused connection as the last error")
        assert len(receiver.ids()) == 1                  # nothing was taken meanwhile

        receiver.mode = "ok"                             # 3. it is back
        await receiver.start()
        head = await auditd.head()
        await until(lambda: len(set(receiver.ids())) >= head, "every event after the outage")
        _in_order_without_gaps(receiver.ids(), head)
        await until(lambda: receiver.ids()[-1] == head - 1, "the last event")
        status = await auditd.status()
        assert status["siem"]["lag"] == 0
        metrics = await auditd.metrics()
        assert 'auditd_forward_lag{sink="siem"} 0' in metrics
    finally:
        await auditd.stop()
        await receiver.stop()


async def test_a_sigkill_mid_way_loses_nothing(tmp_path):
    receiver = await Receiver().start()
    auditd = await Auditd(tmp_path, sink_toml(siem={
        "url": receiver.url(), "batch_size": 5, "backoff_max": 0.5,
        "start": "beginning"})).start()
    try:
        for i in range(10):
            await auditd.record(action=f"First {i}")
        await until(lambda: len(receiver.ids()) >= 10, "the first ten events")
        receiver.mode = "hold"             # the next batch is in flight when auditd dies
        uuids = [(await auditd.record(action=f"Then {i}"))["uuid"] for i in range(5)]
        await until(lambda: receiver.held >= 1, "a batch in flight")
        # a sink that is stuck holds up nothing: recording goes on
        uuids += [(await auditd.record(action=f"Then {i}"))["uuid"] for i in range(5, 30)]
        head = await auditd.head()
        assert receiver.held == 1
    finally:
        assert await auditd.stop(signal.SIGKILL) == -signal.SIGKILL
    receiver.release()                     # the held batch fails: the receiver kept nothing
    status = await auditd.status()         # read from the database auditd left behind
    assert status["siem"]["position"] == 10 and status["siem"]["lag"] == head - 10

    receiver.mode = "ok"
    await auditd.start(admin_key=auditd.srv.admin_key)
    try:
        await until(lambda: len(set(receiver.ids())) >= head, "every event after the restart")
        _in_order_without_gaps(receiver.ids(), head)
        recorded = {e["uuid"] for e in receiver.events() if e["type"] == "record"}
        assert set(uuids) <= recorded
    finally:
        await auditd.stop()
        await receiver.stop()


async def test_filters_and_a_sink_added_to_a_running_database(tmp_path):
    receiver = await Receiver().start()
    first = await Auditd(tmp_path, "").start()     # no sinks yet
    made = [await first.record(namespace="acme" if i < 2 else "other", action=f"Old {i}")
            for i in range(4)]
    for action in (made[0], made[2]):
        await first.call("PATCH", action["resource_uri"], {"state": "Success"}, 200)
    await first.call("POST", made[0]["resource_uri"] + "logs/", ["after the end"], 201)
    before = await first.head()
    await first.stop()

    auditd = Auditd(tmp_path, sink_toml(
        done={"url": receiver.url("done"), "namespaces": ["acme"], "states": ["Success"],
              "start": "beginning"},
        records={"url": receiver.url("records"), "types": ["record"]},     # start = "now"
    ))
    await auditd.start(admin_key=first.srv.admin_key)
    try:
        new = await auditd.record(namespace="acme", action="New")
        await auditd.call("PATCH", new["resource_uri"], {"state": "Success"}, 200)
        head = await auditd.head()
        await until(lambda: len(receiver.events("done")) >= 3, "the done sink's events")
        await until(lambda: len(receiver.events("records")) >= 1, "the records sink's event")
        done = [(e["uuid"], e["type"], e["action"]["state"]) for e in receiver.events("done")]
        assert done == [(made[0]["uuid"], "state", "Success"),
                        (made[0]["uuid"], "logs", "Success"),
                        (new["uuid"], "state", "Success")]
        assert [(e["uuid"], e["type"]) for e in receiver.events("records")] == [
            (new["uuid"], "record")]                 # nothing from before it started
        assert receiver.events("records")[0]["id"] == before

        # filtered-out events advance the positions too: both catch up to the head
        async def caught_up():
            return all(s["position"] == head for s in (await auditd.status()).values())
        await until_true(caught_up, "both sinks at the head")
    finally:
        await auditd.stop()
        await receiver.stop()


async def test_syslog_over_udp_tcp_and_a_local_socket_gets_rfc_5424_messages(tmp_path):
    udp, local = await SyslogReceiver().start(), await SyslogReceiver(tmp_path / "log").start()
    tcp = await SyslogTcpReceiver().start()
    auditd = await Auditd(tmp_path, sink_toml(
        udp={"syslog": f"udp://127.0.0.1:{udp.port}", "facility": "local3", "start": "beginning"},
        tcp={"syslog": f"tcp://127.0.0.1:{tcp.port}", "facility": "local3", "start": "beginning"},
        unix={"syslog": f"unix:{tmp_path / 'log'}", "facility": "local3", "start": "beginning"},
    )).start()
    try:
        action = await auditd.record(action="Service Create", namespace="acme")
        await auditd.call("PATCH", action["resource_uri"], {"state": "Failed"}, 200)
        head = await auditd.head()
        for receiver in (udp, tcp, local):
            await until(lambda: len(receiver.messages) >= head, f"{head} syslog messages")
        final = await auditd.call("GET", action["resource_uri"], status=200)
    finally:
        await auditd.stop()
        udp.stop()
        local.stop()
        await tcp.stop()
    rfc5424 = re.compile(r"^<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (\S+) auditd (\d+) "
                         r"(record|state|cancel|retry|logs|purge) - (\{.*\})$")
    assert udp.messages == tcp.messages == local.messages
    parsed = [rfc5424.match(m) for m in udp.messages]
    assert all(parsed), udp.messages
    bodies = [json.loads(m.group(6)) for m in parsed]
    assert [b["id"] for b in bodies] == list(range(head))
    assert {int(m.group(1)) for m in parsed} == {19 * 8 + 6}         # local3, info
    assert {int(m.group(4)) for m in parsed} == {auditd.srv.proc.pid}
    assert [(m.group(5), b["action"]["state"]) for m, b in zip(parsed, bodies)] == [
        ("record", "In progress"), ("state", "Failed")]
    assert bodies[-1]["action"] == final and bodies[-1]["namespace"] == "acme"
    assert parsed[0].group(2) == bodies[0]["time"]
