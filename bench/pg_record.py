"""Recording on PostgreSQL, this tree against another one, from one run: what a change to the
write path (the tallies' triggers, say) costs a producer.

    .venv/bin/python -m bench.pg_record --against /tmp/before   # a `git archive` of a commit
    .venv/bin/python -m bench.pg_record --seconds 5 --rounds 1  # this tree alone, a quick look

Each tree gets a new database ($AUDITD_BENCH_PG with the suffix _record_0, _record_1, made empty
at the start), one auditd on it, and wrk posting the suite's record body with 64 connections
(bench/run.py's `record action, c64`) for SECONDS, ROUNDS times interleaved; it prints each run
and the medians. Like the suite it reports, it does not gate.
"""
import argparse
import asyncio
import json
import statistics
from pathlib import Path

from bench import pg, procs, wrk
from bench.run import RECORD_BODY, load, machine, say, settle

PATH = "/api/audit/v1/action/"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pg_record", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="DIR", help="another tree to measure beside this")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=pg.PG, help="PostgreSQL URL; the databases are its name "
                                                    "with _record_N")
    args = parser.parse_args(argv)
    wrk.find_wrk()
    trees = [Path(args.against).resolve()] if args.against else []
    trees.append(procs.REPO)
    say(f"bench.pg_record: {len(trees)} tree(s), {args.rounds} rounds of {args.seconds:g} s, "
        f"c64; {machine()}; load {load()}")
    this_repo, servers = procs.REPO, []
    try:
        for n, tree in enumerate(trees):
            url = pg.pg_url(args.pg, f"record_{n}")
            name = url.rsplit("/", 1)[1]
            asyncio.run(pg._admin(url, f'DROP DATABASE IF EXISTS "{name}"'))
            asyncio.run(pg._admin(url, f'CREATE DATABASE "{name}"'))
            procs.REPO = tree        # the CLI and the server run from this tree
            key = procs.cli("user", "add", "benchproducer", "--role", "producer", "--db", url,
                            "--create")
            server = procs.auditd_server(f"record-{n}", url)
            server.start()
            servers.append((tree, url, server, {
                "method": "POST", "body": json.dumps(RECORD_BODY),
                "headers": {"Authorization": procs.basic("benchproducer", key),
                            "Content-Type": "application/json"}}))
        procs.REPO = this_repo
        for _, _, server, post in servers:       # warm up
            wrk.run(server.url + PATH, 64, 1, **post)
            settle(server)
        rates: dict[Path, list] = {tree: [] for tree in trees}
        for round_no in range(1, args.rounds + 1):
            for tree, url, server, post in servers:
                result = wrk.run(server.url + PATH, 64, args.seconds, **post)
                say(f"  round {round_no}, {tree}: {result.rps:,.0f} req/s, p99 "
                    f"{result.p99_ms:.1f} ms{f', ERRORS {result.errors}' if result.errors else ''}")
                rates[tree].append(result.rps)
                settle(server)
                pg.settle_database(url)
    finally:
        procs.REPO = this_repo
        for *_, server, _ in servers:
            server.stop()
    say("medians:")
    for tree in trees:
        say(f"  {tree}: {statistics.median(rates[tree]):,.0f} req/s")
    if args.against:
        ratio = statistics.median(rates[trees[1]]) / statistics.median(rates[trees[0]])
        say(f"  this tree / {trees[0]}: {ratio:.2f}")


if __name__ == "__main__":
    main()
