"""`auditd check` on SQLite counts everything derived again from the actions themselves (the
tallies behind total_count, include_related's filing and its counts, the log lines' numbering),
says each step as it starts, and names what is wrong in a damaged copy."""
import shutil
import sqlite3
import time
from contextlib import closing

from test_data import cli

from auditd.model import tally
from auditd.model.actions import new_action
from auditd.store.sqlite import SQLiteStore, tallies

T0 = 1_700_000_000 - 1_700_000_000 % (1 << tally.SHIFTS[0])    # the start of a 68-minute bucket
SPAN = tally.LEVEL_SPAN


async def _made(db):
    """Actions of two namespaces, users, names and flags, on services under stacks, 60 of them
    in one 68-minute bucket; a third ended and purged (their tallies pruned), a third ended and
    kept; one with log lines."""
    async with SQLiteStore(db) as store:
        made = []
        for i in range(90):
            made.append(await store.record_action(new_action(
                namespace=f"ns{i % 2}", user=f"u{i % 3}", action=f"Service {i % 4}",
                is_user_action=bool(i % 5), state="In progress",
                object=f"/api/app/v1/service/s{i % 7}/", parents=[f"/api/app/v1/stack/t{i % 2}/"],
                start_date=T0 + (i * 37 if i < 60 else i * 90_000))))
        for action in made[2::3]:
            await store.change_state(action["uuid"], "Failed", None)
        assert (await store.purge(int(time.time()) + 2))[0] == 30
        for action in made[0::3]:
            await store.change_state(action["uuid"], "Success" if action["id"] % 2 else "Failed",
                                     None)
        await store.append_logs(made[1]["uuid"], [(T0 + 5, "stdout", "one"),
                                                  (T0 + 6, "stderr", "two")], None)


def _copy(db, tmp_path, name: str, sql: str, params=()) -> str:
    copy = tmp_path / f"{name}.db"
    shutil.copy(db, copy)
    conn = sqlite3.connect(copy)
    with conn:
        assert conn.execute(sql, params).rowcount >= 1, sql
    conn.close()
    return copy


def _problems(db) -> tuple[int, list[str]]:
    done = cli("check", "--db", db)
    return done.returncode, [line for line in done.stdout.splitlines()
                             if line.startswith("problem: ")]


async def test_check_counts_the_derived_tables_again_and_names_a_wrong_one(tmp_path):
    db = tmp_path / "audit.db"
    await _made(db)
    conn = sqlite3.connect(db, isolation_level=None)       # a deep offset's split, as the writer
    conn.execute("BEGIN IMMEDIATE")                        # makes it (tallies.split)
    tallies.split(conn, "n", ("ns0",), (T0 >> tally.SHIFTS[0],))
    conn.execute("COMMIT")
    fine = conn.execute("SELECT count(*) FROM tallies WHERE bucket < ?", (-SPAN // 2,))
    assert fine.fetchone()[0] > 0
    conn.close()

    good = cli("check", "--db", db)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok: integrity" in good.stdout
    for step in ("every page with SQLite's integrity check", "the tallies of kind '', against",
                 "the tallies of kind 'np', against the actions counted again (12 of 12)",
                 "the finer tallies of 1 split buckets", "include_related's filing",
                 "the log lines"):
        assert f"checking {step}" in good.stderr, (step, good.stderr)

    for name, sql, params, want in (
            ("user-tally", "UPDATE tallies SET success = success + 1 WHERE kind = 'nu' AND "
             "key = 'ns1\x1fu1' AND bucket = ?", (tally.bucket(1, T0),),
             [("1 tallies differ", "kind 'nu'", f"bucket {tally.bucket(1, T0)}",
               "Success: 1, there are 0")]),
            ("fine-tally", "UPDATE tallies SET in_progress = in_progress + 1 WHERE kind = 'n' "
             "AND key = 'ns0' AND bucket = ?", (tally.bucket(-2, T0 + 4 * 37),),
             [("1 tallies differ", "kind 'n'", f"bucket {tally.bucket(-2, T0 + 4 * 37)}")]),
            ("prefix-tally", "DELETE FROM tallies WHERE kind = 'np' AND key = (SELECT key FROM "
             "tallies WHERE kind = 'np' ORDER BY key LIMIT 1)", (),
             [("1 tallies differ", "kind 'np'")]),
            ("filing", "DELETE FROM action_ancestors WHERE action_id = (SELECT max(action_id) "
             "FROM action_ancestors) AND ancestor_id = (SELECT min(ancestor_id) FROM "
             "action_ancestors WHERE action_id = (SELECT max(action_id) FROM action_ancestors))",
             (), [("1 missing, 0 that should not be there",), ("1 of include_related's counts",)]),
            ("filing-count", "UPDATE ancestor_counts SET n = n + 1 WHERE namespace = 'ns1' AND "
             "ancestor_id = (SELECT min(ancestor_id) FROM ancestor_counts)", (),
             [("1 of include_related's counts",)]),
            ("log-lines", "UPDATE actions SET log_count = 1 WHERE log_count = 2", (),
             [("1 log lines are numbered beyond",)])):
        code, problems = _problems(_copy(db, tmp_path, name, sql, params))
        assert code == 1 and len(problems) == len(want), (name, problems)
        for line, parts in zip(problems, want):
            assert all(part in line for part in parts), (name, parts, line)


async def test_uuid_prefix_counts_add_the_journal_which_is_folded_in_and_checked(tmp_path,
                                                                                 monkeypatch):
    from auditd.model.query import ListQuery
    monkeypatch.setattr(tallies, "JOURNAL_ROWS", 16)    # fold every few records
    db = tmp_path / "audit.db"

    def journal_rows():
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM prefix_journal").fetchone()[0]

    async with SQLiteStore(db) as store:
        made, sizes = [], set()
        for i in range(40):
            made.append(await store.record_action(new_action(
                namespace=f"ns{i % 2}", user="u", action="Service Create",
                state="In progress", start_date=T0 + i)))
            sizes.add(journal_rows())
        assert max(sizes) < 16 + 4 and 0 in sizes and len(sizes) > 3    # folded, and bounded
        for action in made[::4]:
            await store.change_state(action["uuid"], "Failed", None)
        assert (await store.purge(int(time.time()) + 2))[0] == 10    # pruned at the next fold
        alive = [a for i, a in enumerate(made) if i % 4]
        for i in range(3):
            alive.append(await store.record_action(new_action(
                namespace="ns1", user="u", action="Service Create", start_date=T0 + 50 + i)))
        assert journal_rows() > 0
        for prefix in {a["uuid"][:n] for a in alive[:4] + alive[-3:] for n in (1, 2, 3)}:
            for ns in (None, frozenset({"ns1"})):
                page = await store.list_actions(ListQuery(ns, 5, filters={
                    "uuid__startswith": prefix}))
                assert page.total == sum(1 for a in alive if a["uuid"].startswith(prefix)
                                         and (ns is None or a["namespace"] in ns)), (prefix, ns)
    assert journal_rows() == 0                              # folded in on closing
    with closing(sqlite3.connect(db)) as conn:   # no tally of a purged prefix is left at zero
        assert conn.execute("SELECT count(*) FROM tallies WHERE kind IN ('p', 'np') AND "
                            "success + failed + in_progress = 0").fetchone()[0] == 0
        with conn:   # as a killed server leaves it: counts in the journal, not yet in the tallies
            conn.execute(f"INSERT INTO prefix_journal SELECT kind, key, "
                         f"{', '.join(tally.STATE_COLUMNS)} FROM tallies WHERE kind IN ('p', 'np')")
            conn.execute("DELETE FROM tallies WHERE kind = 'p'")
            conn.execute("UPDATE tallies SET success = 0, failed = 0, in_progress = 0 "
                         "WHERE kind = 'np'")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")    # all in the file, for _copy
    code, problems = _problems(db)
    assert (code, problems) == (0, [])
    code, problems = _problems(_copy(tmp_path / "audit.db", tmp_path, "journal",
                                     "UPDATE prefix_journal SET failed = failed + 1 WHERE rowid = "
                                     "(SELECT min(rowid) FROM prefix_journal WHERE kind = 'p')"))
    assert code == 1 and len(problems) == 1 and "kind 'p'" in problems[0], problems


async def test_two_deep_chains_joined_check_clean(tmp_path):
    """A new edge joining two chains of 21 objects files every action of the lower chain under
    all 21 of the upper one, 41 objects apart at most; `auditd check` counts them from the graph
    alike (its walk stopped 32 objects away and called the rest "should not be there")."""
    db = tmp_path / "audit.db"
    async with SQLiteStore(db) as store:
        for chain in "ab":
            for k in range(21):
                await store.record_action(new_action(
                    action="Deploy", user="ns", object=f"/api/app/v1/{chain}/o{k}/",
                    parents=[f"/api/app/v1/{chain}/o{k - 1}/"] if k else []))
        await store.record_action(new_action(action="Join", user="ns", object="/api/app/v1/b/o0/",
                                             parents=["/api/app/v1/a/o20/"]))
    assert _problems(db) == (0, [])
    with closing(sqlite3.connect(db)) as conn:   # b's 22 actions under each of a's 21 objects
        assert conn.execute("SELECT count(*) FROM action_ancestors a JOIN objects o ON "
                            "o.id = a.ancestor_id WHERE o.uri = '/api/app/v1/a/o0/'"
                            ).fetchone()[0] == 20 + 22
