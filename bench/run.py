"""auditd's benchmark suite: one command, one table.

    .venv/bin/python -m bench            # full: 10k and 1M actions, 3 rounds of 10 s
    .venv/bin/python -m bench --quick    # reduced: 10k and 50k actions, 2 rounds of 2 s (< 2 min)

Every target is a ratio to a reference measured in the same run (or a fixed budget of memory or
start-up time), because a shared machine is noisy. Load comes from separate processes over loopback:
wrk for HTTP, bench/fanout.py for WebSockets. Nothing here is a test: it reports, it does not gate.
"""
import argparse
import http.client
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):          # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import build, procs, sqlite_ref, wrk  # noqa: E402

HERE = Path(__file__).resolve().parent


@dataclass
class Plan:
    small: int
    big: int
    rounds: int
    seconds: float
    fanout_seconds: float
    stall_lines: int
    stall_window: float
    startups: int


FULL = Plan(small=10_000, big=1_000_000, rounds=3, seconds=10, fanout_seconds=10,
            stall_lines=100_000, stall_window=10, startups=5)
QUICK = Plan(small=10_000, big=50_000, rounds=2, seconds=2, fanout_seconds=3,
             stall_lines=20_000, stall_window=3, startups=3)

LIST_USER = "ns00"                 # a user whose one namespace is ns00
LIST_PATH = "/api/audit/v1/action/?state=Success&limit=25"
RECORD_BODY = {       # an action on a service, with its stack as parent
    "action": "Service Start", "namespace": "ns01", "state": "Success",
    "object": "/api/app/v1/ns01/service/6f1c1d1e-3b0a-4c8e-9a53-2f1f3a0b7c11/",
    "parents": ["/api/app/v1/ns01/stack/0b5ae2c5-67a4-4d55-8f5b-12c4b8f0e9a3/"],
    "method": "POST", "path": "/api/app/v1/ns01/service/6f1c/start/",
    "user": "ns01", "ip": "10.1.2.3", "user_agent": "docker-cloud-cli/1.0.9"}
FOLLOWERS, FOLLOWER_PROCS = 100, 2
FANOUT_RATE, FANOUT_BATCH = 300, 30     # 300 lines/s x 100 followers = 30,000 deliveries/s offered


def say(message: str):
    print(message, flush=True)


class RssSampler:
    """The highest VmRSS of a process (and its descendants, unless told not to: the writer
    process) while the block runs, sampled every 100 ms."""

    def __init__(self, pid: int, descendants: bool = True):
        self.pid, self.peak_kb, self._stop = pid, 0, threading.Event()
        self.descendants = descendants

    def __enter__(self):
        self.peak_kb = procs.rss_kb(self.pid, descendants=self.descendants)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak_kb = max(self.peak_kb, procs.rss_kb(self.pid, descendants=self.descendants))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, procs.rss_kb(self.pid, descendants=self.descendants))


def request(server, method, path, auth, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": auth}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    response = conn.getresponse()
    data = json.loads(response.read())
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path} -> {response.status}: {data}")
    return data


def check_page(server, path, auth, what) -> int:
    """Fetch a page once and check it is a real page; returns its total_count."""
    page = request(server, "GET", path, auth)
    if not page["objects"]:
        raise RuntimeError(f"{what}: {path} returned no actions: {page['meta']}")
    say(f"  {what}: total_count {page['meta']['total_count']:,}, "
        f"{len(page['objects'])} actions on the page")
    return page["meta"]["total_count"]


def settle(server, quiet=0.05, limit=30.0):
    """Wait until the server is idle (CPU share under `quiet` over 200 ms): queries a client gave
    up on at the end of one run must not land in the next run's numbers."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = procs.cpu_seconds(server.pid)
        time.sleep(0.2)
        if procs.cpu_seconds(server.pid) - before < quiet * 0.2:
            return


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    import os
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo")
                  if line.startswith("MemTotal:"))
    return f"{model}, {os.cpu_count()} CPUs, {mem_kb / 1024 / 1024:.1f} GiB RAM"


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def median(values):
    return statistics.median(values)


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


# ---------------------------------------------------------------------------- the log fan-out

def _spawn(*args, stdin=subprocess.DEVNULL, nice: int = 0):
    return subprocess.Popen([*wrk.niced(nice), procs.PYTHON, str(HERE / "fanout.py"), *args],
                            cwd=procs.REPO,
                            stdin=stdin, stdout=subprocess.PIPE, text=True)


def fanout(server, producer_auth, follower_auth, *, rate, batch, total, window, stalled=False):
    """Followers + producer (+ a follower that never reads); returns the measured figures."""
    action = request(server, "POST", "/api/audit/v1/action/", producer_auth,
                     {"action": "Service Redeploy", "namespace": "ns00", "state": "In progress",
                      "object": build.BIG_STACK})
    uuid = action["uuid"]
    per_proc = FOLLOWERS // FOLLOWER_PROCS
    groups = [_spawn("followers", server.url, uuid, follower_auth, str(per_proc), str(total),
                     str(window)) for _ in range(FOLLOWER_PROCS)]
    for group in groups:
        if group.stdout.readline().strip() != "ready":
            raise RuntimeError("a follower group did not connect: see its stderr above")
    stuck = None
    if stalled:
        stuck = _spawn("stalled", server.url, uuid, follower_auth, stdin=subprocess.PIPE)
        if stuck.stdout.readline().strip() != "ready":
            raise RuntimeError("the stalled follower did not connect")
    time.sleep(0.2)     # let the server settle its new sockets before the baseline
    # The server process is where a stalled follower's lines would pile up; the writer process
    # grows too, with the appends themselves (its SQLite cache, Python's free lists): apart.
    with RssSampler(server.pid, descendants=False) as rss, RssSampler(server.pid) as whole:
        baseline_kb = procs.rss_kb(server.pid, descendants=False)
        whole_baseline_kb = procs.rss_kb(server.pid)
        cpu, wall = procs.cpu_seconds(server.pid), time.perf_counter()
        producer = _spawn("producer", server.url, uuid, producer_auth, str(rate), str(batch),
                          str(total))
        sent = json.loads(producer.stdout.readline())
        producer.wait()
        results = [json.loads(group.stdout.readline()) for group in groups]
        for group in groups:
            group.wait()
        cpu = (procs.cpu_seconds(server.pid) - cpu) / (time.perf_counter() - wall)
    if stuck is not None:
        stuck.stdin.close()
        stuck.wait()
    received = sum(r["received"] for r in results)
    last = max(r["last"] for r in results if r["last"])
    latencies = [x for r in results for x in r["latencies_ms"]]
    return {"delivered_per_s": received / (last - sent["first"]), "received": received,
            "offered": total * FOLLOWERS, "p99_ms": p99(latencies),
            "rss_growth_mb": (rss.peak_kb - baseline_kb) / 1024, "server_cpu": cpu,
            "rss_growth_all_mb": (whole.peak_kb - whole_baseline_kb) / 1024,
            "follower_procs_cpu": [r["cpu_share"] for r in results]}


# ---------------------------------------------------------------------------- the run

def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced run, under two minutes")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--seconds", type=float, help="override the seconds per wrk run")
    parser.add_argument("--src", metavar="DIR",
                        help="benchmark the auditd package in DIR (e.g. a `git archive` of a "
                             "commit) instead of this checkout's")
    args = parser.parse_args(argv)
    if args.src:
        procs.REPO = Path(args.src).resolve()
        if not (procs.REPO / "auditd" / "__init__.py").exists():
            raise SystemExit(f"--src {args.src}: no auditd package there")
    plan = QUICK if args.quick else FULL
    plan.rounds = args.rounds or plan.rounds
    plan.seconds = args.seconds or plan.seconds
    wrk.find_wrk()
    began = time.monotonic()

    say(f"auditd benchmark ({'quick' if args.quick else 'full'}) of {procs.REPO / 'auditd'}: "
        f"{plan}")
    say(f"machine: {machine()}; load average {load()}")
    procs.compile_bytecode()      # the servers start as installed (see compile_bytecode)
    small_db = build.ensure_database(plan.small, say)
    big_db = build.ensure_database(plan.big, say)
    say("creating users with `python -m auditd user add/rotate-key`")
    keys = {}
    for db in (small_db, big_db):
        keys[db] = {"list": procs.basic(LIST_USER, procs.ensure_user(db, LIST_USER, "user")),
                    "admin": procs.basic("benchadmin", procs.ensure_user(db, "benchadmin",
                                                                         "admin")),
                    "producer": procs.basic("benchproducer",
                                            procs.ensure_user(db, "benchproducer", "producer"))}
    group_db = build.copy_database(plan.small, "group-commit")
    single_db = build.copy_database(plan.small, "no-group-commit")
    onloop_db = build.copy_database(plan.small, "no-writer-process")
    cached_db = build.copy_database(plan.big, "list-cache")   # a second server of the big one
    writer_keys = keys[small_db]          # the copies carry the small database's users

    trivial = procs.trivial_server()
    big = procs.auditd_server(f"auditd-{plan.big}", big_db)
    # the default settings: a repeated list is answered from memory (the others read every one)
    cached = procs.auditd_server(f"auditd-{plan.big}-list-cache", cached_db, list_cache=True)
    small = procs.auditd_server(f"auditd-{plan.small}", small_db)
    grouped = procs.auditd_server("auditd-group-commit", group_db)
    single = procs.auditd_server("auditd-no-group-commit", single_db, "--no-group-commit")
    onloop = procs.auditd_server("auditd-no-writer-process", onloop_db, "--no-writer-process")
    servers = [trivial, big, cached, small, grouped, single, onloop]
    results: dict[str, list] = {}
    try:
        for server in servers:
            server.start()
        say("servers up: " + ", ".join(f"{s.name} pid {s.pid} port {s.port}" for s in servers))

        deep_offset = plan.big // 2
        deep_path = f"/api/audit/v1/action/?offset={deep_offset}&limit=25"
        related_path = (f"/api/audit/v1/action/?object={build.BIG_STACK}&include_related=true"
                        "&limit=25")
        check_page(big, LIST_PATH, keys[big_db]["list"], f"list ({plan.big:,})")
        check_page(small, LIST_PATH, keys[small_db]["list"], f"list ({plan.small:,})")
        check_page(big, deep_path, keys[big_db]["admin"], f"deep page offset {deep_offset:,}")
        # the same position as the deep page, reached by following `next` from the page before
        before = request(big, "GET", f"/api/audit/v1/action/?offset={deep_offset - 25}&limit=25",
                         keys[big_db]["admin"])
        cursor_path = before["meta"]["next"] if "cursor=" in (before["meta"]["next"] or "") \
            else None
        if cursor_path:
            check_page(big, cursor_path, keys[big_db]["admin"], "deep page by next link")
        related = check_page(big, related_path, keys[big_db]["list"], "include_related 20x10")
        if related < 221:
            raise RuntimeError(f"include_related found {related} actions, expected >= 221")

        record_body = json.dumps(RECORD_BODY)
        post = {"method": "POST", "body": record_body,
                "headers": {"Authorization": writer_keys["producer"],
                            "Content-Type": "application/json"}}
        http_runs = [
            ("trivial_32", trivial, "/", 32, {}),
            ("list_big", big, LIST_PATH, 32, {"headers": {"Authorization": keys[big_db]["list"]}}),
            ("list_cached", cached, LIST_PATH, 32,
             {"headers": {"Authorization": keys[big_db]["list"]}}),
            ("list_small", small, LIST_PATH, 32,
             {"headers": {"Authorization": keys[small_db]["list"]}}),
            ("deep", big, deep_path, 32, {"headers": {"Authorization": keys[big_db]["admin"]}}),
            *([("deep_cursor", big, cursor_path, 32,
                {"headers": {"Authorization": keys[big_db]["admin"]}})] if cursor_path else []),
            ("related", big, related_path, 32,
             {"headers": {"Authorization": keys[big_db]["list"]}}),
            ("trivial_64", trivial, "/", 64, {}),
            # context, not a target's reference: aiohttp's own cost of a POST with this body
            ("trivial_post_64", trivial, "/", 64, post),
            ("record_group", grouped, "/api/audit/v1/action/", 64, post),
            ("record_single", single, "/api/audit/v1/action/", 64, post),
            ("record_onloop", onloop, "/api/audit/v1/action/", 64, post),
        ]
        say("warming up (1 s each)")
        for _, server, path, conns, extra in http_runs:
            wrk.run(server.url + path, conns, 1, **extra)
            settle(server)
        rss_peak_kb = 0
        for round_no in range(1, plan.rounds + 1):
            for name, server, path, conns, extra in http_runs:
                cpu, wall = procs.cpu_seconds(server.pid), time.perf_counter()
                if server is big and name == "list_big":
                    with RssSampler(big.pid) as rss:
                        result = wrk.run(server.url + path, conns, plan.seconds, **extra)
                    rss_peak_kb = max(rss_peak_kb, rss.peak_kb)
                else:
                    result = wrk.run(server.url + path, conns, plan.seconds, **extra)
                used = procs.cpu_seconds(server.pid) - cpu
                result.server_cpu = used / (time.perf_counter() - wall)
                result.cpu_us_per_request = used * 1e6 / max(1, result.requests)
                settle(server)
                results.setdefault(name, []).append(result)
                flag = f"  ERRORS: {result.errors}" if result.errors else ""
                say(f"  round {round_no} {name:14s} {result.rps:9,.0f} req/s  "
                    f"p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                    f"server CPU {result.server_cpu:4.0%}, "
                    f"{result.cpu_us_per_request:,.0f} us/request{flag}")
        single.stop()

        say("sqlite3 reference: the same rows in batches of 64, synchronous=FULL")
        sqlite_rates = [sqlite_ref.insert_rate(small_db, build.DATA_DIR / "scratch-sqlite.db",
                                               64, plan.seconds / 2) for _ in range(plan.rounds)]
        say(f"  {median(sqlite_rates):,.0f} rows/s")

        say(f"log fan-out: {FOLLOWERS} followers, {FANOUT_RATE} lines/s in batches of "
            f"{FANOUT_BATCH}")
        fan = []
        for round_no in range(1, plan.rounds + 1):
            figures = fanout(grouped, writer_keys["producer"], writer_keys["admin"],
                             rate=FANOUT_RATE, batch=FANOUT_BATCH,
                             total=int(FANOUT_RATE * plan.fanout_seconds),
                             window=plan.fanout_seconds + 10)
            fan.append(figures)
            say(f"  round {round_no}: {figures['delivered_per_s']:,.0f} lines/s delivered, "
                f"p99 {figures['p99_ms']:.1f} ms ({figures['received']:,} of "
                f"{figures['offered']:,}); CPU: server {figures['server_cpu']:.0%}, follower "
                "processes " + ", ".join(f"{c:.0%}" for c in figures["follower_procs_cpu"]))
        say(f"stalled follower: {plan.stall_lines:,} lines appended in batches of 1000 while one "
            f"follower never reads; the {FOLLOWERS} others measured for {plan.stall_window} s")
        stall = fanout(grouped, writer_keys["producer"], writer_keys["admin"], rate=0,
                       batch=1000, total=plan.stall_lines, window=plan.stall_window,
                       stalled=True)
        say(f"  RSS growth {stall['rss_growth_mb']:.1f} MB, others "
            f"{stall['delivered_per_s']:,.0f} lines/s; CPU: server {stall['server_cpu']:.0%}, "
            "follower processes " + ", ".join(f"{c:.0%}" for c in stall["follower_procs_cpu"]))

        big.stop()
        say(f"start-up on {plan.big:,} actions until the port answers")
        startups, trivial_startups = [], []
        for _ in range(plan.startups):
            server = procs.auditd_server(f"auditd-{plan.big}-startup", big_db)
            startups.append(server.start("/api/audit/v1/action/"))
            server.stop()
            ref = procs.trivial_server()
            trivial_startups.append(ref.start())
            ref.stop()
        say(f"  {median(startups):.3f} s (trivial aiohttp: {median(trivial_startups):.3f} s)")
    finally:
        for server in servers:
            server.stop()

    def m(name, attr):
        return median(getattr(r, attr) for r in results[name])

    rows = []

    def row(figure, value, unit, reference, ref_unit, ratio, target, ok):
        rows.append((figure, value, unit, reference, ref_unit, ratio, target, ok))

    big_label = f"{plan.big // 1000:,}k" if plan.big < 1_000_000 else f"{plan.big // 1_000_000}M"
    small_label = f"{plan.small // 1000}k"
    r = m("list_cached", "rps") / m("trivial_32", "rps")
    row(f"list newest 25, 1 ns, state, {big_label}, c32", m("list_cached", "rps"), "req/s",
        m("trivial_32", "rps"), "req/s trivial", r, ">= 0.25", r >= 0.25)
    r = m("list_big", "rps") / m("trivial_32", "rps")
    row("  the same, every request read (list_cache_bytes=0)", m("list_big", "rps"), "req/s",
        m("trivial_32", "rps"), "req/s trivial", r, ">= 0.25", r >= 0.25)
    r = m("list_big", "p99_ms") / m("list_small", "p99_ms")
    row(f"list p99 {big_label} vs {small_label}", m("list_big", "p99_ms"), "ms",
        m("list_small", "p99_ms"), f"ms at {small_label}", r, "<= 1.5", r <= 1.5)
    r = m("deep", "p99_ms") / m("list_big", "p99_ms")
    row(f"deep page ?offset={deep_offset:,} p99 (admin)", m("deep", "p99_ms"), "ms",
        m("list_big", "p99_ms"), "ms newest-25", r, "info" if cursor_path else "<= 3",
        None if cursor_path else r <= 3)
    if cursor_path:
        r = m("deep_cursor", "p99_ms") / m("list_big", "p99_ms")
        row(f"deep page {deep_offset:,} by next link p99", m("deep_cursor", "p99_ms"), "ms",
            m("list_big", "p99_ms"), "ms newest-25", r, "<= 3", r <= 3)
    r = m("related", "p99_ms") / m("list_big", "p99_ms")
    row("include_related 20x10 stack p99", m("related", "p99_ms"), "ms",
        m("list_big", "p99_ms"), "ms newest-25", r, "<= 3", r <= 3)
    r = m("record_group", "rps") / m("trivial_64", "rps")
    row("record action, c64", m("record_group", "rps"), "req/s", m("trivial_64", "rps"),
        "req/s trivial", r, ">= 0.20", r >= 0.20)
    r = m("record_group", "rps") / m("trivial_post_64", "rps")
    row("record vs trivial POST of the same body", m("record_group", "rps"), "req/s",
        m("trivial_post_64", "rps"), "req/s trivial POST", r, "info", None)
    r = m("record_group", "rps") / m("record_single", "rps")
    row("record: group commit vs --no-group-commit", m("record_group", "rps"), "req/s",
        m("record_single", "rps"), "req/s alone", r, ">= 3", r >= 3)
    r = m("record_group", "rps") / m("record_onloop", "rps")
    row("record: writer process vs --no-writer-process", m("record_group", "rps"), "req/s",
        m("record_onloop", "rps"), "req/s on the loop", r, "info", None)
    # CPU per request is steadier than req/s when other processes take the CPUs
    # (the server's and its children's: the writer process, the body parser)
    r = m("trivial_32", "cpu_us_per_request") / m("list_big", "cpu_us_per_request")
    row(f"list {big_label}: server CPU per request", m("list_big", "cpu_us_per_request"),
        "us", m("trivial_32", "cpu_us_per_request"), "us trivial", r, "info (>= 0.25)", None)
    r = m("trivial_64", "cpu_us_per_request") / m("record_group", "cpu_us_per_request")
    row("record: server CPU per request", m("record_group", "cpu_us_per_request"), "us",
        m("trivial_64", "cpu_us_per_request"), "us trivial", r, "info (>= 0.20)", None)
    r = m("record_group", "rps") / median(sqlite_rates)
    row("record vs sqlite3 batches of 64 (disk)", m("record_group", "rps"), "req/s",
        median(sqlite_rates), "rows/s", r, "info", None)
    v = median(f["delivered_per_s"] for f in fan)
    row(f"log fan-out, {FOLLOWERS} followers", v, "lines/s", None, "", None, ">= 25,000",
        v >= 25_000)
    v = median(f["p99_ms"] for f in fan)
    row("log fan-out p99 append-to-delivery", v, "ms", None, "", None, "<= 50 ms", v <= 50)
    row(f"stalled follower, {plan.stall_lines:,} lines: RSS growth", stall["rss_growth_mb"], "MB",
        None, "", None, "<= 20 MB", stall["rss_growth_mb"] <= 20)
    row("  the same with the writer process", stall["rss_growth_all_mb"], "MB", None, "", None,
        "info", None)
    row("stalled follower: others' fan-out", stall["delivered_per_s"], "lines/s", None, "", None,
        ">= 25,000", stall["delivered_per_s"] >= 25_000)
    row(f"RSS serving {big_label} under list load", rss_peak_kb / 1024, "MB", None, "", None,
        "<= 200 MB", rss_peak_kb / 1024 <= 200)
    v = median(startups)
    row(f"start-up on {big_label} until the port answers", v, "s", median(trivial_startups),
        "s trivial", v / median(trivial_startups), "<= 1 s", v <= 1)

    errors = {name: sum(r.errors for r in rs) for name, rs in results.items() if
              any(r.errors for r in rs)}
    table = render(rows)
    say("")
    say(table)
    if errors:
        say(f"WARNING: non-2xx responses or socket errors during: {errors}")
    if m("trivial_32", "rps") < 5000:
        say("note: the trivial reference is below 5,000 req/s: the machine is busy; ratios still "
            "compare like with like")
    say(f"load average at the end: {load()} (other processes compete for the 2 cores: absolute "
        "figures such as lines/s move with it)")
    say(f"({time.monotonic() - began:.0f} s; each figure the median of {plan.rounds} runs; "
        f"python {platform.python_version()}, asyncio; wrk -t2 over loopback)")
    (build.DATA_DIR / "last-run.json").write_text(json.dumps({
        "plan": plan.__dict__, "rows": rows, "errors": errors,
        "runs": {k: [r.__dict__ for r in v] for k, v in results.items()},
        "fanout": [{k: v for k, v in f.items()} for f in fan], "stall": stall,
        "sqlite_rows_per_s": sqlite_rates, "startups": startups,
        "trivial_startups": trivial_startups}, indent=1))
    return 0 if all(ok is not False for *_, ok in rows) else 1


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit in ("req/s", "lines/s", "rows/s") or unit.startswith("req/s") or \
            unit.startswith("rows"):
        return f"{value:,.0f} {unit}"
    if unit.startswith("us"):
        return f"{value:,.0f} {unit}"
    if unit.startswith("ms") or unit == "MB":
        return f"{value:,.1f} {unit}"
    return f"{value:.3f} {unit}".rstrip()


def render(rows) -> str:
    header = ("figure", "value", "reference", "ratio", "target", "result")
    lines = [header]
    for figure, value, unit, reference, ref_unit, ratio, target, ok in rows:
        lines.append((figure, _fmt(value, unit), _fmt(reference, ref_unit),
                      "-" if ratio is None else f"{ratio:.2f}", target,
                      "info" if ok is None else "PASS" if ok else "MISS"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
