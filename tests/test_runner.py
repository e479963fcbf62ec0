"""`auditd run -- CMD`: against a real `auditd serve` process, as a user would run it."""
import asyncio
import json
import os
import re
import sys

import aiohttp
import pytest

from conftest import ROOT, basic

ACTIONS = "/api/audit/v1/action/"


async def start_run(server, *argv, env=None, flags=None):
    """`auditd run` as a child process; credentials as flags unless `env` is given."""
    if flags is None:
        flags = [] if env else ["--url", server.url, "--user", "admin", "--apikey",
                                server.admin_key]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "auditd", "run", *flags, "--", *argv, cwd=ROOT,
        env=dict(os.environ, **(env or {})),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def run(server, *argv, **kw):
    process = await start_run(server, *argv, **kw)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def action_uuid(stderr: str) -> str:
    return re.search(r"auditd run: action ([0-9a-f-]{36}) ", stderr).group(1)


@pytest.fixture
async def http(server):
    async with aiohttp.ClientSession(server.url, headers=basic("admin", server.admin_key)) as s:
        yield s


async def get_action(http, uuid):
    async with http.get(f"{ACTIONS}{uuid}/") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def log_messages(http, uuid):
    async with http.ws_connect(f"{ACTIONS}{uuid}/logs/?tail=all&follow=false") as ws:
        return [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]


async def test_run_records_the_command_its_lines_and_success(server, http):
    code, out, err = await run(server, "sh", "-c", "for i in 1 2 3; do echo step $i; done")
    assert code == 0, err
    assert out == "step 1\nstep 2\nstep 3\n"          # the output still reaches the terminal
    uuid = action_uuid(err)
    action = await get_action(http, uuid)
    assert (action["action"], action["state"], action["user"]) == ("Command Run", "Success",
                                                                   "admin")
    assert "for i in 1 2 3" in action["path"]
    assert json.loads(action["body"])["argv"][0] == "sh"
    messages = await log_messages(http, uuid)
    assert [(m["log"], m["streamType"]) for m in messages] == [
        ("step 1", "stdout"), ("step 2", "stdout"), ("step 3", "stdout")]


async def test_failing_command_ends_failed_with_its_exit_code(server, http):
    code, _, err = await run(server, "sh", "-c", "echo trying; echo 'no such table' >&2; exit 3")
    assert code == 3
    uuid = action_uuid(err)
    assert (await get_action(http, uuid))["state"] == "Failed"
    messages = [(m["log"], m["streamType"]) for m in await log_messages(http, uuid)]
    assert ("trying", "stdout") in messages and ("no such table", "stderr") in messages
    assert messages[-1] == ("auditd run: the command exited with code 3", "stderr")


async def test_missing_command_ends_failed_with_127(server, http):
    code, _, err = await run(server, "no-such-command-anywhere")
    assert code == 127
    assert "cannot run 'no-such-command-anywhere'" in err
    assert (await get_action(http, action_uuid(err)))["state"] == "Failed"


async def test_cancel_stops_the_command_and_ends_canceled(server, http):
    process = await start_run(server, sys.executable, "-c",
                              "import time; print('working', flush=True); time.sleep(60)")
    first = (await process.stderr.readline()).decode()
    uuid = action_uuid(first)
    assert await process.stdout.readline() == b"working\n"     # the command is running
    async with http.post(f"{ACTIONS}{uuid}/cancel/") as resp:
        assert resp.status == 202, await resp.text()
    rest = await asyncio.wait_for(process.stderr.read(), 60)
    assert await asyncio.wait_for(process.wait(), 60) == 143   # 128 + SIGTERM
    assert "SIGTERM" in rest.decode()
    assert (await get_action(http, uuid))["state"] == "Canceled"
    assert [m["log"] for m in await log_messages(http, uuid)] == [
        "working", "auditd run: the command was killed by SIGTERM"]


async def test_credentials_from_the_docker_cloud_variables(server, http):
    code, out, err = await run(server, "echo", "hello", env={
        "DOCKERCLOUD_REST_HOST": server.url + "/", "DOCKERCLOUD_USER": "admin",
        "DOCKERCLOUD_APIKEY": server.admin_key, "DOCKERCLOUD_AUTH": ""})
    assert (code, out) == (0, "hello\n"), err
    assert [m["log"] for m in await log_messages(http, action_uuid(err))] == ["hello"]


async def test_a_plain_user_key_is_refused_before_running(server, http, tmp_path):
    added = server.cli("user", "add", "bob")
    assert added.returncode == 0, added.stderr
    marker = tmp_path / "ran"
    code, _, err = await run(server, "touch", str(marker), flags=[
        "--url", server.url, "--user", "bob", "--apikey", added.stdout.strip()])
    assert code == 125
    assert "needs a producer or admin key" in err
    assert not marker.exists()
    async with http.get(ACTIONS) as resp:
        assert (await resp.json())["meta"]["total_count"] == 0


async def test_wrong_key_and_no_server_are_explained(server, tmp_path):
    code, _, err = await run(server, "true", flags=["--url", server.url, "--user", "admin",
                                                    "--apikey", "wrong"])
    assert code == 125 and "refused the credentials" in err
    code, _, err = await run(server, "true", flags=["--url", "http://127.0.0.1:9", "--user",
                                                    "admin", "--apikey", "k"])
    assert code == 125 and "cannot reach auditd at http://127.0.0.1:9" in err
    code, _, err = await run(server, "true", flags=["--url", server.url],
                             env={"DOCKERCLOUD_USER": "", "DOCKERCLOUD_APIKEY": "",
                                  "DOCKERCLOUD_AUTH": ""})
    assert code == 125 and "no credentials" in err
