"""What the forwarding tests share: a real HTTP receiver and a UDP syslog receiver in the test
process on loopback ports, a real `auditd serve` with a [[forward]] configuration, and waiting
for a condition with a deadline."""
import asyncio
import json
import socket
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from conftest import ROOT, ServerProcess, basic, free_port


async def until(condition, what: str, timeout: float = 30.0):
    """Wait until `condition()` is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


async def until_true(check, what: str, timeout: float = 30.0):
    """Like `until`, for a coroutine function `check` (e.g. one that runs the CLI)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


class Receiver:
    """An HTTP endpoint taking NDJSON batches on POST /<path>. `mode`: "ok" (202), "fail" (500
    and nothing kept) or "hold" (the request waits for `release()`, then fails: the batch is
    lost, as when the receiver dies while reading it). `stop()` makes the port refuse
    connections; `start()` listens on the same port again."""

    def __init__(self):
        self.port = free_port()
        self.batches: dict[str, list[list[dict]]] = {}
        self.headers: list[dict] = []
        self.mode, self.failures, self.held = "ok", 0, 0
        self.gate = asyncio.Event()
        self.runner = None

    def url(self, path: str = "ingest") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def start(self):
        app = web.Application()
        app.router.add_post("/{path}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()
        return self

    async def stop(self):
        await self.runner.cleanup()

    def release(self):
        self.gate.set()

    async def handle(self, request):
        body = await request.read()
        self.headers.append(dict(request.headers))
        if self.mode == "fail":
            self.failures += 1
            return web.Response(status=500, text="down for maintenance")
        if self.mode == "hold":
            self.held += 1
            await self.gate.wait()
            return web.Response(status=503)
        batch = [json.loads(line) for line in body.decode("utf-8").splitlines()]
        self.batches.setdefault(request.match_info["path"], []).append(batch)
        return web.Response(status=202)

    def events(self, path: str = "ingest") -> list[dict]:
        return [event for batch in self.batches.get(path, []) for event in batch]

    def ids(self, path: str = "ingest") -> list[int]:
        return [event["id"] for event in self.events(path)]


class SyslogReceiver(asyncio.DatagramProtocol):
    """A syslog receiver: every datagram (UDP, or a local socket at `path`), as text."""

    def __init__(self, path=None):
        self.port, self.path = free_port(), path
        self.messages: list[str] = []

    async def start(self):
        loop = asyncio.get_running_loop()
        if self.path is None:
            self.transport, _ = await loop.create_datagram_endpoint(
                lambda: self, local_addr=("127.0.0.1", self.port))
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(self.path))
            self.transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        return self

    def datagram_received(self, data, addr):
        self.messages.append(data.decode("utf-8"))

    def stop(self):
        self.transport.close()


class SyslogTcpReceiver:
    """A TCP syslog receiver reading octet-counted frames (RFC 6587 3.4.1)."""

    def __init__(self):
        self.port = free_port()
        self.messages: list[str] = []

    async def start(self):
        self.server = await asyncio.start_server(self.client, "127.0.0.1", self.port)
        return self

    async def client(self, reader, writer):
        try:
            while True:
                length = int((await reader.readuntil(b" "))[:-1])
                self.messages.append((await reader.readexactly(length)).decode("utf-8"))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


def sink_toml(**sinks) -> str:
    """[[forward]] tables: sink_toml(name={"url": ..., ...}, ...)."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)
    out = []
    for name, keys in sinks.items():
        out += ["[[forward]]", f"name = {json.dumps(name)}"]
        out += [f"{k} = {value(v)}" for k, v in keys.items()]
    return "\n".join(out) + "\n"


class Auditd:
    """A real `auditd serve` with a configuration file, driven from async tests (its blocking
    parts run in threads, so the receivers in this process keep answering)."""

    def __init__(self, tmp_path, toml: str, db=None):
        self.config = tmp_path / "auditd.toml"
        self.config.write_text(toml)
        self.db = db or tmp_path / "forward.db"
        self.srv = None
        self.session = None

    async def start(self, admin_key=None):
        self.srv = ServerProcess(self.db, ["--config", str(self.config)])
        self.srv.admin_key = admin_key
        await asyncio.to_thread(self.srv.start)
        self.session = aiohttp.ClientSession(headers=basic("admin", self.srv.admin_key))
        return self

    async def stop(self, sig=None):
        await self.session.close()
        return await asyncio.to_thread(self.srv.stop, sig)

    async def call(self, method, path, payload=None, status=None):
        async with self.session.request(method, self.srv.url + path, json=payload) as resp:
            body = await resp.json()
            assert status is None or resp.status == status, (resp.status, body)
            return body

    async def record(self, **fields):
        fields.setdefault("action", "Service Create")
        return await self.call("POST", "/api/audit/v1/action/", fields, 201)

    async def head(self) -> int:
        """The log's size now (a checkpoint signed on demand names it)."""
        return (await self.call("POST", "/api/audit/v1/checkpoint/"))["tree_size"]

    async def metrics(self) -> str:
        async with self.session.get(self.srv.url + "/_auditd/metrics") as resp:
            return await resp.text()

    async def cli(self, *args) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "auditd", *args, "--db", str(self.db),
                             "--config", str(self.config)],
            capture_output=True, text=True, cwd=ROOT, timeout=60)

    async def status(self) -> dict:
        result = await self.cli("forward", "status", "--json")
        assert result.returncode == 0, result.stderr
        return {s["sink"]: s for s in json.loads(result.stdout)["sinks"]}
