"""What the tamper-evident log costs: record throughput with the tree and without it, measured
in one run, rounds interleaved, and the log's storage per action.

    python -m bench.tree_cost [--rounds 5] [--seconds 5]

Two servers on copies of the 10k benchmark database: one as shipped, one started with
--no-transparency. wrk records actions (the body of the main benchmark's record figure) at 64
connections against each in turn; the table gives the median req/s and server CPU per request
of each, and their ratio (target: with the tree >= 90% of without).
"""
import argparse
import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import build, procs, wrk  # noqa: E402
from bench.run import RECORD_BODY, settle  # noqa: E402


def storage(db: Path) -> dict:
    """Bytes the log keeps: leaves, hashes and row keys, and the stored subtree nodes."""
    with sqlite3.connect(db) as conn:
        events, leaf_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(leaf)), 0) FROM events").fetchone()
        nodes = conn.execute("SELECT count(*) FROM tree_nodes").fetchone()[0]
        actions = conn.execute("SELECT count(*) FROM actions").fetchone()[0]
        doc_bytes = conn.execute("SELECT sum(length(doc)) FROM actions").fetchone()[0]
    overhead = leaf_bytes + events * (32 + 16) + nodes * (32 + 16)
    return {"events": events, "actions": actions, "bytes": overhead,
            "per_action": overhead / max(actions, 1), "doc_per_action": doc_bytes / actions}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.tree_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args(argv)
    wrk.find_wrk()
    build.ensure_database(10_000, print)
    dbs = {name: build.copy_database(10_000, f"tree-{name}") for name in ("with", "without")}
    key = procs.basic("benchproducer", procs.ensure_user(dbs["with"], "benchproducer",
                                                         "producer"))
    procs.ensure_user(dbs["without"], "benchproducer", "producer")
    key_without = procs.basic("benchproducer", procs.cli(
        "user", "rotate-key", "benchproducer", "--db", str(dbs["without"])).strip())
    servers = {"with": procs.auditd_server("tree-with", dbs["with"], "--no-access-log"),
               "without": procs.auditd_server("tree-without", dbs["without"], "--no-access-log",
                                              "--no-transparency")}
    auth = {"with": key, "without": key_without}
    results = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start("/_auditd/health")
        for name, server in servers.items():   # warm up
            wrk.run(server.url + "/api/audit/v1/action/", 64, 1, method="POST",
                    body=json.dumps(RECORD_BODY), headers={
                        "Authorization": auth[name], "Content-Type": "application/json"})
            settle(server)
        for round_no in range(1, args.rounds + 1):
            for name, server in servers.items():
                cpu, wall = procs.cpu_seconds(server.pid), time.perf_counter()
                result = wrk.run(server.url + "/api/audit/v1/action/", 64, args.seconds,
                                 method="POST", body=json.dumps(RECORD_BODY), headers={
                                     "Authorization": auth[name],
                                     "Content-Type": "application/json"})
                used = procs.cpu_seconds(server.pid) - cpu
                result.cpu_us_per_request = used * 1e6 / max(1, result.requests)
                results[name].append(result)
                print(f"  round {round_no} {name:<8} {result.rps:>8,.0f} req/s  "
                      f"{result.cpu_us_per_request:6.0f} us/request  errors {result.errors}")
                settle(server)
    finally:
        for server in servers.values():
            server.stop()
    rps = {n: statistics.median(r.rps for r in rs) for n, rs in results.items()}
    cpu = {n: statistics.median(r.cpu_us_per_request for r in rs) for n, rs in results.items()}
    ratio = rps["with"] / rps["without"]
    kept = storage(dbs["with"])
    print()
    print("| figure | with the tree | without | ratio | target | result |")
    print("|---|---|---|---|---|---|")
    print(f"| record, c64, req/s (median of {args.rounds}) | {rps['with']:,.0f} | "
          f"{rps['without']:,.0f} | {ratio:.2f} | >= 0.90 | {'PASS' if ratio >= 0.9 else 'MISS'} |")
    print(f"| server CPU per record | {cpu['with']:.0f} us | {cpu['without']:.0f} us | "
          f"{cpu['without'] / cpu['with']:.2f} | info | info |")
    print(f"\nthe log keeps {kept['bytes']:,} bytes for {kept['events']:,} events of "
          f"{kept['actions']:,} actions: {kept['per_action']:.0f} bytes per action (the "
          f"action's own document is {kept['doc_per_action']:.0f} bytes)")


if __name__ == "__main__":
    main()
