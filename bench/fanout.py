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
import selectors
import socket
import sys
import time
from urllib.parse import urlsplit

import aiohttp

PAD = "x" * 60


def _logs_url(base: str, uuid: str) -> str:
    return f"{base.replace('http://', 'ws://')}/api/audit/v1/action/{uuid}/logs/?tail=0&follow=true"


class _Follower:
    """One raw WebSocket follower: its socket, unparsed bytes and progress."""

    def __init__(self, sock, pending: bytes):
        self.sock, self.buffer = sock, bytearray(pending)
        self.got, self.first, self.open = 0, None, True


def _handshake(base: str, path: str, auth: str, rcvbuf: int = 0):
    """A connected socket past a WebSocket handshake for `path`, and the bytes read after it."""
    parts = urlsplit(base)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\n"
                  f"Host: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: {auth}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1 if rcvbuf else 4096)
        if not chunk:
            raise SystemExit("the server closed a follower's handshake")
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"follower refused: {head.decode(errors='replace')}")
    return sock, rest


def _frames(buffer: bytearray):
    """(opcode, payload) of each complete frame at the start of `buffer` (removed from it)."""
    out, at, size = [], 0, len(buffer)
    while size - at >= 2:
        opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
        head = 2
        if length == 126:
            if size - at < 4:
                break
            length, head = int.from_bytes(buffer[at + 2:at + 4], "big"), 4
        elif length == 127:
            if size - at < 10:
                break
            length, head = int.from_bytes(buffer[at + 2:at + 10], "big"), 10
        if size - at < head + length:
            break
        out.append((opcode, bytes(buffer[at + head:at + head + length])))
        at += head + length
    del buffer[:at]
    return out


def followers(base, uuid, auth, count, expected, window):
    """`count` followers; each stops after `expected` lines, or `window` s after its first line.

    Plain sockets and one selector, not an HTTP library: with 50 followers in one process a batch
    of lines arrives as 1,500 messages at once, and a library's per-message work (a task wake-up,
    a queue, a JSON parse) would add its own queueing to the latency measured. Each read is
    stamped when it returns, before its frames are parsed, so a line's latency is from the
    producer's send to its bytes arriving here."""
    path = _logs_url(base, uuid).split(urlsplit(base).netloc, 1)[1]
    group = [_Follower(*_handshake(base, path, auth)) for _ in range(count)]
    selector = selectors.DefaultSelector()
    for follower in group:
        follower.sock.setblocking(False)
        selector.register(follower.sock, selectors.EVENT_READ, follower)
    print("ready", flush=True)
    latencies, firsts, lasts, received = [], [], [], 0
    cpu, wall = time.process_time(), time.perf_counter()
    started = time.time()

    def close(follower):
        nonlocal received
        follower.open = False
        received += follower.got
        if follower.first is not None:
            lasts.append(time.time())
        selector.unregister(follower.sock)
        follower.sock.close()

    while any(f.open for f in group):
        now = time.time()
        for follower in group:   # the window closes a follower even when nothing arrives
            if follower.open and (now - started > 60 if follower.first is None
                                  else now > follower.first + window):
                close(follower)
        arrived = []
        for key, _ in selector.select(timeout=0.2):
            try:
                chunk = key.data.sock.recv(1 << 20)
            except BlockingIOError:
                continue
            arrived.append((key.data, chunk, time.time()))
        for follower, chunk, stamp in arrived:
            if not follower.open:
                continue
            if not chunk:
                close(follower)
                continue
            follower.buffer += chunk
            for opcode, payload in _frames(follower.buffer):
                if opcode != 0x1:    # close (or anything but text): this follower is done
                    close(follower)
                    break
                if follower.first is None:
                    follower.first = stamp
                    firsts.append(stamp)
                line = json.loads(payload)["log"]
                latencies.append(stamp - float(line.split(" ", 2)[1]))
                follower.got += 1
                if follower.got >= expected:
                    close(follower)
                    break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"received": received, "first": min(firsts, default=None),
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
    path = _logs_url(base, uuid).split(urlsplit(base).netloc, 1)[1]
    sock, _ = _handshake(base, path, auth, rcvbuf=4096)
    print("ready", flush=True)
    sys.stdin.read()          # hold the socket, unread, until the orchestrator closes stdin
    sock.close()


def main(argv):
    role, base, uuid, auth, *rest = argv
    if role == "followers":
        count, expected, window = int(rest[0]), int(rest[1]), float(rest[2])
        followers(base, uuid, auth, count, expected, window)
    elif role == "producer":
        asyncio.run(producer(base, uuid, auth, float(rest[0]), int(rest[1]), int(rest[2])))
    elif role == "stalled":
        stalled(base, uuid, auth)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(sys.argv[1:])
