"""The PostgreSQL figures beside SQLite's, from one run (issue 12):

    .venv/bin/python -m bench.pg                      # 10k actions, 5 s per wrk run
    .venv/bin/python -m bench.pg --size 50000 --seconds 10

It takes the benchmark's SQLite database of SIZE actions (bench/build.py), copies it into the
PostgreSQL database $AUDITD_BENCH_PG (default postgresql://root@127.0.0.1:5432/auditd_bench,
made and filled with `auditd migrate` when it does not hold SIZE actions), starts one SQLite
server and two PostgreSQL servers on that one database, and measures:

- list newest 25 (the suite's LIST_PATH) with wrk, 32 connections: SQLite, one PostgreSQL
  instance, and both instances at once (16 connections each);
- cross-instance log fan-out: one producer appending through instance B at the suite's rate,
  100 followers, half on A and half on B (bench/fanout.py, one process per instance).

Like the suite it reports, it does not gate. What it does not cover yet: 1M actions on
PostgreSQL (filling it by `auditd migrate` takes long), the deep-page and related-object rows.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from bench import build, procs, wrk
from bench.run import FANOUT_BATCH, FANOUT_RATE, LIST_PATH, LIST_USER, _spawn, p99, request, say

PG = os.environ.get("AUDITD_BENCH_PG", "postgresql://root@127.0.0.1:5432/auditd_bench")


async def _admin(url: str, sql: str):
    import asyncpg
    parts = urlsplit(url)
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        return await conn.fetchval(sql)
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


def ensure_postgres(size: int, url: str):
    """The PostgreSQL copy of the SQLite database of `size` actions."""
    sqlite_db = build.ensure_database(size, say)
    count = asyncio.run(_count(url))
    if count is not None and count >= size:
        return sqlite_db
    name = urlsplit(url).path.lstrip("/")
    asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    say(f"filling {url} from {sqlite_db.name} with auditd migrate (once)")
    began = time.monotonic()
    subprocess.run([procs.PYTHON, "-m", "auditd", "migrate", "--from", str(sqlite_db),
                    "--to", url], cwd=procs.REPO, check=True)
    say(f"  took {time.monotonic() - began:.0f} s")
    return sqlite_db


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
    import json
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--pg", default=PG, help="PostgreSQL database URL (made if missing)")
    args = parser.parse_args(argv)
    wrk.find_wrk()
    sqlite_db = ensure_postgres(args.size, args.pg)
    keys = {}
    for db in (sqlite_db, args.pg):
        keys[str(db)] = {
            "list": procs.basic(LIST_USER, procs.ensure_user(db, LIST_USER, "user")),
            "admin": procs.basic("benchadmin", procs.ensure_user(db, "benchadmin", "admin")),
            "producer": procs.basic("benchproducer",
                                    procs.ensure_user(db, "benchproducer", "producer"))}
    lite = procs.auditd_server(f"sqlite-{args.size}", sqlite_db)
    a = procs.Server("pg-a", [procs.PYTHON, "-m", "auditd", "serve", "--db", args.pg,
                              "--port", "{port}"])
    b = procs.Server("pg-b", [procs.PYTHON, "-m", "auditd", "serve", "--db", args.pg,
                              "--port", "{port}"])
    servers = [lite, a, b]
    rows = []
    try:
        for server in servers:
            server.start()
        list_auth = {"Authorization": keys[str(args.pg)]["list"]}
        for server, auth in ((lite, {"Authorization": keys[str(sqlite_db)]["list"]}),
                             (a, list_auth), (b, list_auth)):
            wrk.run(server.url + LIST_PATH, 32, 1, headers=auth)     # warm up
        sqlite_list = wrk.run(lite.url + LIST_PATH, 32, args.seconds,
                              headers={"Authorization": keys[str(sqlite_db)]["list"]})
        one = wrk.run(a.url + LIST_PATH, 32, args.seconds, headers=list_auth)
        both = [None, None]

        def drive(i, srv):
            both[i] = wrk.run(srv.url + LIST_PATH, 16, args.seconds, headers=list_auth)
        threads = [threading.Thread(target=drive, args=(i, s)) for i, s in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two_rps = sum(r.rps for r in both)
        rows += [
            ("list newest 25, SQLite", f"{sqlite_list.rps:,.0f} req/s", f"p99 {sqlite_list.p99_ms:.1f} ms"),
            ("list newest 25, PostgreSQL 1 instance", f"{one.rps:,.0f} req/s",
             f"p99 {one.p99_ms:.1f} ms; {one.rps / sqlite_list.rps:.0%} of SQLite (target >= 25%)"),
            ("list newest 25, PostgreSQL 2 instances", f"{two_rps:,.0f} req/s",
             f"p99 {max(r.p99_ms for r in both):.1f} ms; {two_rps / one.rps:.2f}x one instance "
             "(target >= 1.3x)"),
        ]
        total = int(FANOUT_RATE * args.seconds)
        fan = fanout_two(a, b, keys[str(args.pg)]["producer"], keys[str(args.pg)]["admin"],
                         total, args.seconds + 10)
        rows.append(("log fan-out, 100 followers on 2 instances",
                     f"{fan['delivered_per_s']:,.0f} lines/s",
                     f"p99 {fan['p99_ms']:.1f} ms; {fan['received']:,}/{fan['offered']:,} "
                     f"delivered (by instance {fan['by_instance']}; target >= 25,000/s, "
                     "p99 <= 100 ms)"))
    finally:
        for server in servers:
            server.stop()
    say(f"\nPostgreSQL beside SQLite, {args.size:,} actions, {args.seconds:g} s per run "
        f"({os.cpu_count()} cores)")
    for name, value, note in rows:
        print(f"{name:<45} {value:>14}   {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
