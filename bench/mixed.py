"""Mixed load (issue 11): recording, following and every filter at once, on the 1M database.

    .venv/bin/python -m bench.mixed                      # 10 minutes under load
    .venv/bin/python -m bench.mixed --seconds 60         # a quick look

One auditd server on a scratch copy of the suite's 1M database. First each load alone (the idle
figures, --idle seconds each): readers cycling through every query of bench/filters.py (wrk, 8
connections, one request after another through the list), and 64 producers recording actions
(wrk POST, as the suite's record figure). Then, for --seconds, the readers, the producers and
100 WebSocket followers of a running action fed at the suite's fan-out rate, all at once. Printed:
errors, the readers' p99 against their idle p99 (target <= 5x), the write rate against its idle
rate (within 2x), the followers' delivery, and the server's RSS every 30 s after a minute of
warm-up (flat: the last minute's mean within 10% of the first's). For the diagnosis: the readers'
p50, and the share of a core the event loop and the writer process took under the load and the
share of the time each waited for a CPU (a loop near 100% that seldom waits is saturated by the
load itself; a loop that often waits was short of cores).

Everything shares the machine's cores: the server and its writer process, two wrk processes, two
follower processes and their producer. `--nice N` runs every load generator but the readers' wrk
(the 64 producers' wrk, the followers, their producer) at niceness N, so that they take the CPU
the server leaves, as clients on other machines would; the readers' wrk stays at 0, since its
latencies are the figure. The default, 0, is the issue's figure.
"""
import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import build, procs, wrk  # noqa: E402
from bench.filters import A, prepare, queries  # noqa: E402
from bench.run import (FANOUT_BATCH, FANOUT_RATE, FOLLOWERS, FOLLOWER_PROCS, RECORD_BODY,  # noqa
                       _spawn, load, machine, p99, request, say, settle)

WARM_UP = 60


def _cycle_script(paths: list[tuple[str, str]]) -> str:
    """A wrk Lua script sending each (path, Authorization) in turn."""
    items = ",\n".join("{%s, %s}" % (json.dumps(p), json.dumps(a)) for p, a in paths)
    return ("local paths = {\n" + items + "\n}\nlocal i = 0\n"
            "request = function()\n  i = i % #paths + 1\n"
            "  return wrk.format('GET', paths[i][1], {Authorization = paths[i][2]})\nend\n")


def _wrk_script(url: str, connections: int, seconds: float, script: str) -> wrk.Result:
    import re
    import subprocess
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run([wrk.find_wrk(), "-t2", f"-c{connections}", f"-d{round(seconds)}s",
                          "--latency", "--timeout", "10s", "-s", f.name, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99_ms = wrk._ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    p50_ms = wrk._ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return wrk.Result(rps, p50_ms, p99_ms, requests, errors)


class Background(threading.Thread):
    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result = fn, args, None

    def run(self):
        self.result = self.fn(*self.args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--idle", type=float, default=30)
    parser.add_argument("--nice", type=int, default=0,
                        help="niceness of the load generators but the readers' wrk (default 0)")
    args = parser.parse_args(argv)
    say(f"bench.mixed: {args.seconds:g} s under load; load generators but the readers at "
        f"nice {args.nice}; {machine()}; load {load()}")
    db = build.copy_database(1_000_000, "mixed")
    keys = prepare(db)
    keys["producer"] = procs.basic("benchproducer",
                                   procs.ensure_user(db, "benchproducer", "producer"))
    server = procs.auditd_server("mixed", db)
    server.start()
    try:
        one = request(server, "GET", A, keys["admin"])["objects"][0]["uuid"]
        paths = [((A + f"&uuid={one}") if p == "{uuid}" else p, keys[who])
                 for _, who, p in queries(1_000_000)]
        script = _cycle_script(paths)
        post = {"method": "POST", "body": json.dumps(RECORD_BODY),
                "headers": {"Authorization": keys["producer"], "Content-Type": "application/json"}}
        record_url = server.url + "/api/audit/v1/action/"
        _wrk_script(server.url, 8, 2, script)          # warm the caches
        settle(server)
        idle_read = _wrk_script(server.url, 8, args.idle, script)
        settle(server)
        idle_write = wrk.run(record_url, 64, args.idle, **post, nice=args.nice)
        settle(server)
        say(f"idle: readers {idle_read.rps:,.0f} req/s p99 {idle_read.p99_ms:.2f} ms; "
            f"writers {idle_write.rps:,.0f} req/s p99 {idle_write.p99_ms:.2f} ms")

        action = request(server, "POST", "/api/audit/v1/action/", keys["producer"],
                         {"action": "Service Redeploy", "namespace": "ns00",
                          "state": "In progress", "object": build.BIG_STACK})
        total = int(FANOUT_RATE * args.seconds)
        groups = [_spawn("followers", server.url, action["uuid"], keys["list"],
                         str(FOLLOWERS // FOLLOWER_PROCS), str(total), str(args.seconds + 30),
                         nice=args.nice)
                  for _ in range(FOLLOWER_PROCS)]
        for group in groups:
            if group.stdout.readline().strip() != "ready":
                raise RuntimeError("a follower group did not connect")
        readers = Background(_wrk_script, server.url, 8, args.seconds, script)
        writers = Background(wrk.run, record_url, 64, args.seconds, "POST", post["headers"],
                             post["body"], 2, args.nice)
        producer = _spawn("producer", server.url, action["uuid"], keys["producer"],
                          str(FANOUT_RATE), str(FANOUT_BATCH), str(total), nice=args.nice)
        began = time.monotonic()
        readers.start()
        writers.start()
        rss = []
        cpu = [(began, procs.scheduled(server.pid))] * 2   # first and last reading under load
        while readers.is_alive() or writers.is_alive():
            time.sleep(5)
            rss.append((time.monotonic() - began, procs.rss_kb(server.pid) / 1024))
            if readers.is_alive() and writers.is_alive():
                cpu[1] = (time.monotonic(), procs.scheduled(server.pid))
            if len(rss) % 6 == 0:
                say(f"  {rss[-1][0]:5.0f} s: RSS {rss[-1][1]:.1f} MB; load {load()}")
        readers.join()
        writers.join()
        producer.wait()
        results = [json.loads(group.stdout.readline()) for group in groups]
    finally:
        server.stop()
    report(args, idle_read, idle_write, readers.result, writers.result, results, rss,
           cpu_shares(server.pid, *cpu))


def cpu_shares(server_pid, first, last) -> str:
    """The event loop's and the writer process's share of a core under the load, and the share of
    the time each waited for a CPU: a loop near 100% with little waiting is saturated by the load;
    much waiting means the machine's cores were short (the load generators share them)."""
    seconds = last[0] - first[0]
    if seconds <= 0:
        return "not measured (a run too short)"
    shares = {pid: ((last[1][pid][0] - ran) / seconds / 1e9,
                    (last[1][pid][1] - waited) / seconds / 1e9)
              for pid, (ran, waited) in first[1].items() if pid in last[1]}
    loop = shares.pop(server_pid, None)
    writer = max(shares.values(), default=None)    # the busiest child is the writer process
    parts = [f"{name} {share[0]:.0%} of a core, waiting for one {share[1]:.0%}"
             for name, share in (("event loop", loop), ("writer process", writer)) if share]
    return "; ".join(parts) or "not measured (no schedstat)"


def report(args, idle_read, idle_write, read, write, followers, rss, cpu="not measured"):
    received = sum(r["received"] for r in followers)
    latencies = [x for r in followers for x in r["latencies_ms"]]
    expected = int(FANOUT_RATE * args.seconds) * FOLLOWERS
    after = [mb for t, mb in rss if t >= WARM_UP] or [mb for _, mb in rss]   # a short run
    first = statistics.mean([mb for t, mb in rss if WARM_UP <= t < WARM_UP + 60] or after)
    last = statistics.mean([mb for t, mb in rss if t >= rss[-1][0] - 60] or after)
    errors = read.errors + write.errors + (expected - received)
    rows = [
        ("errors (readers, writers, follower lines missing)",
         f"{read.errors}, {write.errors}, {expected - received}", "0", errors == 0),
        ("readers p99 under load vs idle", f"{read.p99_ms:.2f} ms vs {idle_read.p99_ms:.2f} ms "
         f"({read.p99_ms / idle_read.p99_ms:.2f}x)", "<= 5x",
         read.p99_ms <= 5 * idle_read.p99_ms),
        ("readers req/s under load vs idle", f"{read.rps:,.0f} vs {idle_read.rps:,.0f}", "info",
         None),
        ("writes/s under load vs idle", f"{write.rps:,.0f} vs {idle_write.rps:,.0f} "
         f"({write.rps / idle_write.rps:.2f})", ">= 0.5", write.rps >= idle_write.rps / 2),
        ("followers: lines delivered, p99 append-to-delivery",
         f"{received:,} of {expected:,}, p99 {p99(latencies):.1f} ms", "info", None),
        ("readers p50 under load vs idle", f"{read.p50_ms:.2f} ms vs {idle_read.p50_ms:.2f} ms",
         "info", None),
        ("server under load (main threads, /proc/PID/schedstat)", cpu, "info", None),
        ("RSS after warm-up: first minute, last minute, max",
         f"{first:.1f}, {last:.1f}, {max(after):.1f} MB ({last / first - 1:+.1%})", "within 10%",
         abs(last / first - 1) <= 0.10),
    ]
    say(f"\nmixed load, {args.seconds:g} s, 1M actions, load generators but the readers at nice "
        f"{args.nice} ({time.strftime('%Y-%m-%d %H:%M')})")
    say("| figure | value | target | result |\n|---|---|---|---|")
    for name, value, target, ok in rows:
        say(f"| {name} | {value} | {target} | "
            f"{'info' if ok is None else 'PASS' if ok else 'MISS'} |")


if __name__ == "__main__":
    main()
