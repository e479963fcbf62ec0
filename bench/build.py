"""Build a realistic auditd database through the store's public API, and cache it under bench/data/.

The rows, the rendered JSON (`actions.doc`), the object graph and the counts are exactly what the
server writes, because they are written by the same `Store.record_action` and `Store.append_logs`.

Shape (for 1,000,000 actions; smaller sizes scale the object count down):
- 50 namespaces `ns00`..`ns49`, 20 action names;
- 200,000 objects: stacks -> services -> containers, and nodeclusters -> nodes, with their parents;
- states: ~90% Success, ~8% Failed, ~1% Canceled, the rest Pending / In progress;
- log lines on ~2% of the actions;
- one stack (`BIG_STACK`, namespace ns00) with 20 services x 10 containers, for include_related.
"""
import asyncio
import os
import random
import shutil
import sys
import time
import uuid as uuidlib
from pathlib import Path

GENERATOR_VERSION = 1
# In the cached files' names: 2 since new databases keep one index on uuid, not two (schema.sql),
# so a database built before is not measured as if it had the new layout.
FILE_VERSION = 2
# AUDITD_BENCH_DATA: another folder for the cached databases (a tree with a newer schema migrates
# what it opens, so two checkouts measured side by side each keep their own copies).
DATA_DIR = Path(os.environ.get("AUDITD_BENCH_DATA") or Path(__file__).resolve().parent / "data")
NAMESPACES = [f"ns{i:02d}" for i in range(50)]
ACTIONS = ["Service Create", "Service Start", "Service Stop", "Service Redeploy", "Service Scale",
           "Service Terminate", "Service Update", "Container Start", "Container Stop",
           "Container Redeploy", "Container Terminate", "Stack Create", "Stack Start",
           "Stack Redeploy", "Stack Terminate", "Node Deploy", "Node Upgrade Docker",
           "Node Terminate", "Node Cluster Deploy", "Node Cluster Scale"]
USER_AGENTS = ["docker-cloud-cli/1.0.9 python-requests/2.13", "python-dockercloud/1.0.10",
               "go-dockercloud/1.0", "Mozilla/5.0 (X11; Linux x86_64) Firefox/52.0"]
BIG_STACK_UUID = "00000000-0000-4000-8000-00000000b16a"
BIG_STACK = f"/api/app/v1/ns00/stack/{BIG_STACK_UUID}/"
CHUNK = 2000
SPAN_SECONDS = 365 * 86400
BASE_TS = 1_500_000_000


def db_path(size: int) -> Path:
    return DATA_DIR / f"auditd-{size}-v{FILE_VERSION}.db"


def _uuid(rng: random.Random) -> str:
    return str(uuidlib.UUID(int=rng.getrandbits(128), version=4))


def _state(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.90:
        return "Success"
    if r < 0.98:
        return "Failed"
    if r < 0.99:
        return "Canceled"
    return "In progress" if r < 0.995 else "Pending"


class Objects:
    """The object trees: each entry is (uri, [parent uris, nearest first], kind)."""

    def __init__(self, rng: random.Random, count: int):
        self.entries = []
        # stack -> 5 services -> 2 containers each: 16 objects; nodecluster -> 19 nodes: 20 objects.
        stack_trees = int(count * 0.8) // 16
        cluster_trees = max(1, (count - stack_trees * 16) // 20)
        for _ in range(stack_trees):
            ns = rng.choice(NAMESPACES)
            stack = f"/api/app/v1/{ns}/stack/{_uuid(rng)}/"
            self.entries.append((stack, [], "stack", ns))
            for _ in range(5):
                service = f"/api/app/v1/{ns}/service/{_uuid(rng)}/"
                self.entries.append((service, [stack], "service", ns))
                for _ in range(2):
                    container = f"/api/app/v1/{ns}/container/{_uuid(rng)}/"
                    self.entries.append((container, [service, stack], "container", ns))
        for _ in range(cluster_trees):
            ns = rng.choice(NAMESPACES)
            cluster = f"/api/infra/v1/{ns}/nodecluster/{_uuid(rng)}/"
            self.entries.append((cluster, [], "nodecluster", ns))
            for _ in range(19):
                node = f"/api/infra/v1/{ns}/node/{_uuid(rng)}/"
                self.entries.append((node, [cluster], "node", ns))

    @staticmethod
    def big_stack(rng: random.Random):
        entries = [(BIG_STACK, [], "stack", "ns00")]
        for _ in range(20):
            service = f"/api/app/v1/ns00/service/{_uuid(rng)}/"
            entries.append((service, [BIG_STACK], "service", "ns00"))
            for _ in range(10):
                container = f"/api/app/v1/ns00/container/{_uuid(rng)}/"
                entries.append((container, [service, BIG_STACK], "container", "ns00"))
        return entries


_VERBS = {"stack": "Stack", "service": "Service", "container": "Container", "node": "Node",
          "nodecluster": "Node Cluster"}


def _fields(rng: random.Random, entry, ts: int) -> dict:
    uri, parents, kind, ns = entry
    names = [a for a in ACTIONS if a.startswith(_VERBS[kind] + " ")] or ACTIONS
    action = rng.choice(names) if rng.random() < 0.8 else rng.choice(ACTIONS)
    state = _state(rng)
    fields = {
        "uuid": _uuid(rng), "namespace": ns, "user": ns, "action": action,
        "method": rng.choice(["POST", "PATCH", "DELETE"]), "path": uri + action.split()[-1].lower()
        + "/", "object": uri, "parents": parents, "user_agent": rng.choice(USER_AGENTS),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "location": rng.choice(["", "Paris, France", "San Francisco, United States"]),
        "body": None if rng.random() < 0.6 else '{"target_num_containers": %d}' % rng.randrange(9),
        "state": state, "start_date": ts, "is_user_action": rng.random() < 0.7,
    }
    if state in ("Success", "Failed", "Canceled"):
        fields["end_date"] = ts + rng.randrange(1, 600)
    return fields


def _log_lines(rng: random.Random, ts: int) -> list:
    return [(ts + i, rng.choice(["stdout", "stderr", None]),
             f"Step {i}/{40}: pulling layer {rng.getrandbits(48):012x} "
             + "." * rng.randrange(0, 60)) for i in range(rng.randrange(5, 40))]


async def _build(path: Path, size: int, progress):
    from . import procs
    sys.path.insert(0, str(procs.REPO))
    from auditd.model.actions import new_action
    from auditd.store.sqlite import SQLiteStore

    rng = random.Random(size * 7919 + GENERATOR_VERSION)
    objects = Objects(rng, min(200_000, max(1000, size // 5)))
    big = Objects.big_stack(rng)
    # the big stack's actions: one per object (221), plus a second one for each service
    specials = big + big[1::11]
    n_regular = size - len(specials)
    special_at = set(rng.sample(range(size), len(specials)))
    started = time.monotonic()
    store = SQLiteStore(str(path), synchronous="OFF")
    await store.open()
    try:
        done, specials_iter, pending_logs = 0, iter(specials), []
        for chunk_start in range(0, size, CHUNK):
            records = []
            for i in range(chunk_start, min(size, chunk_start + CHUNK)):
                ts = BASE_TS + int(i * SPAN_SECONDS / size) + rng.randrange(3)
                entry = next(specials_iter) if i in special_at else rng.choice(objects.entries)
                fields = _fields(rng, entry, ts)
                uuid = fields.pop("uuid")
                record = new_action(**fields)
                record["uuid"] = uuid
                records.append(record)
                if rng.random() < 0.02:
                    pending_logs.append((uuid, _log_lines(rng, ts)))
            await asyncio.gather(*(store.record_action(r) for r in records))
            if pending_logs:
                await asyncio.gather(*(store.append_logs(u, lines, None)
                                       for u, lines in pending_logs))
                pending_logs = []
            done += len(records)
            progress(done, size, time.monotonic() - started)
        assert n_regular >= 0
    finally:
        await store.close()


def ensure_database(size: int, log=print) -> Path:
    """The cached database of `size` actions, built first if missing."""
    path = db_path(size)
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    log(f"building {path.name}: {size:,} actions (cached for later runs)")
    last = [0.0]

    def progress(done, total, elapsed):
        if elapsed - last[0] >= 5 or done == total:
            last[0] = elapsed
            log(f"  {done:>9,} / {total:,} actions  {elapsed:6.1f}s  "
                f"({done / max(elapsed, 1e-9):,.0f}/s)")

    asyncio.run(_build(partial, size, progress))
    import sqlite3
    conn = sqlite3.connect(partial)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    os.replace(partial, path)
    return path


def copy_database(size: int, name: str) -> Path:
    """A scratch copy of the cached database, for runs that write."""
    source = ensure_database(size)
    target = DATA_DIR / f"scratch-{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, target)
    # On disk before anything is measured: 2.7 GB of dirty pages written back during a run's
    # first phase slowed it (bench.mixed's idle readers: p99 7.28 ms against 3.6-4.6 in the
    # runs before), and a ratio to that phase moved with it.
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
    return target


if __name__ == "__main__":     # python -m bench.build SIZE...
    for arg in sys.argv[1:]:
        print(ensure_database(int(arg)))
