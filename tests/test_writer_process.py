"""SQLite's writer in a process of its own (`auditd/store/sqlite/process.py`), as `serve` runs it:
what it answers, what it keeps, and what happens when it is killed."""
import asyncio
import os
import signal

import pytest

from auditd.model.actions import new_action
from auditd.model.errors import Conflict, Unavailable
from auditd.store.sqlite import SQLiteStore
from auditd.store.sqlite.writerchild import NICENESS

from conftest import ServerProcess, basic


def record(**fields):
    fields.setdefault("action", "Service Create")
    fields.setdefault("namespace", "ns1")
    fields.setdefault("user", "alice")
    return new_action(**fields)


async def until(condition):
    """Wait (a loop turn at a time) until condition() holds: the loop must run for it to."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


@pytest.fixture
async def store(tmp_path):
    store = await SQLiteStore(str(tmp_path / "w.db"), writer_process=True).open()
    yield store
    await store.close()


async def test_the_store_opens_without_waiting_for_the_child_and_a_write_waits_for_it(
        tmp_path, monkeypatch):
    """`open` starts the child in the background (a new interpreter takes a while): reads answer
    before it is up, and a write made meanwhile is kept once it is."""
    import threading
    from auditd.store.sqlite import process
    go = threading.Event()
    spawn = process._spawn

    def held_spawn(*args):
        assert go.wait(30)
        return spawn(*args)
    monkeypatch.setattr(process, "_spawn", held_spawn)
    store = await SQLiteStore(str(tmp_path / "w.db"), writer_process=True).open()
    try:
        assert store._writer.child is None      # open returned while the spawn is held
        assert await store.count_actions({}) == 0
        writing = asyncio.ensure_future(store.record_action(record()))
        await asyncio.sleep(0.05)
        assert not writing.done()                # it waits for the child
        go.set()
        saved = await writing
        assert store._writer.child is not None
        assert (await store.get_action(saved["uuid"], None))["id"] == saved["id"]
    finally:
        await store.close()


async def test_concurrent_records_commit_together_in_the_child_and_are_kept(tmp_path, store):
    await until(lambda: store._writer.child is not None)
    child = store._writer.child.process.pid
    assert child != os.getpid()
    saved = await asyncio.gather(*(store.record_action(record(user=f"u{i}")) for i in range(200)))
    assert len({a["uuid"] for a in saved}) == 200 and all(a["id"] for a in saved)
    assert store.commits < 200            # group commit: several records per transaction
    await store.close()
    with pytest.raises(ProcessLookupError):      # it left with the store
        os.kill(child, 0)
    again = await SQLiteStore(str(tmp_path / "w.db")).open()      # the writer on the loop
    try:
        assert await again.count_actions({}) == 200
        for action in saved:
            assert (await again.get_action(action["uuid"], None))["id"] == action["id"]
        assert (await again.tree_head())[0] == 200      # one leaf each, sealed in the child
    finally:
        await again.close()


async def test_a_job_error_comes_back_as_itself_and_the_others_commit(store):
    first = await store.record_action(record())
    again = {**record(), "uuid": first["uuid"]}
    same, other = await asyncio.gather(store.record_action(again), store.record_action(record()),
                                       return_exceptions=True)
    assert isinstance(same, Conflict) and first["uuid"] in str(same)
    assert other["uuid"] != first["uuid"]
    assert (await store.get_action(other["uuid"], None))["uuid"] == other["uuid"]


async def test_a_job_that_cannot_be_sent_fails_alone(store):
    local, kept = await asyncio.gather(store._write(lambda conn: (None, ())),
                                       store.record_action(record()), return_exceptions=True)
    assert isinstance(local, RuntimeError) and "could not be sent" in str(local)
    assert (await store.get_action(kept["uuid"], None))["uuid"] == kept["uuid"]


async def test_a_killed_writer_fails_what_it_held_and_the_next_write_starts_another(store):
    kept = await store.record_action(record())
    victim = store._writer.child.process.pid
    items = [(record(user=f"u{i}"), [], []) for i in range(20_000)]
    loading = asyncio.create_task(store.load(items))
    await until(lambda: store._writer.in_flight)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(Unavailable, match="writer process stopped"):
        await loading
    assert await store.health() is not None          # the failure shows until a write commits
    after = await store.record_action(record())
    assert store._writer.child.process.pid != victim
    assert await store.health() is None
    for action in (kept, after):
        assert (await store.get_action(action["uuid"], None))["uuid"] == action["uuid"]


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process, read from /proc: `ps` cuts its lines
    at $COLUMNS when that is set (CI cut the fork server's name off a long venv path)."""
    rows = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:              # it left meanwhile
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])   # after "(comm) state"
        rows.append((int(entry), ppid, args))
    return rows


def _writers(server_pid: int) -> list[int]:
    """The server's writer processes: children of its fork server (a child of the server)."""
    rows = _processes()
    forkservers = {pid for pid, ppid, args in rows
                   if ppid == server_pid and "forkserver" in args}
    return [pid for pid, ppid, _ in rows if ppid in forkservers]


@pytest.mark.parametrize("flag, children", [((), 1), (("--no-writer-process",), 0)])
def test_serve_runs_the_writer_in_a_process_of_its_own(tmp_path, flag, children):
    import json
    import urllib.request
    server = ServerProcess(tmp_path / "s.db", flag).start()
    try:
        writers = _writers(server.proc.pid)
        assert len(writers) == children
        for pid in writers:    # the event loop wins a contended core (writerchild.py)
            assert os.getpriority(os.PRIO_PROCESS, pid) == \
                min(19, os.getpriority(os.PRIO_PROCESS, server.proc.pid) + NICENESS)  # at most 19
        request = urllib.request.Request(
            server.url + "/api/audit/v1/action/", method="POST",
            data=json.dumps({"action": "Service Create"}).encode(),
            headers={**basic("admin", server.admin_key), "Content-Type": "application/json"})
        assert urllib.request.urlopen(request).status == 201
    finally:
        assert server.stop() == 0
    for pid in writers:                       # it left with the server
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_big_answer_comes_back_in_slices_and_its_notes_share_its_actions(store):
    """A seed of 1,200 (more than a slice of 500): every action comes back, in order, and the
    note about it carries that very dict, as when the writer runs on the loop (two copies of a
    seed's 30,000 actions outlived the seed's pause of the garbage collector)."""
    from auditd.model.notes import ActionChanged
    notes = []
    store.on_commit = notes.extend
    items = [(record(user=f"u{i}"), [], []) for i in range(1_200)]
    loaded = await store.load(items)
    assert [a["uuid"] for a in loaded] == [r["uuid"] for r, _, _ in items]
    created = [n for n in notes if isinstance(n, ActionChanged) and n.kind == "create"]
    assert len(created) == 1_200
    assert all(n.action is a for n, a in zip(created, loaded))


def test_a_writer_that_may_not_lower_its_priority_says_why(monkeypatch):
    """Where setpriority is refused (a seccomp filter such as systemd's SystemCallFilter), the
    writer keeps the usual priority and hands the reason to the server, which logs it."""
    from auditd.store.sqlite import writerchild

    def refused(increment):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(writerchild.os, "nice", refused)
    assert writerchild._behind_the_loop() == "Operation not permitted (errno 1)"
    monkeypatch.setattr(writerchild.os, "nice", lambda increment: increment)
    assert writerchild._behind_the_loop() is None


def _failing_after_writing(conn, uri):
    """A job that writes (a new object) and then fails."""
    from auditd.store.sqlite import jobs
    jobs.object_id(conn, uri)
    raise ValueError(f"failed after writing {uri}")


def _losing_the_transaction(conn):
    """A job during which the whole transaction is rolled back (as SQLite does on a full
    disk), and which then fails."""
    conn.execute("ROLLBACK")
    raise ValueError("the disk is full")


_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def test_a_failed_job_leaves_nothing_wherever_it_stands_in_the_batch(tmp_path):
    """The child's batches (BatchCore.run_batch): the transaction's first run goes without a
    savepoint (when it fails, the transaction is rolled back and begun again), the others each
    in one. Either way a job that fails leaves nothing, the others commit, and the database
    checks clean; a job that loses the transaction fails the whole batch."""
    import sqlite3

    from auditd.store.sqlite import check, jobs, tree
    from auditd.store.sqlite.database import connect_writer, prepare_database
    from auditd.store.sqlite.writerchild import _Core
    path = str(tmp_path / "b.db")
    prepare_database(path)
    conn = connect_writer(path, "FULL")
    conn.frontier = tree.load(conn)
    core = _Core(conn)
    said = []
    conn.set_trace_callback(said.append)

    def made(n):
        return [record(object=f"/api/app/v1/ns1/service/{i}/",
                       parents=["/api/app/v1/ns1/stack/s/"]) for i in range(n)]

    def run(*jobs_):
        said.clear()
        results, _, failure = core.run_batch(list(jobs_))
        control = [s for s in said if s.split()[0] in _CONTROL]
        return [(ok, type(value)) for ok, value in results], failure, control

    insert, fail = jobs.insert_action, _failing_after_writing
    # a failing single job first, then a bulk run that goes in: no savepoint at all
    a = made(2)
    flags, failure, control = run((fail, ("/api/app/v1/ns1/service/gone1/",), False),
                                  *[(insert, (r,), False) for r in a])
    assert failure is None and flags == [(False, ValueError), (True, dict), (True, dict)]
    assert control == ["BEGIN IMMEDIATE", "ROLLBACK", "BEGIN IMMEDIATE", "COMMIT"]
    # a bulk run first that fails (a clash): rolled back whole, then one by one, the first of
    # them without a savepoint; only the clash fails
    b = made(3)
    clash = {**made(1)[0], "uuid": a[0]["uuid"]}
    flags, failure, control = run(*[(insert, (r,), False) for r in b[:2]],
                                  (insert, (clash,), False), (insert, (b[2],), False))
    assert failure is None and flags == [(True, dict), (True, dict), (False, Conflict),
                                         (True, dict)]
    assert control == ["BEGIN IMMEDIATE", "ROLLBACK", "BEGIN IMMEDIATE",
                       "SAVEPOINT job", "RELEASE job",
                       "SAVEPOINT job", "ROLLBACK TO job", "RELEASE job",
                       "SAVEPOINT job", "RELEASE job", "COMMIT"]
    # a job that fails after the first run: its savepoint undoes it
    c = made(2)
    flags, failure, control = run((insert, (c[0],), False),
                                  (fail, ("/api/app/v1/ns1/service/gone2/",), False),
                                  (insert, (c[1],), False))
    assert failure is None and flags == [(True, dict), (False, ValueError), (True, dict)]
    assert control == ["BEGIN IMMEDIATE", "SAVEPOINT job", "ROLLBACK TO job", "RELEASE job",
                       "SAVEPOINT job", "RELEASE job", "COMMIT"]
    # a job that loses the transaction: the batch fails, nothing of it stays (the job after it
    # does not run outside a transaction, committing on its own)
    d = made(2)
    flags, failure, _ = run((insert, (d[0],), False), (_losing_the_transaction, (), False),
                            (insert, (d[1],), False))
    assert isinstance(failure, Unavailable) and flags == []
    conn.close()

    kept = a + b + c
    reader = sqlite3.connect(path)
    assert [r[0] for r in reader.execute("SELECT uuid FROM actions ORDER BY id")] == \
        [r["uuid"] for r in kept]
    uris = {r[0] for r in reader.execute("SELECT uri FROM objects")}
    assert not any("gone" in uri for uri in uris)
    assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == len(kept)
    reader.close()
    assert check(path)["problems"] == []
