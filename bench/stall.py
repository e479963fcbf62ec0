"""How long one big request stalls everyone else (RELIABILITY.md, issue 10's finding 6).

    python -m bench.stall

A server on a fresh database; one client asks /_auditd/health back to back and records each
answer's latency, while another sends, one after the other, a 100 KB record (the first body
that a worker process parses: it starts that process), an 8 MB text/plain log append, an
8 MB JSON log append (an array of strings), a 4 MB record body, an 8 MB append of a few long
lines, 8 MB of tiny JSON values, and two admin seeds (POST /_auditd/seed): 30,000 actions
(7 MB) and 4,000 actions of 20 log lines each (8 MB). Printed: the health latencies' median,
99th percentile and maximum while nothing else runs, and during each big request.
"""
import base64
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid as uuid_lib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procs  # noqa: E402


def _seed(actions: int, lines: int) -> bytes:
    """A seed body: `actions` action items (public addresses, so each is located), each with
    `lines` log lines of 84 characters."""
    items = []
    for i in range(actions):
        item = {"action": "Service Deploy", "uuid": str(uuid_lib.uuid4()), "user": f"user{i % 50}",
                "object": f"/api/app/v1/service/{i:08d}/", "ip": f"81.2.{i % 250}.{i % 200}",
                "state": "Success", "body": '{"name": "web", "image": "nginx"}'}
        if lines:
            item["logs"] = [f"{j:03d} " + "x" * 80 for j in range(lines)]
        items.append(item)
    return json.dumps(items).encode()


def _ask(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


class Pinger(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.samples, self.stop = port, [], threading.Event()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            began = time.perf_counter()
            conn.request("GET", "/_auditd/health")
            conn.getresponse().read()
            self.samples.append((began, time.perf_counter() - began))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stall.db"
        key = procs.cli("user", "add", "bench", "--role", "admin", "--db", str(db),
                        "--create").strip()
        auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{key}".encode()).decode()}
        server = procs.auditd_server("stall", db, "--no-access-log", "--max-body-bytes",
                                     str(16 * 1024 * 1024), *sys.argv[1:])
        server.start("/_auditd/health")
        try:
            status, body = _ask(server.port, "POST", "/api/audit/v1/action/",
                                json.dumps({"action": "Big"}),
                                {**auth, "Content-Type": "application/json"})
            uuid = json.loads(body)["uuid"]
            line = "x" * 799
            loads = [
                ("the first body over 64 KiB, 100 KB (starts the parser process)",
                 "/api/audit/v1/action/",
                 json.dumps({"action": "Big", "body": "w" * 100_000}).encode(),
                 "application/json"),
                ("8 MB text/plain log append", f"/api/audit/v1/action/{uuid}/logs/",
                 ("\n".join([line] * 10_000)).encode(), "text/plain"),
                ("8 MB JSON log append", f"/api/audit/v1/action/{uuid}/logs/",
                 json.dumps([line] * 10_000).encode(), "application/json"),
                ("4 MB record body (refused: over the body field's 256 KB)",
                 "/api/audit/v1/action/",
                 json.dumps({"action": "Big", "body": "y" * 4_000_000}).encode(),
                 "application/json"),
                ("8 MB JSON log append of 128 lines of 64 KB",
                 f"/api/audit/v1/action/{uuid}/logs/", json.dumps(["z" * 65_000] * 128).encode(),
                 "application/json"),
                ("8 MB JSON array of 4 million numbers (refused: not log lines)",
                 f"/api/audit/v1/action/{uuid}/logs/", ("[" + "1," * 3_999_999 + "1]").encode(),
                 "application/json"),
                ("7 MB seed of 30,000 actions", "/_auditd/seed", _seed(30_000, 0),
                 "application/json"),
                ("8 MB seed of 4,000 actions of 20 log lines", "/_auditd/seed", _seed(4_000, 20),
                 "application/json"),
            ]
            pinger = Pinger(server.port)
            pinger.start()
            time.sleep(1.0)
            spans = [("nothing else", time.perf_counter() - 1.0, time.perf_counter())]
            for name, path, payload, kind in loads:
                began = time.perf_counter()
                status, _ = _ask(server.port, "POST", path, payload,
                                 {**auth, "Content-Type": kind})
                spans.append((f"{name} -> {status}", began, time.perf_counter()))
                time.sleep(0.5)
            pinger.stop.set()
            pinger.join()
        finally:
            server.stop()
    print("| while | health answers | median | 99th percentile | max |")
    print("|---|---|---|---|---|")
    for name, began, ended in spans:
        during = sorted(s for t, s in pinger.samples if began <= t <= ended)
        if during:
            p99 = during[min(len(during) - 1, int(len(during) * 0.99))]
            print(f"| {name} | {len(during)} | {statistics.median(during) * 1000:.1f} ms | "
                  f"{p99 * 1000:.1f} ms | {during[-1] * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
