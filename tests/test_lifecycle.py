"""Stopping a real `auditd serve` process: nothing acknowledged is lost, streams are told 1001,
the exit code is 0; and what it logs on the way (one key=value line per event, no credentials)."""
import asyncio
import base64
import signal
import sqlite3

import logging
import sys

import aiohttp

from auditd.server.logs import KeyValueFormatter
from conftest import ServerProcess, basic

WRITERS = 16
ACKED_BEFORE_SIGTERM = 150


async def test_sigterm_under_write_load_loses_no_acknowledged_write(tmp_path):
    db = tmp_path / "load.db"
    server = ServerProcess(db).start()
    headers = basic("admin", server.admin_key)
    acked: list[str] = []
    enough = asyncio.Event()

    async def writer(session, n):
        i = 0
        while True:
            i += 1
            try:
                async with session.post(server.url + "/api/audit/v1/action/", headers=headers,
                                        json={"action": f"Writer {n} #{i}",
                                              "user": "alice"}) as resp:
                    if resp.status == 201:
                        acked.append((await resp.json())["uuid"])
                        if len(acked) >= ACKED_BEFORE_SIGTERM:
                            enough.set()
                    elif server.proc.poll() is not None:
                        return
            except (aiohttp.ClientError, ConnectionError):
                return      # the server stopped accepting: this writer is done

    async with aiohttp.ClientSession() as session:
        writers = [asyncio.create_task(writer(session, n)) for n in range(WRITERS)]
        await enough.wait()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*writers)
    code = await asyncio.to_thread(server.stop)
    assert code == 0, "".join(server.stderr_lines)
    assert len(acked) >= ACKED_BEFORE_SIGTERM

    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT uuid FROM actions")}
    assert set(acked) <= stored

    restarted = ServerProcess(db)
    restarted.admin_key = server.admin_key
    restarted.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(restarted.url + "/api/audit/v1/action/?limit=1",
                                   headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["meta"]["total_count"] == len(stored)
            async with session.get(f"{restarted.url}/api/audit/v1/action/{acked[-1]}/",
                                   headers=headers) as resp:
                assert resp.status == 200
    finally:
        assert restarted.stop() == 0


async def test_sigterm_closes_open_streams_with_1001(tmp_path):
    server = ServerProcess(tmp_path / "ws.db").start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                    server.url.replace("http", "ws") + "/api/audit/v1/events/",
                    headers=basic("admin", server.admin_key)) as ws:
                hello = await ws.receive_json()
                assert hello["type"] == "auth"
                server.proc.send_signal(signal.SIGTERM)
                message = await ws.receive()
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert message.data == 1001
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0, "".join(server.stderr_lines)


async def test_logs_are_key_value_lines_without_credentials(tmp_path):
    server = ServerProcess(tmp_path / "logs.db").start()
    key = server.admin_key
    basic_token = base64.b64encode(f"admin:{key}".encode()).decode()
    try:
        async with aiohttp.ClientSession() as session:
            # The log stream takes credentials in the query, as the real clients send them.
            url = (server.url + "/api/audit/v1/action/00000000-0000-0000-0000-000000000000/logs/"
                   f"?user=admin&token={key}")
            async with session.get(url) as resp:
                assert resp.status in (400, 404)
            async with session.get(server.url + "/api/audit/v1/action/?token=s3cret-value",
                                   headers=basic("admin", key)) as resp:
                assert resp.status in (200, 400)
            async with session.get(server.url + "/api/audit/v1/action/",
                                   headers={"Authorization": "Basic " + basic_token}) as resp:
                assert resp.status == 200
    finally:
        code = await asyncio.to_thread(server.stop)
    assert code == 0
    log = "".join(server.stderr_lines)
    assert key not in log and basic_token not in log and "s3cret-value" not in log
    access = [line for line in server.stderr_lines if "logger=auditd.access" in line]
    assert len(access) == 3, log
    assert 'route=/api/audit/v1/action/{uuid}/logs/' in access[0]
    assert "user=admin" in access[2] and "status=200" in access[2]
    for line in server.stderr_lines:
        assert line.startswith("time=") and " level=" in line and " msg=" in line, line
    assert any("msg=stopped" in line for line in server.stderr_lines)


def test_journald_lines_carry_a_priority_and_tracebacks_stay_on_one_line():
    logger = logging.getLogger("auditd.test")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logger.makeRecord("auditd.test", logging.WARNING, __file__, 1,
                                   "failed for token=%s", ("abc123",), sys.exc_info())
    line = KeyValueFormatter(journald=True).format(record)
    assert line.startswith("<4>level=warning logger=auditd.test ")
    assert "\n" not in line and "time=" not in line and "abc123" not in line
    assert "ValueError" in line and "token=<redacted>" in line


def test_sigterm_drains_a_stalled_follower_and_a_slow_upload_together(tmp_path):
    """The stream's close and the request drain run at once, within shutdown_timeout: with a
    follower that never answers and an upload that never finishes, the stop still ends in time
    (exit 0) instead of waiting for one after the other and being cut short (exit 1)."""
    import socket
    server = ServerProcess(tmp_path / "drain.db", extra_args=["--shutdown-timeout", "8"]).start()
    auth = "Authorization: Basic " + base64.b64encode(
        f"admin:{server.admin_key}".encode()).decode() + "\r\n"
    follower = socket.create_connection(("127.0.0.1", server.port))
    follower.sendall(("GET /api/audit/v1/events/ HTTP/1.1\r\nHost: x\r\n" + auth
                      + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    assert follower.recv(4096).startswith(b"HTTP/1.1 101")        # then it never reads again
    upload = socket.create_connection(("127.0.0.1", server.port))
    upload.sendall(("POST /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n" + auth
                    + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode())
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=30)
    finally:
        follower.close()
        upload.close()
    server.stop()
    assert code == 0, "".join(server.stderr_lines)
    assert not [line for line in server.stderr_lines if "did not finish in time" in line]
