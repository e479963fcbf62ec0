"""The SQLite backend's own machinery, beyond the store contract: the writer's memory of the object
graph, group commit with savepoints and bulk inserts, exact counts kept by triggers, purge batches.
These reach into the backend's jobs on purpose; everything a user sees is in the contract suite."""
import asyncio
import json
import os
import sqlite3

import pytest

from auditd.model.actions import new_action
from auditd.model.errors import Conflict
from auditd.model.query import ListQuery
from auditd.store.sqlite import SQLiteStore, check, jobs, lifecycle, tallies
from auditd.store.sqlite.database import SCHEMA_FILE, SCHEMA_VERSION, WAL_CHECKPOINT_PAGES

insert_actions = jobs.insert_actions


async def test_objects_a_failed_or_reset_write_removed_are_created_again(tmp_path):
    """The writer remembers object ids; a rollback or a reset must not leave it remembering
    objects that are gone."""
    service, stack = "/api/app/v1/u/service/2/", "/api/app/v1/u/stack/9/"

    async def related_uuids(store, uri):
        page = await store.list_actions(ListQuery(None, 25, filters={
            "object": uri, "include_related": True}))
        return [json.loads(doc)["uuid"] for doc in page.docs]

    store = await SQLiteStore(str(tmp_path / "objects.db")).open()
    try:
        first = await store.record_action(new_action(action="A", user="u"))
        clash = new_action(action="B", user="u", object=service, parents=[stack])
        clash["uuid"] = first["uuid"]
        with pytest.raises(Conflict):
            await store.record_action(clash)
        again = await store.record_action(new_action(action="C", user="u", object=service,
                                                     parents=[stack]))
        assert await related_uuids(store, stack) == [again["uuid"]]

        await store.reset()
        after = await store.record_action(new_action(action="D", user="u", object=service,
                                                     parents=[stack]))
        assert await related_uuids(store, stack) == [after["uuid"]]
        assert await related_uuids(store, service) == [after["uuid"]]
    finally:
        await store.close()


async def test_counts_stay_exact_through_failed_writes_and_changes_in_one_transaction(tmp_path):
    """total_count comes from action_counts: failed jobs (rolled back to their savepoint), and a
    state change or a deletion of an action added earlier in the same transaction, leave it
    exact."""
    def insert_then_finish(conn, record):      # one job: add an action, then move its state
        action, _ = jobs.insert_action(conn, record)
        return jobs.set_state(conn, action, "Success")

    def insert_then_fail(conn, record):
        jobs.insert_action(conn, record)
        raise Conflict("refused after the insert")

    def insert_then_delete(conn, record):      # as a purge deletes: the tallies follow
        action, _ = jobs.insert_action(conn, record)
        conn.execute("DELETE FROM actions WHERE id = ?", (action["id"],))
        tallies.apply(conn, [(action, None)], prune=True)
        return None, []

    path = str(tmp_path / "counts.db")
    async with SQLiteStore(path) as store:
        first = await store.record_action(new_action(action="A", user="u", state="Pending"))
        clash = new_action(action="B", user="u", state="Failed")
        clash["uuid"] = first["uuid"]
        writes = [store.record_action(new_action(action="C", user=f"u{i % 3}", state="Pending"))
                  for i in range(40)]
        writes += [store.record_action(clash),
                   store._write(insert_then_finish, new_action(action="D", user="new", state="In progress")),
                   store._write(insert_then_delete, new_action(action="E", user="gone")),
                   store._write(insert_then_fail, new_action(action="F", user="u", state="Failed")),
                   store.change_state(first["uuid"], "In progress", None)]
        results = await asyncio.gather(*writes, return_exceptions=True)   # one transaction
        assert [type(r) for r in results if isinstance(r, Exception)] == [Conflict, Conflict]
        assert store.commits <= 3
        counts = await store.counts_by_state()
    assert (counts["Pending"], counts["In progress"], counts["Success"], counts["Failed"]) == \
        (40, 1, 1, 0)
    assert check(path)["problems"] == []


async def test_records_in_one_batch_go_in_together_and_a_clash_fails_only_itself(tmp_path,
                                                                                  monkeypatch):
    """Consecutive records in a batch are inserted in one statement run; when one of them
    conflicts, the batch falls back to one at a time and only that one fails."""
    bulk_runs = []

    def counted_bulk(conn, batch):
        bulk_runs.append(len(batch))
        return insert_actions(conn, batch)

    monkeypatch.setattr(jobs.insert_action, "bulk", counted_bulk)

    async with SQLiteStore(str(tmp_path / "bulk.db")) as store:
        first = await store.record_action(new_action(action="A", user="u"))
        records = [new_action(action=f"B{i}", user="u", object=f"/api/app/v1/u/service/{i % 4}/",
                              parents=["/api/app/v1/u/stack/s/"]) for i in range(30)]
        clash = new_action(action="C", user="u")
        clash["uuid"] = first["uuid"]
        for batch in (records[:15], records[15:] + [clash]):
            commits = store.commits
            results = await asyncio.gather(*(store.record_action(r) for r in batch),
                                           return_exceptions=True)
            assert store.commits == commits + 1
            stored = [r for r in results if not isinstance(r, Exception)]
            assert [type(r) for r in results if isinstance(r, Exception)] == \
                ([Conflict] if clash in batch else [])
            for action in stored:
                assert await store.get_action_doc(action["uuid"], None) == action["doc"]
        assert bulk_runs == [15, 16]   # the first went in; the second fell back (the clash)
        page = await store.list_actions(ListQuery(None, 100, filters={
            "object": "/api/app/v1/u/stack/s/", "include_related": True}))
        assert page.total == 30
        ids = [json.loads(doc)["uuid"] for doc in page.docs]
        assert sorted(ids) == sorted(r["uuid"] for r in records)


async def test_a_purge_leaves_the_tallies_a_fresh_count_of_what_remains(tmp_path):
    """Purged actions take their tallies with them: none is left at zero (the tallies of every
    hour ever recorded would outlive the actions), and what remains is exactly what counting the
    remaining actions again gives."""
    from auditd.model import tally
    from auditd.store.sqlite import tallies
    path = tmp_path / "t.db"
    day = 86_400
    async with SQLiteStore(path) as store:
        for i in range(60):
            start = 1_500_000_000 + (i % 12) * day // 3 + i * 7
            await store.record_action(new_action(
                user=f"u{i % 3}", action=("Build", "Deploy")[i % 2], namespace=f"ns{i % 4}",
                state=("Success", "Failed")[i % 5 == 0], start_date=start,
                end_date=start + 60, is_user_action=i % 3 == 0))
        await store.record_action(new_action(user="u0", action="Build", state="In progress",
                                             start_date=1_500_000_000))   # not final: kept
        assert (await store.purge(1_500_000_000 + 2 * day))[0] > 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM tallies WHERE " + " AND ".join(
            f"{c} = 0" for c in tally.STATE_COLUMNS)).fetchone() == (0,)
        kept = sorted(conn.execute("SELECT * FROM tallies"))
        assert kept
        tallies.rebuild(conn)
        assert sorted(conn.execute("SELECT * FROM tallies")) == kept


async def test_purge_takes_a_long_log_away_in_small_batches(tmp_path):
    async with SQLiteStore(tmp_path / "p.db") as store:
        old = await store.record_action(new_action(
            user="u", action="Build", state="Success", start_date=100, end_date=200))
        await store.append_logs(old["uuid"], [(150, None, f"line {i}") for i in range(25)], None)
        for i in range(3):
            await store.record_action(new_action(user="u", action="Small", state="Failed",
                                                 start_date=100, end_date=300 + i))
        before = store.commits
        assert await lifecycle.purge(store, 1000, max_rows=10) == (4, 25)
        assert store.commits - before >= 4         # 10 + 10 + 5 lines, then the rest, then none
        assert (await store.counts_by_state())["Success"] == 0
        assert await store._read("SELECT count(*) FROM action_logs") == [(0,)]


async def test_a_body_is_stored_once_and_a_retry_does_not_copy_it_twice(tmp_path):
    path = tmp_path / "body.db"
    body = "b" * 200_000
    async with SQLiteStore(path) as store:
        original = await store.record_action(new_action(action="A", user="u", state="Failed",
                                                        body=body))
        again = await store.retry(original["uuid"], None, {"user": "u", "ip": "", "location": "",
                                                          "user_agent": ""})
        assert again["body"] == body
        assert (await store.get_action(again["uuid"], None))["body"] == body
        moved = await store.change_state(again["uuid"], "In progress", None)
        assert json.loads(moved["doc"])["body"] == body
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT sum(length(coalesce(body, ''))), sum(length(doc)) "
                              "FROM actions").fetchone()
    assert stored[0] == 0 and stored[1] < 2 * 200_000 + 4000    # one copy per action, in doc


async def test_an_empty_log_append_is_no_event(tmp_path):
    async with SQLiteStore(tmp_path / "empty.db") as store:
        action = await store.record_action(new_action(action="A", user="u"))
        size, _ = await store.tree_head()
        assert await store.append_logs(action["uuid"], [], None) == 0
        assert (await store.tree_head())[0] == size


async def test_heavy_jobs_shorten_the_switch_interval_while_they_run_then_restore_it(tmp_path):
    """A heavy job (a big append, an import) runs on the writer's thread; meanwhile the event loop
    must get the GIL back quickly, so the interval is shorter, and is restored afterwards, also
    when the job fails and when two stores' heavy jobs overlap."""
    import sys
    from auditd.store.sqlite.writer import HEAVY_SWITCH_INTERVAL
    usual = sys.getswitchinterval()

    def seen(conn):
        return sys.getswitchinterval(), []

    def fails(conn):
        raise Conflict("no")

    stores = [await SQLiteStore(str(tmp_path / f"{n}.db")).open() for n in "ab"]
    try:
        during = await asyncio.gather(*(s._write(seen, heavy=True) for s in stores for _ in "xy"))
        assert during == [HEAVY_SWITCH_INTERVAL] * 4
        assert await stores[0]._write(seen) == usual          # a light job runs on the loop
        with pytest.raises(Conflict):
            await stores[0]._write(fails, heavy=True)
        assert sys.getswitchinterval() == usual
    finally:
        for store in stores:
            await store.close()


async def test_a_heavy_jobs_commit_runs_with_the_short_switch_interval_too(tmp_path,
                                                                            monkeypatch):
    """The commit after a heavy job seals all its leaves into the tree, in Python on the writer's
    thread (~60-90 ms for a seed of 30,000 actions): the loop gets the GIL back as quickly then
    as during the job itself."""
    import sys
    from auditd.store.sqlite.writer import HEAVY_SWITCH_INTERVAL, Writer
    usual = sys.getswitchinterval()
    seen = []
    commit = Writer._commit

    def watched(self):
        seen.append(sys.getswitchinterval())
        return commit(self)

    monkeypatch.setattr(Writer, "_commit", watched)
    async with SQLiteStore(str(tmp_path / "seal.db")) as store:
        await store.record_action(new_action(action="A", user="u"))
        await store.load([(new_action(action="B", user="u"), [], [(1, "stdout", "x")])])
    assert seen == [usual, HEAVY_SWITCH_INTERVAL]
    assert sys.getswitchinterval() == usual


async def test_an_append_of_much_text_runs_off_the_loop_in_leaves_of_bounded_size(tmp_path,
                                                                                  monkeypatch):
    """Few lines but much text (8 MB in 128 lines, say) is a big append too: it runs on the
    writer's thread, and enters the tree in leaves of about LEAF_TEXT characters, which the
    verifier replays into the same lines."""
    import threading
    from auditd.store.sqlite import verify
    threads = []
    append_logs = jobs.append_logs

    def watched(conn, *args):
        threads.append(threading.current_thread() is threading.main_thread())
        return append_logs(conn, *args)

    monkeypatch.setattr(jobs, "append_logs", watched)
    path = str(tmp_path / "text.db")
    long_line = "z" * 60_000
    async with SQLiteStore(path) as store:
        action = await store.record_action(new_action(action="A", user="u"))
        assert await store.append_logs(action["uuid"], [(1, None, "small")] * 3, None) == 3
        assert await store.append_logs(action["uuid"], [(2, "stdout", long_line)] * 20,
                                       None) == 20
    assert threads == [True, False]          # the small one on the loop, the big one not
    with sqlite3.connect(path) as conn:
        sizes = [n for (n,) in conn.execute("SELECT length(leaf) FROM events WHERE "
                                            "CAST(leaf AS TEXT) LIKE '%\"type\":\"logs\"%'")]
    assert len(sizes) == 1 + 5 and max(sizes) < jobs.LEAF_TEXT + 60_000 + 1000
    assert verify(path)["events"] == 1 + 1 + 5


def _old_layout(path: str):
    """A database as auditd created it before the uuid trigger: uuid UNIQUE (an index of its
    own beside actions_by_uuid)."""
    schema = SCHEMA_FILE.read_text()
    schema = schema.replace("uuid            TEXT    NOT NULL,", "uuid TEXT NOT NULL UNIQUE,")
    start = schema.index("CREATE TRIGGER actions_uuid_unique")
    schema = schema[:start] + schema[schema.index("END;", start) + 4:]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(schema + f"; PRAGMA user_version = {SCHEMA_VERSION};")


@pytest.mark.parametrize("layout", ["new", "old"])
async def test_a_uuid_is_recorded_once_in_one_batch_across_batches_and_on_either_layout(
        tmp_path, layout):
    path = str(tmp_path / f"{layout}.db")
    if layout == "old":
        _old_layout(path)
    async with SQLiteStore(path) as store:
        first = await store.record_action(new_action(action="A", user="u"))
        twins = [new_action(action=f"T{i}", user="u") for i in range(3)]
        twins[2]["uuid"] = twins[0]["uuid"]          # a clash inside one batch
        again = new_action(action="B", user="u")
        again["uuid"] = first["uuid"]                 # and a clash with one already stored
        results = await asyncio.gather(*(store.record_action(r) for r in [*twins, again]),
                                       return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["dict", "dict", "Conflict", "Conflict"]
        assert "already exists" in str(results[2]) and first["uuid"] in str(results[3])
        assert (await store.list_actions(ListQuery(None, 25))).total == 3
    with sqlite3.connect(path) as conn:
        on_uuid = [name for name, in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'actions'")
            if [r[2] for r in conn.execute(f"PRAGMA index_info('{name}')")][:1] == ["uuid"]]
    assert sorted(on_uuid) == (["actions_by_uuid"] if layout == "new" else
                               ["actions_by_uuid", "sqlite_autoindex_actions_1"])


async def test_the_wal_is_checkpointed_and_stays_bounded_under_steady_writes(tmp_path):
    """The writer checkpoints every WAL_CHECKPOINT_PAGES pages: however long records flow, the
    WAL file stays about that size (it is reused from its start after each checkpoint)."""
    path = tmp_path / "wal.db"
    largest = 0
    async with SQLiteStore(str(path)) as store:
        for batch in range(60):
            await asyncio.gather(*(store.record_action(new_action(
                action="Service Start", user=f"u{i % 7}", namespace=f"u{i % 7}",
                object=f"/api/app/v1/service/{batch}-{i}/")) for i in range(50)))
            largest = max(largest, os.path.getsize(f"{path}-wal"))
        assert (await store.list_actions(ListQuery(None, 1))).total == 3000
    # without checkpoints the WAL reaches ~41 MB here (~10,000 pages)
    assert largest <= (WAL_CHECKPOINT_PAGES + 1000) * (4096 + 24), \
        f"the WAL grew to {largest / 1e6:.1f} MB"
