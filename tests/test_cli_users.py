"""`auditd user ...` and `auditd org ...` against a running server's database file."""
import re
import urllib.error
import urllib.request

import pytest

from auditd.cli import main
from conftest import basic

KEY = re.compile(r"^[A-Za-z0-9_-]{22,}$")   # at least 128 bits, URL-safe


@pytest.fixture
def server(module_server):
    """All tests here share one server process; each uses its own user and org names."""
    return module_server


def status_with(server, user, key, path="/api/audit/v1/action/"):
    request = urllib.request.Request(server.url + path, headers=basic(user, key))
    try:
        with urllib.request.urlopen(request) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def run(server, capsys, *args):
    """The CLI in this process (faster than a new interpreter); returns (code, stdout, stderr)."""
    code = main([*args, "--db", str(server.db)])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_add_prints_only_the_key_and_the_key_works(server):
    done = server.cli("user", "add", "dave", "--role", "producer")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == 1
    key = done.stdout.strip()
    assert KEY.match(key), done.stdout
    assert "dave" in done.stderr and key not in done.stderr
    assert status_with(server, "dave", key)[0] == 200
    assert status_with(server, "dave", key[:-1] + ("A" if key[-1] != "A" else "B"))[0] == 401
    # the role is the one asked for: a producer records
    request = urllib.request.Request(
        server.url + "/api/audit/v1/action/", data=b'{"action": "Node Deploy"}',
        headers={**basic("dave", key), "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request) as resp:
        assert resp.status == 201


def test_rotate_key_replaces_the_old_one(server, capsys):
    code, out, _ = run(server, capsys, "user", "add", "erin")
    old = out.strip()
    done = server.cli("user", "rotate-key", "erin")
    assert done.returncode == 0, done.stderr
    new = done.stdout.strip()
    assert done.stdout == new + "\n" and KEY.match(new) and new != old
    assert status_with(server, "erin", old)[0] == 401
    assert status_with(server, "erin", new)[0] == 200


def test_user_list_and_remove(server, capsys):
    code, out, _ = run(server, capsys, "user", "add", "frank", "--role", "user")
    frank_key = out.strip()
    run(server, capsys, "user", "add", "gina", "--role", "producer")
    run(server, capsys, "org", "add", "dev")
    run(server, capsys, "org", "add-member", "dev", "frank")
    code, out, _ = run(server, capsys, "user", "list")
    assert code == 0
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}
    assert rows["admin"] == ["admin", "-"]
    assert rows["frank"] == ["user", "dev"] and rows["gina"] == ["producer", "-"]
    assert frank_key not in out

    code, _, err = run(server, capsys, "user", "remove", "frank")
    assert code == 0 and "frank" in err
    assert status_with(server, "frank", frank_key)[0] == 401
    code, out, _ = run(server, capsys, "user", "list")
    assert "frank" not in out
    code, out, err = run(server, capsys, "user", "remove", "frank")
    assert code == 1 and out == "" and "frank" in err


def test_org_membership_decides_what_a_user_sees(server, capsys):
    _, out, _ = run(server, capsys, "user", "add", "hal")
    hal = out.strip()
    code, _, err = run(server, capsys, "org", "add", "ops")
    assert code == 0 and "ops" in err
    request = urllib.request.Request(
        server.url + "/api/audit/v1/action/",
        data=b'{"action": "Stack Start", "namespace": "ops", "user": "ivy"}',
        headers={**basic("admin", server.admin_key), "Content-Type": "application/json"},
        method="POST")
    with urllib.request.urlopen(request) as resp:
        uuid = re.search(rb'"uuid": "([0-9a-f-]+)"', resp.read()).group(1).decode()
    action_path = f"/api/audit/v1/action/{uuid}/"

    assert status_with(server, "hal", hal, action_path)[0] == 404
    assert run(server, capsys, "org", "add-member", "ops", "hal")[0] == 0
    assert status_with(server, "hal", hal, action_path)[0] == 200
    assert status_with(server, "hal", hal, "/api/audit/v1/ops/action/")[0] == 200
    code, out, _ = run(server, capsys, "org", "list")
    assert "ops\thal" in out.splitlines()
    code, _, err = run(server, capsys, "org", "remove-member", "ops", "hal")
    assert code == 0 and "hal" in err
    assert status_with(server, "hal", hal, action_path)[0] == 404
    assert status_with(server, "hal", hal, "/api/audit/v1/ops/action/")[0] == 404


@pytest.mark.parametrize("args, words", [
    (("user", "add", "admin"), ["admin", "already exists"]),
    (("org", "add", "admin"), ["admin", "user"]),
    (("user", "rotate-key", "nobody"), ["nobody"]),
    (("org", "add-member", "nowhere", "admin"), ["nowhere"]),
    (("org", "add-member", "team", "nobody"), ["nobody"]),
    (("org", "remove-member", "team", "admin"), ["admin", "not a member"]),
])
def test_cli_errors_exit_1_with_a_message_and_no_key(server, capsys, args, words):
    run(server, capsys, "org", "add", "team")     # the first case creates it
    code, out, err = run(server, capsys, *args)
    assert code == 1 and out == ""
    assert err.startswith("auditd: ") and all(w in err for w in words), err


def test_bad_role_is_refused(server, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["user", "add", "jo", "--role", "root", "--db", str(server.db)])
    assert exc.value.code == 2
    assert "root" in capsys.readouterr().err
    assert "jo" not in run(server, capsys, "user", "list")[1]


def test_keys_are_stored_only_as_hashes(server, capsys):
    keys = [run(server, capsys, "user", "add", f"k{i}")[1].strip() for i in range(3)]
    keys.append(server.admin_key)
    keys.append(run(server, capsys, "user", "rotate-key", "k0")[1].strip())
    for user, key in (("k1", keys[1]), ("k0", keys[-1])):
        assert status_with(server, user, key)[0] == 200   # the keys are real
    files = [p for p in server.db.parent.iterdir() if p.name.startswith(server.db.name)]
    assert server.db in files
    for path in files:
        data = path.read_bytes()
        for key in keys:
            assert key.encode() not in data, f"an API key is in {path.name}"


@pytest.mark.parametrize("args", [(), ("user",), ("user", "add"), ("org",), ("serve",)])
def test_help_explains_each_command(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: auditd") and len(out.splitlines()) > 3
