"""The PostgreSQL figures beside SQLite's, from one run (issue 12):

    .venv/bin/python -m bench.pg                          # 1M actions (and 10k), 10 s per run
    .venv/bin/python -m bench.pg --size 50000 --seconds 5 --rounds 1   # a quick look

It takes the benchmark's SQLite databases of SIZE and SMALL actions (bench/build.py) and their
PostgreSQL copies, the databases $AUDITD_BENCH_PG_SIZE and $AUDITD_BENCH_PG_SMALL
($AUDITD_BENCH_PG defaults to postgresql://root@127.0.0.1:5432/auditd_bench), made and filled
with `auditd migrate` when they do not hold all the actions (a migration that stopped is
completed). It starts one SQLite server on SIZE, one PostgreSQL server on SMALL and two on SIZE
(one database), and measures, each list run ROUNDS times interleaved (the median is shown):

- list newest 25 (the suite's LIST_PATH) with wrk, 32 connections and 2 threads: SQLite at SIZE,
  one PostgreSQL instance at SIZE and at SMALL (whose p99 is the reference for "flat"), and both
  SIZE instances at once (one wrk each, 16 connections and 1 thread);
- cross-instance log fan-out: one producer appending through instance B at the suite's rate,
  100 followers, half on A and half on B (bench/fanout.py, one process per instance).

Each list run also says where the machine's CPU went (cores busy in all, and how much of it the
auditd servers and their PostgreSQL backends used): on 2 cores, two instances can only gain what
one instance leaves idle. Like the suite it reports, it does not gate.
"""
import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from bench import build, procs, wrk
from bench.run import (FANOUT_BATCH, FANOUT_RATE, LIST_PATH, LIST_USER, _spawn, load, p99,
                       request, say, settle)

PG = os.environ.get("AUDITD_BENCH_PG", "postgresql://root@127.0.0.1:5432/auditd_bench")


def pg_url(base: str, size: int) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"{parts.path}_{size}"))


async def _admin(url: str, sql: str):
    import asyncpg
    parts = urlsplit(url)
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        return await conn.execute(sql)
    finally:
        await conn.close()


async def _count(url: str):
    import asyncpg
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return None
    try:
        if not await conn.fetchval("SELECT to_regclass('action_keys') IS NOT NULL"):
            return 0
        return await conn.fetchval("SELECT count(*) FROM action_keys")
    finally:
        await conn.close()


def settle_database(url: str, limit: float = 120.0):
    """Wait until no backend of `url`'s database runs a statement: the server keeps running a
    query whose client gave up (it finishes it and drops the answer), and a slow query of one
    run must not land in the next run's numbers."""
    import asyncpg

    async def wait():
        conn = await asyncpg.connect(url)
        try:
            deadline = time.monotonic() + limit
            while time.monotonic() < deadline and await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state = 'active' AND pid <> pg_backend_pid()"):
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
    asyncio.run(wait())


def ensure_postgres(size: int, url: str) -> dict:
    """The PostgreSQL copy of the SQLite database of `size` actions: made when missing, and
    completed by `auditd migrate` when it holds fewer actions. Returns what the fill took."""
    sqlite_db = build.ensure_database(size, say)
    count = asyncio.run(_count(url))
    if count is not None and count >= size:
        return {"sqlite": sqlite_db, "filled": None}
    if count is None:
        asyncio.run(_admin(url, f'CREATE DATABASE "{urlsplit(url).path.lstrip("/")}"'))
    say(f"filling {url} from {sqlite_db.name} with auditd migrate ({count or 0:,} there)")
    began = time.monotonic()
    subprocess.run([procs.PYTHON, "-m", "auditd", "migrate", "--from", str(sqlite_db),
                    "--to", url], cwd=procs.REPO, check=True)
    took = time.monotonic() - began
    say(f"  took {took:.0f} s ({(size - (count or 0)) / took:,.0f} actions/s)")
    return {"sqlite": sqlite_db, "filled": (size - (count or 0), took)}


def fanout_two(a, b, producer_auth, follower_auth, total: int, window: float) -> dict:
    """100 followers, 50 on each instance; the producer appends through B."""
    action = request(a, "POST", "/api/audit/v1/action/", producer_auth,
                     {"action": "Service Redeploy", "namespace": "ns00", "state": "In progress",
                      "object": build.BIG_STACK})
    groups = [_spawn("followers", srv.url, action["uuid"], follower_auth, "50", str(total),
                     str(window)) for srv in (a, b)]
    for group in groups:
        if group.stdout.readline().strip() != "ready":
            raise RuntimeError("a follower group did not connect")
    time.sleep(0.2)
    producer = _spawn("producer", b.url, action["uuid"], producer_auth, str(FANOUT_RATE),
                      str(FANOUT_BATCH), str(total))
    sent = json.loads(producer.stdout.readline())
    producer.wait()
    results = [json.loads(group.stdout.readline()) for group in groups]
    for group in groups:
        group.wait()
    received = sum(r["received"] for r in results)
    last = max(r["last"] for r in results if r["last"])
    latencies = [x for r in results for x in r["latencies_ms"]]
    return {"delivered_per_s": received / (last - sent["first"]), "received": received,
            "offered": total * 100, "p99_ms": p99(latencies),
            "by_instance": [r["received"] for r in results]}


def keys_for(db) -> dict:
    return {"list": procs.basic(LIST_USER, procs.ensure_user(db, LIST_USER, "user")),
            "admin": procs.basic("benchadmin", procs.ensure_user(db, "benchadmin", "admin")),
            "producer": procs.basic("benchproducer",
                                    procs.ensure_user(db, "benchproducer", "producer"))}


def _machine() -> tuple[int, int]:
    """(busy, all) jiffies of every core so far."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _cpu(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += procs.cpu_seconds(pid)
        except OSError:       # a backend that ended meanwhile
            pass
    return total


async def _backends(urls) -> list[int]:
    import asyncpg
    conn = await asyncpg.connect(urls[0])
    try:
        return [r[0] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            [urlsplit(u).path.lstrip("/") for u in urls])]
    finally:
        await conn.close()


def measured(run, servers, backends) -> dict:
    """run() -> [wrk results]: their sum, with where the CPU went meanwhile (in cores)."""
    machine, ours, theirs = _machine(), _cpu(s.pid for s in servers), _cpu(backends)
    began = time.monotonic()
    results = run()
    wall = time.monotonic() - began
    machine_after = _machine()
    return {"rps": sum(r.rps for r in results), "p99_ms": max(r.p99_ms for r in results),
            "errors": sum(r.errors for r in results),
            "busy": (machine_after[0] - machine[0]) / (machine_after[1] - machine[1])
            * os.cpu_count(),
            "auditd": (_cpu(s.pid for s in servers) - ours) / wall,
            "postgres": (_cpu(backends) - theirs) / wall}


def list_runs(servers: dict, auth: dict, rounds: int, seconds: float, backends) -> dict:
    """{name: [measured() per round]}; "two" runs both big PostgreSQL instances at once, 16
    connections each."""
    runs = {name: [] for name in ("sqlite", "pg", "pg_small", "two")}
    for server in servers.values():
        wrk.run(server.url + LIST_PATH, 32, 1, headers={"Authorization": auth[server.name]})

    def one(server):
        return lambda: [wrk.run(server.url + LIST_PATH, 32, seconds,
                                headers={"Authorization": auth[server.name]})]

    def two():
        both = [None, None]

        def drive(i, srv):     # one wrk thread each: two in all, as for one instance
            both[i] = wrk.run(srv.url + LIST_PATH, 16, seconds, threads=1,
                              headers={"Authorization": auth[srv.name]})
        threads = [threading.Thread(target=drive, args=(i, s))
                   for i, s in enumerate((servers["a"], servers["b"]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return both
    for _ in range(rounds):
        for name, server in (("sqlite", servers["sqlite"]), ("pg", servers["a"]),
                             ("pg_small", servers["small"])):
            settle(server)
            runs[name].append(measured(one(server), [server], backends))
        settle(servers["a"])
        settle(servers["b"])
        runs["two"].append(measured(two, [servers["a"], servers["b"]], backends))
    return runs


def _median(results, field):
    return statistics.median(r[field] for r in results)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000,
                        help="the size whose PostgreSQL p99 is the reference for 'flat'")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=PG, help="PostgreSQL URL; the databases are its name "
                                                 "followed by _SIZE and _SMALL (made if missing)")
    args = parser.parse_args(argv)
    wrk.find_wrk()
    big_url, small_url = pg_url(args.pg, args.size), pg_url(args.pg, args.small)
    big, small = ensure_postgres(args.size, big_url), ensure_postgres(args.small, small_url)
    keys = {"sqlite": keys_for(big["sqlite"]), "pg": keys_for(big_url)}
    keys["small"] = keys["pg"] if small_url == big_url else keys_for(small_url)
    servers = {
        "sqlite": procs.auditd_server(f"sqlite-{args.size}", big["sqlite"]),
        "a": procs.auditd_server(f"pg-a-{args.size}", big_url),
        "b": procs.auditd_server(f"pg-b-{args.size}", big_url),
        "small": procs.auditd_server(f"pg-{args.small}", small_url),
    }
    auth = {servers["sqlite"].name: keys["sqlite"]["list"], servers["a"].name: keys["pg"]["list"],
            servers["b"].name: keys["pg"]["list"], servers["small"].name: keys["small"]["list"]}
    began = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [load()]
    try:
        for server in servers.values():
            server.start()
        backends = asyncio.run(_backends([big_url, small_url]))
        runs = list_runs(servers, auth, args.rounds, args.seconds, backends)
        loads.append(load())
        total = int(FANOUT_RATE * args.seconds)
        fan = fanout_two(servers["a"], servers["b"], keys["pg"]["producer"], keys["pg"]["admin"],
                         total, args.seconds + 10)
        loads.append(load())
    finally:
        for server in servers.values():
            server.stop()
    rps = {name: _median(results, "rps") for name, results in runs.items()}
    p99s = {name: _median(results, "p99_ms") for name, results in runs.items()}
    flat = p99s["pg"] / p99s["pg_small"]
    rows = [
        (f"list newest 25, SQLite, {args.size:,}", rps["sqlite"], p99s["sqlite"], "reference"),
        (f"list newest 25, PostgreSQL 1 instance, {args.size:,}", rps["pg"], p99s["pg"],
         f"{rps['pg'] / rps['sqlite']:.0%} of SQLite (target >= 25%: "
         f"{'PASS' if rps['pg'] >= 0.25 * rps['sqlite'] else 'MISS'}); p99 {flat:.2f}x "
         f"{args.small:,}'s (target <= 1.5x: {'PASS' if flat <= 1.5 else 'MISS'})"),
        (f"list newest 25, PostgreSQL 1 instance, {args.small:,}", rps["pg_small"],
         p99s["pg_small"], "reference for p99"),
        (f"list newest 25, PostgreSQL 2 instances, {args.size:,}", rps["two"], p99s["two"],
         f"{rps['two'] / rps['pg']:.2f}x one instance (target >= 1.3x: "
         f"{'PASS' if rps['two'] >= 1.3 * rps['pg'] else 'MISS'})"),
    ]
    say(f"\nPostgreSQL beside SQLite, {began}: {args.size:,} and {args.small:,} actions, "
        f"{args.rounds} rounds of {args.seconds:g} s per list run (median shown), "
        f"{os.cpu_count()} cores, load average {' -> '.join(loads)}")
    for name, size in ((big_url, args.size), (small_url, args.small)):
        filled = (big if size == args.size else small)["filled"]
        if filled:
            say(f"  {name} filled by auditd migrate: {filled[0]:,} actions in {filled[1]:.0f} s")
    for name, value, latency, note in rows:
        print(f"{name:<48} {value:>8,.0f} req/s  p99 {latency:7.1f} ms   {note}")
    print("  each round: req/s, p99, errors; cores busy on the machine (of which the auditd "
          "server(s) / their PostgreSQL backends)")
    for name, results in runs.items():
        print(f"  {name:>8}: " + ", ".join(
            f"{r['rps']:,.0f} {r['p99_ms']:.0f} ms {r['errors']} "
            f"({r['busy']:.2f}: {r['auditd']:.2f}/{r['postgres']:.2f})" for r in results))
    ok = fan["delivered_per_s"] >= 25_000 and fan["p99_ms"] <= 100
    print(f"{'log fan-out, 100 followers on 2 instances':<48} {fan['delivered_per_s']:>8,.0f} "
          f"lines/s p99 {fan['p99_ms']:7.1f} ms   {fan['received']:,}/{fan['offered']:,} "
          f"delivered (by instance {fan['by_instance']}; target >= 25,000/s, p99 <= 100 ms: "
          f"{'PASS' if ok else 'MISS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
