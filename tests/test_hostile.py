"""A hostile network: idle and slowloris connections, connection floods. The server must keep
answering normal clients, close what stalls within its deadlines, and not flood its log."""
import resource
import socket
import time
import urllib.request

import pytest

from conftest import ServerProcess

HEAD_TIMEOUT, IDLE_TIMEOUT = 2.0, 3.0


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    """A server under a 1,024 open-file limit (soft and hard), with short deadlines."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4500:
        pytest.skip(f"this test opens 2,000+ sockets; the open-file hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    srv = ServerProcess(tmp_path_factory.mktemp("hostile") / "h.db", nofile=(1024, 1024),
                        extra_args=["--head-timeout", str(HEAD_TIMEOUT),
                                    "--idle-timeout", str(IDLE_TIMEOUT)]).start()
    yield srv
    srv.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(port) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setblocking(False)
    return sock


def closed_by_server(sock) -> bool:
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def health(port, timeout=10) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_auditd/health", timeout=timeout) as r:
        return r.status


def test_two_thousand_idle_and_slowloris_connections_do_not_lock_anyone_out(tight_server):
    port = tight_server.port
    lines_before = len(tight_server.stderr_lines)
    idle = [connect(port) for _ in range(1000)]
    slow = [connect(port) for _ in range(1000)]
    for sock in slow:
        try:
            sock.send(b"GET /_auditd/health HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            pass                        # already closed by the server to make room: fine
    # a normal client is answered while all of them are open
    assert health(port) == 200
    # the slow ones trickle a header byte; the deadline still closes them
    deadline = time.monotonic() + HEAD_TIMEOUT + 5
    open_socks = idle + slow
    while open_socks and time.monotonic() < deadline:
        for sock in slow:
            try:
                sock.send(b"X")
            except OSError:
                pass
        open_socks = [s for s in open_socks if not closed_by_server(s)]
        time.sleep(0.2)
    assert open_socks == [], f"{len(open_socks)} stalled connections still open"
    assert health(port) == 200
    for sock in idle + slow:
        sock.close()
    # no flood of accept errors or tracebacks
    new_lines = tight_server.stderr_lines[lines_before:]
    assert not [line for line in new_lines if "Traceback" in line or "accept" in line.lower()]
    assert len(new_lines) < 100


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(tight_server):
    sock = socket.create_connection(("127.0.0.1", tight_server.port), timeout=10)
    sock.sendall(b"GET /_auditd/health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    sock.settimeout(IDLE_TIMEOUT + 5)
    assert sock.recv(65536) == b""             # the server closes it
    assert time.monotonic() - started >= IDLE_TIMEOUT - 0.5
    sock.close()


def test_at_the_cap_busy_connections_are_kept_and_the_newcomer_refused(tmp_path):
    from auditd.server.guard import ConnectionGuard

    class Conn:
        def __init__(self, busy):
            self.busy, self.dropped = busy, False
            self.waiting_since = time.monotonic()

        def waiting(self):
            return not self.busy

        def idle_between_requests(self):
            return False

        def drop(self):
            self.dropped = True

    import asyncio

    async def scenario():
        guard = ConnectionGuard(2, 10, 10)
        busy, idle = Conn(True), Conn(False)
        assert guard.admit(busy) and guard.admit(idle)
        newcomer = Conn(True)
        assert guard.admit(newcomer) and idle.dropped and not busy.dropped   # idle made room
        guard.closed(idle)
        assert not guard.admit(Conn(False))          # everyone left is busy: refused
        assert guard.refused == 1 and guard.evicted == 1
        guard.stop()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- bytes, not text

def raw_request(port, head: bytes, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send raw bytes; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                headers = dict(line.split(b": ", 1) for line in data[:head_end].split(b"\r\n")[1:]
                               if b": " in line)
                length = int(headers.get(b"Content-Length", b"-1"))
                if 0 <= length <= len(data) - head_end - 4:
                    break
    status = int(data.split(b" ", 2)[1])
    head_end = data.find(b"\r\n\r\n")
    headers = {k.decode().lower(): v.decode() for k, v in
               (line.split(b": ", 1) for line in data[:head_end].split(b"\r\n")[1:]
                if b": " in line)}
    body = data[head_end + 4:]
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("bytes") / "b.db").start()
    srv.cli("user", "add", "alice")
    yield srv
    srv.stop()


def basic_bytes(user: bytes, key: bytes) -> bytes:
    import base64
    return b"Basic " + base64.b64encode(user + b":" + key)


def auth_header(srv) -> bytes:
    return b"Authorization: " + basic_bytes(b"admin", srv.admin_key.encode()) + b"\r\n"


BAD_REQUESTS = {
    # (what, request head without the final CRLF, body) -> expected status
    "non-UTF-8 ApiKey header": (b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n"
                                b"Authorization: ApiKey \xff\xfe:key\r\n", b"", 401),
    "non-UTF-8 Basic credentials": (b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n"
                                    b"Authorization: " + basic_bytes(b"\xff", b"k") + b"\r\n",
                                    b"", 401),
    "non-UTF-8 bytes in Basic": (b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n"
                                 b"Authorization: Basic \xff\xfe\r\n", b"", 401),
    "control character after Basic": (b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n"
                                      b"Authorization: Basic\x0bYWRtaW46eA==\r\n", b"", 400),
}


@pytest.mark.parametrize("what", list(BAD_REQUESTS))
def test_bad_bytes_in_credentials_are_refused_as_json(plain_server, what):
    head, body, expected = BAD_REQUESTS[what]
    status, headers, text = raw_request(plain_server.port, head + b"\r\n", body)
    assert status == expected and headers["content-type"].startswith("application/json")
    assert "error" in json_of(text)


def json_of(text: bytes) -> dict:
    import json
    return json.loads(text)


AUTHED_BAD = [
    ("GET", b"/api/audit/v1/action/?limit=5_000", b"", b"", "limit"),
    ("GET", b"/api/audit/v1/action/?limit=%D9%A5", b"", b"", "limit"),    # Arabic-Indic 5
    ("GET", b"/api/audit/v1/action/?offset=%C2%B2", b"", b"", "offset"),   # superscript 2
    ("GET", "/api/audit/v1/action/?offset=\u00b2".encode(), b"", b"", "malformed"),   # raw
    ("GET", b"/api/audit/v1/action/?limit=" + b"9" * 5000, b"", b"", "limit"),
    ("GET", b"/api/audit/v1/action/?cursor=%C2%B2.1", b"", b"", "cursor"),
    ("GET", b"/api/audit/v1/action/?state=%ff", b"", b"", "state"),
    ("GET", b"/api/audit/v1/action/?user=%ff%fe", b"", b"", "user"),
    ("POST", b"/api/audit/v1/action/", b"User-Agent: \xff\xfe\r\n",
     b'{"action": "A"}', "User-Agent"),
    ("POST", b"/api/audit/v1/action/", b"", b'{"action": "\xed\xa0\x80"}', "UTF-8"),
    ("POST", b"/api/audit/v1/action/", b"", b'{"action": "A", "user": "\xff"}', "UTF-8"),
    ("POST", b"/api/audit/v1/action/", b"X-Thing: \x01\r\n", b'{"action": "A"}', None),
]


@pytest.mark.parametrize("method, target, extra, body, names", AUTHED_BAD,
                         ids=[f"{i}-{case[4]}" for i, case in enumerate(AUTHED_BAD)])
def test_bad_bytes_anywhere_are_a_4xx_that_names_the_field(plain_server, method, target, extra,
                                                          body, names):
    head = (method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\n" + auth_header(plain_server)
            + b"Content-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    lines_before = len(plain_server.stderr_lines)
    status, headers, text = raw_request(plain_server.port, head, body)
    assert 400 <= status < 500, (status, text)
    assert headers["content-type"].startswith("application/json")
    message = json_of(text)["error"]
    if names:
        assert names in message, message
    assert not [line for line in plain_server.stderr_lines[lines_before:] if "Traceback" in line
                or "exc=" in line or "level=error" in line]


def test_tail_values_on_the_log_stream(plain_server):
    import json
    import urllib.request
    req = urllib.request.Request(
        f"{plain_server.url}/api/audit/v1/action/", method="POST",
        data=json.dumps({"action": "A"}).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": basic_bytes(b"admin", plain_server.admin_key.encode()).decode()})
    uuid = json.loads(urllib.request.urlopen(req).read())["uuid"]
    for tail in (b"%C2%B2", b"9" * 5000, b"%ff", b"-1", b"1_0"):
        head = (b"GET /api/audit/v1/action/" + uuid.encode() + b"/logs/?tail=" + tail
                + b" HTTP/1.1\r\nHost: x\r\n" + auth_header(plain_server)
                + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        status, headers, text = raw_request(plain_server.port, head)
        assert status == 400 and "tail" in json_of(text)["error"], (tail, status, text)
    status, _, text = raw_request(plain_server.port, head.replace(b"tail=1_0", "tail=\u00b2".encode()))
    assert status == 400 and "malformed" in json_of(text)["error"]     # raw UTF-8 in the URL


def test_malformed_requests_never_put_a_key_in_the_log(plain_server):
    import base64
    key = plain_server.admin_key
    token = base64.b64encode(f"admin:{key}".encode())
    attempts = [
        b"GET /api/audit/v1/action/?%74oken=" + key.encode() + b"&user=admin HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/audit/v1/events/?user=admin&%74%6Fken=" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\x0b" + token + b"\r\n\r\n",
        b"GET /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic \x00" + token + b"\r\n\r\n",
        b"GET /api/audit/v1/action/" + key.encode() + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"BREW /api/audit/v1/action/?token=" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/audit/v1/action/?token=" + key.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    ]
    before = len(plain_server.stderr_lines)
    for attempt in attempts:
        status, headers, _ = raw_request(plain_server.port, attempt)
        assert 400 <= status < 500 and headers["content-type"].startswith("application/json")
    health(plain_server.port)     # the log has caught up with the requests above
    logged = "".join(plain_server.stderr_lines[before:])
    assert key not in logged and token.decode() not in logged
    assert "Traceback" not in logged


# ---------------------------------------------------------------------------- quotas and bounds

async def test_retries_and_cancels_are_rate_limited_per_user(aiohttp_client, tmp_path):
    from auditd.config import Config
    from auditd.http.app import create_app
    from auditd.http.appkeys import STORE
    from conftest import Api

    client = await aiohttp_client(create_app(Config(db=str(tmp_path / "q.db"), retry_limit=3,
                                                    cancel_limit=2)))
    store = client.server.app[STORE]
    keys = {"admin": await store.add_user("admin", "admin"),
            "producer": await store.add_user("producer", "producer"),
            "alice": await store.add_user("alice"), "bob": await store.add_user("bob")}
    api = Api(client, keys)
    done = await api.record(namespace="alice", state="Success", body="x" * 1000)
    answers = [await api.post(f"/api/audit/v1/action/{done['uuid']}/retry/", as_="alice")
               for _ in range(5)]
    assert [a.status for a in answers] == [202, 202, 202, 429, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert "at most 3 a minute" in (await answers[3].json())["error"]
    total = (await api.list(as_="alice"))["meta"]["total_count"]
    assert total == 4                      # the refused retries recorded nothing
    # another user has its own allowance
    shared = await api.record(namespace="bob", state="Failed")
    assert (await api.post(f"/api/audit/v1/action/{shared['uuid']}/retry/", as_="bob")).status \
        == 202
    running = [await api.record(namespace="alice") for _ in range(3)]
    statuses = [(await api.post(f"/api/audit/v1/action/{a['uuid']}/cancel/", as_="alice")).status
                for a in running]
    assert statuses == [202, 202, 429]
    assert (await api.fetch(running[2]["uuid"]))["state"] == "In progress"


def test_bodies_in_flight_are_bounded_with_a_503(tmp_path):
    srv = ServerProcess(tmp_path / "b.db", extra_args=["--max-inflight-bytes", "1048576"]).start()
    try:
        head = (b"POST /api/audit/v1/action/ HTTP/1.1\r\nHost: x\r\n" + auth_header(srv)
                + b"Content-Type: application/json\r\nContent-Length: 700000\r\n\r\n")
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        slow.sendall(head + b'{"action": "')          # then it stalls, holding its reservation
        health(srv.port)
        status, headers, text = raw_request(srv.port, head, b'{"action": "' + b"x" * 699988 + b'"}')
        assert status == 503 and headers["retry-after"] == "1"
        assert "retry" in json_of(text)["error"]
        slow.close()                                  # its reservation goes with it
        small = b'{"action": "A"}'
        deadline = time.monotonic() + 10
        while True:
            status, _, text = raw_request(srv.port, head.replace(b"700000", str(len(small)).encode()),
                                          small)
            if status != 503 or time.monotonic() > deadline:
                break
        assert status == 201, text
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- revoked access

async def _open_streams(srv, user, key, uuid):
    import aiohttp
    session = aiohttp.ClientSession(
        headers={"Authorization": basic_bytes(user.encode(), key.encode()).decode()})
    logs = await session.ws_connect(f"{srv.url}/api/audit/v1/action/{uuid}/logs/?tail=0")
    events = await session.ws_connect(f"{srv.url}/api/audit/v1/events/")
    assert (await events.receive_json(timeout=5))["type"] == "auth"
    return session, logs, events


async def _closed_with(ws) -> tuple[int, str]:
    import aiohttp
    while True:
        message = await ws.receive(timeout=5)     # well beyond the one second it may take
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, message.extra or ""


@pytest.mark.parametrize("revoke", [("org", "remove-member", "acme", "alice"),
                                    ("user", "rotate-key", "alice"),
                                    ("user", "remove", "alice")])
async def test_streams_close_with_1008_when_access_is_revoked(tmp_path, revoke):
    import json
    import urllib.request
    srv = ServerProcess(tmp_path / "r.db").start()
    try:
        key = srv.cli("user", "add", "alice").stdout.strip()
        srv.cli("org", "add", "acme")
        srv.cli("org", "add-member", "acme", "alice")
        req = urllib.request.Request(
            f"{srv.url}/api/audit/v1/action/", method="POST",
            data=json.dumps({"action": "A", "namespace": "acme"}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": basic_bytes(b"admin", srv.admin_key.encode()).decode()})
        uuid = json.loads(urllib.request.urlopen(req).read())["uuid"]
        session, logs, events = await _open_streams(srv, "alice", key, uuid)
        try:
            assert srv.cli(*revoke).returncode == 0
            for ws in (logs, events):
                code, reason = await _closed_with(ws)
                assert code == 1008 and "access changed" in reason
        finally:
            await session.close()
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- one server a file

def test_a_second_server_on_the_same_database_is_refused_naming_the_holder(tmp_path):
    first = ServerProcess(tmp_path / "one.db").start()
    try:
        second = ServerProcess(tmp_path / "one.db")
        with pytest.raises(RuntimeError) as err:
            second.start()
        assert second.proc.wait(timeout=30) != 0
        message = "".join(second.stderr_lines)
        assert "already served by another auditd" in message
        assert f"pid {first.proc.pid}" in message and "one.db.lock" in message
        assert "Traceback" not in message and "exited early" in str(err.value)
        # the admin commands still work beside the running server
        done = first.cli("user", "add", "carol")
        assert done.returncode == 0 and done.stdout.strip()
    finally:
        first.stop()
    # once the first has stopped, the file can be served again
    again = ServerProcess(tmp_path / "one.db").start()
    again.stop()


# ---------------------------------------------------------------------------- storage faults

def _get(srv, path):
    import json
    import urllib.error
    req = urllib.request.Request(srv.url + path, headers={
        "Authorization": basic_bytes(b"admin", srv.admin_key.encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        assert err.headers["Content-Type"].startswith("application/json")
        return err.code, json.loads(err.read())


def _post(srv, path, payload):
    import json
    import urllib.error
    req = urllib.request.Request(srv.url + path, method="POST", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "Authorization":
                                          basic_bytes(b"admin", srv.admin_key.encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_damaged_database_answers_503_and_health_says_degraded(tmp_path):
    import sqlite3
    db = tmp_path / "damaged.db"
    srv = ServerProcess(db).start()
    for i in range(300):
        assert _post(srv, "/api/audit/v1/action/", {"action": f"A{i}", "body": "x" * 500})[0] == 201
    key = srv.admin_key
    srv.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'actions'").fetchone()[0]
    with open(db, "r+b") as f:           # garbage over the actions table's root page
        f.seek((root - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    srv = ServerProcess(db)
    srv.admin_key = key
    srv.start()
    try:
        lines_before = len(srv.stderr_lines)
        status, body = _get(srv, "/api/audit/v1/action/")
        assert status == 503 and "damaged" in body["error"] and "auditd check" in body["error"]
        status, body = _get(srv, "/_auditd/health")
        assert status == 503 and body["status"] == "degraded" and "damaged" in body["error"]
        assert not [line for line in srv.stderr_lines[lines_before:] if "Traceback" in line]
    finally:
        srv.stop()


def test_a_full_disk_gives_503_and_writes_resume_when_space_returns(tmp_path):
    import os
    import subprocess
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    try:
        srv = ServerProcess(mount / "full.db").start()
        try:
            filler = mount / "filler"
            i = 0
            with open(filler, "wb") as f:      # leave about 300 KB free
                free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
                f.write(b"\0" * max(0, free - 300_000))
            while i < 2000:
                status, body = _post(srv, "/api/audit/v1/action/",
                                      {"action": f"Fill {i}", "body": "y" * 4000})
                i += 1
                if status != 201:
                    break
            assert status == 503 and "disk is full" in body["error"], body
            status, health_body = _get(srv, "/_auditd/health")
            assert status == 503 and health_body["status"] == "degraded"
            filler.unlink()                    # space comes back
            status, body = _post(srv, "/api/audit/v1/action/", {"action": "After"})
            assert status == 201, body
            assert _get(srv, "/_auditd/health")[0] == 200
            assert _get(srv, f"/api/audit/v1/action/{body['uuid']}/")[0] == 200
        finally:
            srv.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_check_on_start_refuses_a_damaged_database(tmp_path):
    import sqlite3
    db = tmp_path / "qc.db"
    srv = ServerProcess(db).start()
    for i in range(50):
        _post(srv, "/api/audit/v1/action/", {"action": f"A{i}", "body": "x" * 2000})
    srv.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master "
                            "WHERE name = 'actions_by_time'").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x07" * page_size)
    checked = ServerProcess(db, extra_args=["--check-on-start"])
    with pytest.raises(RuntimeError):
        checked.start()
    assert checked.proc.wait(timeout=30) != 0
    message = "".join(checked.stderr_lines)
    assert "quick_check" in message and "auditd check" in message and "Traceback" not in message
