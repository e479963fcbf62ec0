"""`auditd action ls | inspect | logs | cancel | retry` under Python 3 (`python -m auditd action`)
against a real server (the plugin's `auditd_server`, reset before each test), and `action ls`
side by side with the real docker-cloud CLI 1.0.9 on the same data (skipped without Python 2.7).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from realclients import Running, parse_table, real_clients  # noqa: F401 (fixture)

HOUR, DAY = 3600, 86400
HEADERS = ["UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION"]


@pytest.fixture
def srv(auditd_server):
    auditd_server.reset()
    return auditd_server


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERCLOUD_")}
    env.update(extra)
    return env


def action(env: dict, *args) -> subprocess.CompletedProcess:
    """`python -m auditd action ARGS` with exactly the DOCKERCLOUD_* variables in `env`."""
    return subprocess.run([sys.executable, "-m", "auditd", "action", *args], env=clean_env(env),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def ok(env: dict, *args) -> str:
    result = action(env, *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def ago(seconds: int) -> int:
    return int(time.time()) - seconds


def uuid_with(prefix: str, n: int = 0) -> str:
    return f"{prefix}{n:0{8 - len(prefix)}x}-0000-4000-8000-{n:012x}"


def four(srv) -> dict:
    """Four actions whose humanized dates stay the same for a while (well inside their unit)."""
    with srv.client() as api:
        return {
            "old": api.record(action="Service Create", object="/api/app/v1/service/web/",
                              start_date=ago(5 * HOUR + 600), end_date=ago(4 * HOUR + 600),
                              state="Success", ip="10.1.2.3", user="alice"),
            "node": api.record(action="Node Terminate", start_date=ago(30 * 60 + 20),
                               end_date=ago(10 * 60 + 20), state="Failed", user="bob"),
            "cluster": api.record(action="Cluster Create",
                                  object="/api/infra/v1/alice/nodecluster/c1/",
                                  start_date=ago(2 * DAY + HOUR), state="In progress",
                                  user="alice"),
            "stack": api.record(action="Stack Redeploy", object="/api/app/v1/stack/shop/",
                                start_date=ago(3 * HOUR + 600), state="Pending", ip="8.8.8.8",
                                user="alice"),
        }


# ---------------------------------------------------------------------------- ls

def test_ls_prints_the_table_with_headers_newest_first(srv):
    acts = four(srv)
    out = ok(srv.env, "ls")
    names, rows = parse_table(out)
    assert names == HEADERS
    assert [[r[n] for n in HEADERS] for r in rows] == [
        [acts["node"]["uuid"][:8], "Node Terminate", "30 minutes ago", "10 minutes ago", "",
         "127.0.0.1", "Localhost"],
        [acts["stack"]["uuid"][:8], "Stack Redeploy", "3 hours ago", "", "stack/shop",
         "8.8.8.8", ""],
        [acts["old"]["uuid"][:8], "Service Create", "5 hours ago", "4 hours ago",
         "service/web", "10.1.2.3", "Private network"],
        [acts["cluster"]["uuid"][:8], "Cluster Create", "2 days ago", "", "alice/nodecluster/c1",
         "127.0.0.1", "Localhost"],
    ]


def test_ls_quiet_json_last_and_filters(srv):
    acts = four(srv)
    order = [acts[k]["uuid"] for k in ("node", "stack", "old", "cluster")]
    assert ok(srv.env, "ls", "-q").split() == order
    assert ok(srv.env, "ls", "-q", "-l", "2").split() == order[:2]
    assert json.loads(ok(srv.env, "ls", "--json", "--last", "1")) == [acts["node"]]
    assert ok(srv.env, "ls", "-q", "--state", "Pending").split() == [acts["stack"]["uuid"]]
    assert ok(srv.env, "ls", "-q", "--by", "bob").split() == [acts["node"]["uuid"]]
    assert ok(srv.env, "ls", "-q", "--action", "Cluster Create").split() == \
        [acts["cluster"]["uuid"]]
    assert ok(srv.env, "ls", "-q", "--object", "/api/app/v1/service/web/").split() == \
        [acts["old"]["uuid"]]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ago(4 * HOUR)))
    assert ok(srv.env, "ls", "-q", "--since", since).split() == order[:2]
    assert ok(srv.env, "ls", "-q", "--until", since, "--by", "alice").split() == order[2:]
    assert ok(srv.env, "ls", "-q", "--filter", "end_date__gte=" + since).split() == \
        [acts["node"]["uuid"]]
    assert ok(srv.env, "ls", "-q", "--filter", "order_by=start_date", "-l", "1").split() == \
        [acts["cluster"]["uuid"]]


def test_ls_last_follows_pages_past_the_servers_cap(srv):
    srv.seed([{"action": "Node Create", "uuid": uuid_with("a", n), "start_date": 1_700_000_000 + n}
              for n in range(1100)])
    lines = ok(srv.env, "ls", "-q", "-l", "1050").split()
    assert lines == [uuid_with("a", n) for n in range(1099, 49, -1)]


def test_ls_of_nothing_prints_the_headers(srv):
    assert ok(srv.env, "ls") == "UUID    ACTION    START    END    TARGET    IP    LOCATION\n"


# ---------------------------------------------------------------------------- short ids

def test_inspect_takes_short_ids_and_prints_the_json(srv):
    acts = four(srv)
    out = ok(srv.env, "inspect", acts["old"]["uuid"][:5])
    assert json.loads(out) == acts["old"]
    assert out.startswith('{\n  "resource_uri": ')
    both = ok(srv.env, "inspect", acts["old"]["uuid"], acts["node"]["uuid"][:8].upper())
    assert both.count('\n}\n') == 2


def test_short_id_mistakes_are_reported_per_id(srv):
    srv.seed([{"action": "Node Create", "uuid": uuid_with("beef", n)} for n in (1, 2)])
    result = action(srv.env, "inspect", "beef", "cafe", uuid_with("beef", 1)[:9], "no!")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "auditd: more than one action has an id starting with 'beef': give more characters or "
        "the full uuid",
        "auditd: no action has an id starting with 'cafe'",
        "auditd: no action has an id starting with 'no!': ids are hex digits and '-'"]
    assert json.loads(result.stdout)["uuid"] == uuid_with("beef", 1)   # the good one still ran


# ---------------------------------------------------------------------------- cancel, retry

def test_cancel_and_retry(srv):
    acts = four(srv)
    assert ok(srv.env, "cancel", acts["stack"]["uuid"][:6]) == \
        f"{acts['stack']['uuid']}\tCanceled\n"
    new = ok(srv.env, "retry", acts["node"]["uuid"][:6]).strip()
    with srv.client() as api:
        assert api.get(new)["action"] == "Node Terminate" and new != acts["node"]["uuid"]
    assert json.loads(ok(srv.env, "cancel", "--json", new))["state"] == "Canceled"
    refused = action(srv.env, "cancel", acts["old"]["uuid"][:6])
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (f"auditd: Action {acts['old']['uuid']} cannot be canceled: it is "
                              "Success\n")
    refused = action(srv.env, "retry", acts["cluster"]["uuid"])
    assert refused.returncode == 1 and "cannot be retried" in refused.stderr


# ---------------------------------------------------------------------------- logs

def test_logs_prints_the_lines_and_tail(srv):
    with srv.client() as api:
        uuid = api.record(action="Service Create", state="Pending")["uuid"]
        api.append_logs(uuid, [f"line {i}" for i in range(5)])
    assert ok(srv.env, "logs", uuid[:6]) == "".join(f"line {i}\n" for i in range(5))
    assert ok(srv.env, "logs", "-t", "2", uuid[:6]) == "line 3\nline 4\n"
    assert ok(srv.env, "logs", "--tail", "all", uuid) == ok(srv.env, "logs", uuid)


def test_logs_follow_prints_new_lines_until_the_action_ends(srv):
    with srv.client() as api:
        uuid = api.record(action="Service Redeploy")["uuid"]
        api.append_logs(uuid, ["starting"])
        follower = Running([sys.executable, "-m", "auditd", "action", "logs", "-f", uuid[:8]],
                           clean_env(srv.env))
        try:
            assert follower.next_line() == "starting"
            api.append_logs(uuid, ["step 1", "step 2"])
            assert follower.take(2) == ["step 1", "step 2"]
            api.append_logs(uuid, ["done"])
            api.set_state(uuid, "Success")
            assert follower.finish() == (0, ["done"])
        finally:
            follower.kill()
    assert follower.stderr == [""]


# ---------------------------------------------------------------------------- settings, errors

def test_flags_override_the_environment(srv):
    srv.add_user("dora")
    four(srv)
    wrong = dict(srv.env, DOCKERCLOUD_APIKEY="wrong")
    assert ok(wrong, "ls", "-q", "--key", srv.admin_key).count("\n") == 4
    as_dora = ok(wrong, "ls", "-q", "--user", "dora", "--key", srv.key_of("dora"))
    assert as_dora == ""                                   # dora sees none of them
    assert ok({}, "ls", "-q", "--url", srv.url, "--user", "admin", "--key", srv.admin_key) \
        .count("\n") == 4


@pytest.mark.parametrize("env, args, rc, message", [
    ({}, ["ls"], 2, "auditd: no credentials: pass a user and an API key (--user/--key), or set "
                    "DOCKERCLOUD_USER and DOCKERCLOUD_APIKEY\n"),
    ({"DOCKERCLOUD_USER": "a", "DOCKERCLOUD_APIKEY": "b", "DOCKERCLOUD_REST_HOST": "host:80"},
     ["ls"], 2, "auditd: the server's URL must look like http://HOST:PORT, not 'host:80'\n"),
    ({"DOCKERCLOUD_USER": "a", "DOCKERCLOUD_APIKEY": "b"},
     ["inspect", "abc", "--url", "http://127.0.0.1:1"], 1,
     "auditd: cannot reach the server at http://127.0.0.1:1: Connection refused\n"),
])
def test_mistakes_are_messages_with_exit_codes(env, args, rc, message):
    result = action(env, *args)
    assert (result.returncode, result.stderr, result.stdout) == (rc, message, "")


def test_wrong_key_and_bad_filter_show_the_servers_message(srv):
    result = action(dict(srv.env, DOCKERCLOUD_APIKEY="nope"), "ls")
    assert result.returncode == 1 and result.stderr.startswith("auditd: ")
    assert "credentials" in result.stderr.lower() and "Traceback" not in result.stderr
    result = action(srv.env, "ls", "--since", "yesterday-ish")
    assert result.returncode == 1 and "start_date__gte" in result.stderr
    for args in (["ls", "-l", "0"], ["ls", "--filter", "colour=red"], ["logs", "-t", "x", "ab"],
                 ["inspect", ""], ["inspect"]):
        result = action(srv.env, *args)
        assert result.returncode == 2 and "usage:" in result.stderr, args
        assert "Traceback" not in result.stderr


def test_a_closed_pipe_is_not_an_error(srv):
    srv.seed([{"action": "Node Create", "uuid": uuid_with("c", n)} for n in range(300)])
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m auditd action ls --json -l 300 "
                       "| head -c 10"], env=clean_env(srv.env), capture_output=True, text=True,
        timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "[\n  {\n    ", "")


# ---------------------------------------------------------------------------- beside docker-cloud

def docker_cloud(clients, srv, *args) -> str:
    result = subprocess.run(clients.cli_argv(*args), capture_output=True, text=True,
                            env=clients.env(srv.url, "admin", srv.admin_key), timeout=60,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def test_ls_prints_what_docker_cloud_prints(real_clients, srv):
    four(srv)
    with srv.client() as api:
        api.record(action="Service Scale", object="/api/app/v1/alice/service/7f3e/",
                   start_date=ago(400 * DAY), end_date=ago(399 * DAY), state="Failed",
                   ip="192.168.1.20")
    for args in (["ls"], ["ls", "-q"], ["ls", "-l", "2"]):
        assert ok(srv.env, *args) == docker_cloud(real_clients, srv, "action", *args), args


def test_ls_matches_docker_cloud_when_uuids_look_like_numbers(real_clients, srv):
    # tabulate right-aligns (and reformats) a column whose every cell is a number
    for prefixes in (["0123", "9876"], ["123e"], ["1234", "1e05"]):
        srv.reset()
        srv.seed([{"action": "Node Create", "uuid": uuid_with(p, 5), "state": "Pending",
                   "start_date": ago(DAY + HOUR)} for p in prefixes])
        ours = ok(srv.env, "ls")
        assert ours == docker_cloud(real_clients, srv, "action", "ls"), prefixes


def test_inspect_and_logs_print_what_docker_cloud_prints(real_clients, srv):
    acts = four(srv)
    uuid = acts["old"]["uuid"]
    with srv.client() as api:
        api.append_logs(uuid, ["one", "two", "three"])
    theirs = json.loads(docker_cloud(real_clients, srv, "action", "inspect", uuid[:6]))
    theirs.pop("dockercloud_action_uri")         # the SDK adds it from a response header
    assert json.loads(ok(srv.env, "inspect", uuid[:6])) == theirs
    for args in (["logs", uuid[:6]], ["logs", "-t", "2", uuid]):
        assert ok(srv.env, *args) == docker_cloud(real_clients, srv, "action", *args)


def test_empty_ls_differs_from_docker_cloud_on_purpose(real_clients, srv):
    # docker-cloud's empty row has five cells, so tabulate prints five of the seven headers
    # and a blank line; auditd prints the seven headers alone
    assert docker_cloud(real_clients, srv, "action", "ls") == \
        "UUID    ACTION    START    END    TARGET\n\n"
    assert ok(srv.env, "ls") == "UUID    ACTION    START    END    TARGET    IP    LOCATION\n"


def test_interrupting_logs_follow_is_quiet(srv):
    with srv.client() as api:
        uuid = api.record(action="Service Redeploy")["uuid"]
        api.append_logs(uuid, ["working"])
    follower = Running([sys.executable, "-m", "auditd", "action", "logs", "-f", uuid],
                       clean_env(srv.env), interactive=True)   # as Ctrl-C reaches it in a terminal
    try:
        assert follower.next_line() == "working"
        follower.proc.send_signal(signal.SIGINT)
        assert follower.finish() == (130, [])
    finally:
        follower.kill()
    assert "".join(follower.stderr) == ""
