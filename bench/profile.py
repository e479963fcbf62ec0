"""Profile the server under one benchmark's load with py-spy, and print where its time goes.

    .venv/bin/python -m bench.profile list|related|deep|record|fanout [--size N] [--seconds S]
                                      [--py-spy PATH] [--src DIR]

py-spy (`pip install py-spy`, a separate tool, not an auditd dependency) samples the server process
from outside with `--gil`, so only samples where a thread holds the GIL count: what the event loop
and the store's threads actually spend. Prints the top functions by own time and by inclusive time;
the raw collapsed stacks go to bench/data/profile-TARGET.txt (load them into speedscope.app).
"""
import argparse
import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import build, procs, run, wrk  # noqa: E402

_SKIP = ("<frozen runpy>", "asyncio/runners.py", "auditd/cli.py", "auditd/__main__.py",
         "threading.py")


def summarize(raw: Path, top: int = 25) -> str:
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        count = int(count)
        total += count
        frames = [f.rsplit(":", 1)[0] for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out = [f"{total} samples holding the GIL", "own time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("inclusive time:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top * 3)
            if not any(s in f for s in _SKIP)][:top * 2]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=("list", "related", "deep", "record", "fanout"))
    parser.add_argument("--size", type=int, default=1_000_000, help="database size (list, "
                        "related, deep; record and fanout use a copy of the 10k database)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--py-spy", dest="py_spy", default=shutil.which("py-spy"))
    parser.add_argument("--src", metavar="DIR")
    args = parser.parse_args(argv)
    if not args.py_spy:
        raise SystemExit("py-spy is missing: `pip install py-spy` (in any environment), then "
                         "pass --py-spy PATH if it is not on PATH")
    if args.src:
        procs.REPO = Path(args.src).resolve()
    writes = args.target in ("record", "fanout")
    db = build.copy_database(10_000, "profile") if writes else build.ensure_database(args.size)
    keys = {name: procs.basic(name, procs.ensure_user(db, name, role)) for name, role in
            (("ns00", "user"), ("benchadmin", "admin"), ("benchproducer", "producer"))}
    server = procs.auditd_server(f"profile-{args.target}", db)
    server.start()
    raw = build.DATA_DIR / f"profile-{args.target}.txt"
    spy = subprocess.Popen([args.py_spy, "record", "-p", str(server.pid), "-d",
                            str(int(args.seconds)), "-r", "250", "--gil", "--nonblocking",
                            "-f", "raw", "-o", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if args.target == "fanout":
            lines = int(run.FANOUT_RATE * args.seconds)
            figures = run.fanout(server, keys["benchproducer"], keys["benchadmin"],
                                 rate=run.FANOUT_RATE, batch=run.FANOUT_BATCH, total=lines,
                                 window=args.seconds + 5)
            print(json.dumps({k: v for k, v in figures.items()}))
        else:
            paths = {"list": (run.LIST_PATH, "ns00", 32),
                     "related": (f"/api/audit/v1/action/?object={build.BIG_STACK}"
                                 "&include_related=true&limit=25", "ns00", 32),
                     "deep": (f"/api/audit/v1/action/?offset={args.size // 2}&limit=25",
                              "benchadmin", 32)}
            if args.target == "record":
                result = wrk.run(server.url + "/api/audit/v1/action/", 64, args.seconds,
                                 method="POST", body=json.dumps(run.RECORD_BODY),
                                 headers={"Authorization": keys["benchproducer"],
                                          "Content-Type": "application/json"})
            else:
                path, user, conns = paths[args.target]
                result = wrk.run(server.url + path, conns, args.seconds,
                                 headers={"Authorization": keys[user]})
            print(f"{result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms, errors {result.errors}")
        spy.wait()
    finally:
        if spy.poll() is None:
            spy.kill()
        server.stop()
    print(summarize(raw))
    print(f"(raw stacks: {raw})")


if __name__ == "__main__":
    main()
