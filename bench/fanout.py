"""The log fan-out load generator: WebSocket followers, a producer, and a follower that stops reading.

Each runs as its own process (never in the server's event loop), started by bench/run.py:

    fanout.py followers URL UUID AUTH COUNT EXPECTED WINDOW   -> prints "ready", then one JSON line
    fanout.py producer  URL UUID AUTH RATE BATCH TOTAL        -> one JSON line
    fanout.py stalled   URL UUID AUTH                         -> prints "ready", then never reads

A log line's text starts with its number and the producer's send time (time.time()), so a follower
computes append-to-delivery latency from the line alone.
"""
import asyncio
import base64
import json
import os
import socket
import sys
import time
from urllib.parse import urlsplit

import aiohttp

PAD = "x" * 60


def _logs_url(base: str, uuid: str) -> str:
    return f"{base.replace('http://', 'ws://')}/api/audit/v1/action/{uuid}/logs/?tail=0&follow=true"


async def followers(base, uuid, auth, count, expected, window):
    """`count` followers; each stops after `expected` lines, or `window` s after its first line."""
    latencies, received, firsts, lasts = [], [0], [], []
    ready = asyncio.Event()
    connected = [0]

    async def follow(session):
        async with session.ws_connect(_logs_url(base, uuid), headers={"Authorization": auth},
                                      max_msg_size=0,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
            connected[0] += 1
            if connected[0] == count:
                ready.set()
            got, first = 0, None
            while got < expected:
                timeout = 60 if first is None else first + window - time.time()
                if timeout <= 0:
                    break
                try:
                    msg = await ws.receive(timeout=timeout)
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                if first is None:
                    first = now
                    firsts.append(now)
                text = json.loads(msg.data)["log"]
                latencies.append(now - float(text.split(" ", 2)[1]))
                got += 1
            received[0] += got
            if first is not None:
                lasts.append(time.time())

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(follow(session)) for _ in range(count)]
        await ready.wait()
        print("ready", flush=True)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*tasks)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"received": received[0], "first": min(firsts, default=None),
                      "cpu_share": cpu / wall,
                      "last": max(lasts, default=None),
                      "latencies_ms": [round(x * 1000, 2) for x in latencies]}), flush=True)


async def producer(base, uuid, auth, rate, batch, total):
    """Append `total` lines in batches of `batch`; `rate` lines/s (0: as fast as answered)."""
    url = f"{base}/api/audit/v1/action/{uuid}/logs/"
    sent, first, began = 0, None, time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as session:
        while sent < total:
            if rate:
                due = began + sent / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            n = min(batch, total - sent)
            now = time.time()
            first = first or now
            lines = [f"{sent + i + 1} {now:.6f} {PAD}" for i in range(n)]
            async with session.post(url, json=lines) as response:
                if response.status != 201:
                    raise SystemExit(f"append failed: {response.status} {await response.text()}")
                await response.read()
            sent += n
    print(json.dumps({"sent": sent, "first": first, "last": time.time()}), flush=True)


def stalled(base, uuid, auth):
    """A follower that completes the handshake and then never reads: its buffers fill up."""
    parts = urlsplit(base)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/audit/v1/action/{uuid}/logs/?tail=0&follow=true HTTP/1.1\r\n"
                  f"Host: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: {auth}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("the server closed the stalled follower's handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"stalled follower refused: {head.decode(errors='replace')}")
    print("ready", flush=True)
    sys.stdin.read()          # hold the socket, unread, until the orchestrator closes stdin
    sock.close()


def main(argv):
    role, base, uuid, auth, *rest = argv
    if role == "followers":
        count, expected, window = int(rest[0]), int(rest[1]), float(rest[2])
        asyncio.run(followers(base, uuid, auth, count, expected, window))
    elif role == "producer":
        asyncio.run(producer(base, uuid, auth, float(rest[0]), int(rest[1]), int(rest[2])))
    elif role == "stalled":
        stalled(base, uuid, auth)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(sys.argv[1:])
