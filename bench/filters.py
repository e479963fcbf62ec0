"""The filters section (issue 11): every list filter and the combinations people use, each a
page of 25 with its exact total_count, beside the newest-25 list of the same run.

    .venv/bin/python -m bench.filters                     # 1M actions, 3 rounds of 5 s
    .venv/bin/python -m bench.filters --size 10000000 --beside 1000000   # the growth figure
    .venv/bin/python -m bench.filters --size 50000 --seconds 2 --rounds 1   # a quick look
    .venv/bin/python -m bench.filters --postgres          # the same on PostgreSQL (bench.pg's copy)
    .venv/bin/python -m bench.filters --only offset       # some of them, beside the reference

One auditd server on the suite's database of SIZE actions (bench/build.py); wrk with 8
connections per query, the queries interleaved round by round so the machine's phase hits them
alike. Targets (ratios within the run): each query's p99 <= 3x the newest-25 p99, its req/s >=
50% of the newest-25 req/s. Like the suite, it reports and does not gate. `--json FILE` keeps the
figures, and `--against FILE` adds the p99 growth from an earlier run (e.g. 1M -> 10M, <= 1.5x);
`--beside 1000000` measures that growth within one run instead: both databases served, each
query on one and then the other, round by round (a VM's speed can drift between two runs by
more than the target's margin).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import quote

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import build, grow, pg, procs, wrk  # noqa: E402
from bench.run import LIST_PATH, LIST_USER, check_page, load, machine, say, settle  # noqa: E402

A = "/api/audit/v1/action/?limit=25"
DAY = 86400


def queries(size: int) -> list[tuple[str, str, str]]:
    """(name, who, path): who is `list` (one namespace, ns00), `org` (four namespaces) or
    `admin`. Dates sit inside the generated year (build.BASE_TS + 365 days)."""
    half = build.BASE_TS + 182 * DAY
    week = (build.BASE_TS + 300 * DAY, build.BASE_TS + 307 * DAY)
    svc = quote("Service Create")
    term = quote("Service Terminate")
    return [
        ("newest 25, one namespace, state (reference)", "list", LIST_PATH),
        ("admin, newest 25", "admin", A),
        ("admin, user=ns07", "admin", A + "&user=ns07"),
        ("admin, action=Service Create", "admin", A + f"&action={svc}"),
        ("admin, is_user_action=true", "admin", A + "&is_user_action=true"),
        ("admin, state=Failed", "admin", A + "&state=Failed"),
        ("admin, state=Pending", "admin", A + "&state=Pending"),
        ("admin, start_date__gte half the table", "admin", A + f"&start_date__gte={half}"),
        ("admin, start_date__lte half the table", "admin", A + f"&start_date__lte={half}"),
        ("admin, end_date__gte half the table", "admin", A + f"&end_date__gte={half}"),
        ("admin, end_date__lte half the table", "admin", A + f"&end_date__lte={half}"),
        ("admin, Service Terminate in one week", "admin",
         A + f"&action={term}&start_date__gte={week[0]}&start_date__lte={week[1]}"),
        ("admin, action + state=Failed", "admin", A + f"&action={svc}&state=Failed"),
        ("admin, user + state=Success", "admin", A + "&user=ns07&state=Success"),
        ("admin, uuid__startswith=ab", "admin", A + "&uuid__startswith=ab"),
        ("admin, uuid__startswith=abc", "admin", A + "&uuid__startswith=abc"),
        ("admin, uuid (one action)", "admin", "{uuid}"),
        ("admin, offset = half the table", "admin", A + f"&offset={size // 2}"),
        ("admin, oldest first, offset = 70%", "admin",
         A + f"&order_by=start_date&offset={size * 7 // 10}"),
        ("one namespace, newest 25", "list", A),
        ("one namespace, action=Service Create", "list", A + f"&action={svc}"),
        ("one namespace, user=ns00", "list", A + "&user=ns00"),
        ("one namespace, is_user_action=false", "list", A + "&is_user_action=false"),
        ("one namespace, state + date range", "list",
         A + f"&state=Failed&start_date__gte={build.BASE_TS + 100 * DAY}"
             f"&start_date__lte={build.BASE_TS + 200 * DAY}"),
        ("one namespace, end_date__gte half", "list", A + f"&end_date__gte={half}"),
        ("one namespace, uuid__startswith=a", "list", A + "&uuid__startswith=a"),
        ("one namespace, offset 10,000", "list", A + "&offset=10000"),
        ("one namespace, oldest first", "list", A + "&order_by=start_date"),
        ("four namespaces, action=Service Create", "org", A + f"&action={svc}"),
        ("four namespaces, state=Failed, a week", "org",
         A + f"&state=Failed&start_date__gte={week[0]}&start_date__lte={week[1]}"),
        ("object include_related (20x10 stack)", "list",
         A + f"&object={quote(build.BIG_STACK)}&include_related=true"),
    ]


def prepare(db) -> dict:
    """Credentials: ns00 (one namespace), benchadmin, and benchorg, a member of ns01..ns03."""
    keys = {"list": procs.basic(LIST_USER, procs.ensure_user(db, LIST_USER, "user")),
            "admin": procs.basic("benchadmin", procs.ensure_user(db, "benchadmin", "admin")),
            "org": procs.basic("benchorg", procs.ensure_user(db, "benchorg", "user"))}
    for org in ("ns01", "ns02", "ns03"):
        try:
            procs.cli("org", "add", org, "--db", str(db))
        except RuntimeError:
            pass            # there from an earlier run
        try:
            procs.cli("org", "add-member", org, "benchorg", "--db", str(db))
        except RuntimeError:
            pass
    return keys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.filters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", metavar="FILE", help="write the figures here")
    parser.add_argument("--against", metavar="FILE", help="an earlier --json run (growth)")
    parser.add_argument("--beside", type=int, metavar="SIZE",
                        help="also serve the database of SIZE actions and measure each query on "
                             "both in turn, round by round: the growth from SIZE to --size from "
                             "one run, which the machine's drift between two runs cannot bend")
    parser.add_argument("--postgres", nargs="?", const=pg.PG, metavar="URL",
                        help="the same queries on PostgreSQL: bench.pg's copy of the database "
                             f"(URL_SIZE; default URL {pg.PG}), filled when missing")
    parser.add_argument("--only", metavar="TEXT", action="append",
                        help="only the queries whose name holds TEXT (repeatable), beside the "
                             "reference")
    parser.add_argument("--src", metavar="DIR",
                        help="serve the auditd package in DIR (e.g. a `git archive` of a commit)")
    args = parser.parse_args(argv)
    if args.src:
        procs.REPO = Path(args.src).resolve()
    wrk.find_wrk()
    say(f"bench.filters: {args.size:,} actions, {args.rounds} rounds of {args.seconds:g} s, "
        f"c{args.connections}{' on PostgreSQL' if args.postgres else ''}; {machine()}; "
        f"load {load()}")
    sizes = [args.size] + ([args.beside] if args.beside else [])
    setups, results = [], {size: {} for size in sizes}
    try:
        for size in sizes:
            setups.append(_setup(size, args))
        for _, server, runs, _ in setups:          # warm up
            for _, path, extra in runs:
                wrk.run(server.url + path, args.connections, 1, **extra)
        for _, server, _, db in setups:
            _quiet(server, db, args)
        for round_no in range(1, args.rounds + 1):
            for i in range(len(setups[0][2])):
                # with --beside, each query on both databases in turn, the first one each
                # other round: the machine's phase falls on both alike
                order = setups if round_no % 2 else setups[::-1]
                for size, server, runs, db in order:
                    name, path, extra = runs[i]
                    result = wrk.run(server.url + path, args.connections, args.seconds, **extra)
                    results[size].setdefault(name, []).append(result)
                    if result.errors:
                        say(f"  ERRORS in {name} ({size:,}): {result.errors}")
                    _quiet(server, db, args)
            say(f"round {round_no} done; load {load()}")
    finally:
        for _, server, _, _ in setups:
            server.stop()
    if args.beside:
        report(results[args.beside], args, args.beside, keep=False)
        say("")
    report(results[args.size], args, args.size,
           before=_figures(results[args.beside]) if args.beside else None)


def _setup(size: int, args):
    """(size, a started server on the database of `size` actions, its runs: (name, path,
    request options) of each query, checked once, and the database)."""
    if args.postgres:
        if size > grow.SOURCE:
            raise SystemExit("--postgres: at most the 1M database (bench.pg copies it)")
        db = pg.pg_url(args.postgres, size)
        pg.ensure_postgres(size, db)
    else:
        db = grow.grow(size, say) if size > grow.SOURCE else build.ensure_database(size, say)
    keys = prepare(db)
    server = procs.auditd_server(f"filters-{size}{'-pg' if args.postgres else ''}", db)
    server.start()
    try:
        one = json.loads(_get(server, A, keys["admin"]))["objects"][0]["uuid"]
        runs = []
        for i, (name, who, path) in enumerate(queries(size)):
            if i and args.only and not any(text in name for text in args.only):
                continue
            path = A + f"&uuid={one}" if path == "{uuid}" else path
            check_page(server, path, keys[who], name)
            runs.append((name, path, {"headers": {"Authorization": keys[who]}}))
    except BaseException:
        server.stop()
        raise
    return size, server, runs, db


def _quiet(server, db, args):
    settle(server)
    if args.postgres:     # and the database: its backends may still run given-up queries
        pg.settle_database(db)


def _get(server, path, auth) -> str:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": auth})
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def _figures(results: dict) -> dict:
    return {n: {"rps": statistics.median(r.rps for r in rs),
                "p99_ms": statistics.median(r.p99_ms for r in rs),
                "errors": sum(r.errors for r in rs)} for n, rs in results.items()}


def report(results: dict, args, size: int, before: dict | None = None, keep: bool = True):
    names = list(results)
    ref = names[0]
    figures = _figures(results)
    against = "the database beside it in this run" if args.beside else "earlier run"
    if before is None and args.against:
        before = json.loads(Path(args.against).read_text())["figures"]
    r = figures[ref]
    say(f"\nfilters at {size:,} actions ({time.strftime('%Y-%m-%d %H:%M')}): medians of "
        f"{args.rounds} rounds; reference: {ref}: {r['rps']:,.0f} req/s, p99 {r['p99_ms']:.2f} ms")
    head = "| query | req/s | p99 | req/s vs ref (>= 0.5) | p99 vs ref (<= 3x) |"
    if before:
        head += f" p99 vs {against} (<= 1.5x) |"
    say(head)
    say("|" + "---|" * (head.count("|") - 1))
    misses = grown = 0
    for n in names:
        f = figures[n]
        rps, p99 = f["rps"] / r["rps"], f["p99_ms"] / r["p99_ms"]
        ok = rps >= 0.5 and p99 <= 3 and not f["errors"]
        misses += 0 if ok or n == ref else 1
        row = (f"| {n} | {f['rps']:,.0f} | {f['p99_ms']:.2f} ms | {rps:.2f} "
               f"{'PASS' if rps >= 0.5 else 'MISS'} | {p99:.2f}x {'PASS' if p99 <= 3 else 'MISS'} |")
        if before and n in before:
            growth = f["p99_ms"] / before[n]["p99_ms"]
            grown += growth > 1.5
            row += f" {growth:.2f}x {'PASS' if growth <= 1.5 else 'MISS'} |"
        say(row + (f" ERRORS {f['errors']}" if f["errors"] else ""))
    say(f"{len(names) - 1 - misses} of {len(names) - 1} queries meet both targets"
        + (f"; {len(before) - grown} of {len(before)} p99 growths within 1.5x" if before else ""))
    if args.json and keep:
        Path(args.json).write_text(json.dumps({"size": size, "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
