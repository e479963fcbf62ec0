"""`auditd migrate --from SQLITE --to postgresql://...`: everything arrives identical."""
import logging
import subprocess
import sys

import asyncpg
import pgtools
from auditd.config import Config
from auditd.model.actions import new_action
from auditd.model.query import ListQuery
from auditd.store import open_store
from auditd.store.postgres import check
from auditd.store.sqlite import SQLiteStore
from conftest import ROOT

STACK, SERVICE = "/api/app/v1/stack/st/", "/api/app/v1/acme/service/sv/"


async def _fill(store) -> dict:
    keys = {name: await store.add_user(name, role) for name, role in
            (("admin", "admin"), ("ci", "producer"), ("alice", "user"), ("bob", "user"))}
    await store.add_org("acme")
    await store.add_org("empty")
    await store.add_member("acme", "alice")
    await store.add_member("acme", "bob")
    made = []
    for i in range(120):
        state = ("Pending", "In progress", "Success", "Failed")[i % 4]
        made.append(await store.record_action(new_action(
            action=f"Service {i}", user="ci", namespace=("acme", "alice", "bob")[i % 3],
            state=state, start_date=1_600_000_000 + i * 3600 * 24 * 3,   # about a year of months
            object=f"/api/app/v1/container/c{i % 7}/", parents=[SERVICE, STACK],
            body='{"n": %d, "name": "ünïcode ☃"}' % i if i % 5 else None,
            is_user_action=bool(i % 2), can_be_canceled=bool(i % 3),
            ip="10.0.0.%d" % i, user_agent="ua/1", location="Earth",
            **({"end_date": 1_600_000_000 + i * 3600 * 24 * 3 + 60} if state in
               ("Success", "Failed") else {}))))
    await store.cancel(made[1]["uuid"], None)
    await store.append_logs(made[0]["uuid"], [(1, "stdout", f"line {n}") for n in range(2500)],
                            None)
    for action in made[2:40]:
        await store.append_logs(action["uuid"], [(5, None, "a"), (6, "stderr", "b\tc")], None)
    return keys


async def _everything(store) -> tuple:
    """What must move, without the ids each database gives: accounts and every exported action
    with its graph edges and all its log lines."""
    actions = {}
    async for kind, action, *rest in store.export_actions({}, log_chunk=1000):
        if kind == "action":
            edges, logs = rest
            kept = {k: v for k, v in action.items() if k not in ("id", "object_id")}
            actions[action["uuid"]] = [kept, edges, list(map(tuple, logs))]
        else:
            actions[action["uuid"]][2] += list(map(tuple, rest[0]))
    return await store.export_accounts(), actions


def _migrate(source, target):
    return subprocess.run([sys.executable, "-m", "auditd", "migrate", "--from", str(source),
                           "--to", str(target)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


async def test_migrate_sqlite_to_postgres_moves_everything_identically(tmp_path):
    pgtools.require_postgres()
    source = tmp_path / "old.db"
    async with SQLiteStore(source) as store:
        keys = await _fill(store)
        before = await _everything(store)
        pages = [await store.list_actions(ListQuery(None, 50, offset=o)) for o in (0, 50, 100)]
        related = await store.list_actions(ListQuery(frozenset({"acme"}), 100, filters={
            "object": SERVICE, "include_related": True}))
    url = pgtools.clean_database("migrate")
    done = _migrate(source, url)
    assert done.returncode == 0, done.stderr
    assert "migrated 4 users, 2 organizations, 2 memberships; 120 actions and 2,576 log lines" \
        in done.stderr
    # the planner has statistics at once, whether autovacuum runs or not
    assert "refreshing the database's planner statistics" in done.stderr
    conn = await asyncpg.connect(url)
    try:
        analyzed = {r[0] for r in await conn.fetch(
            "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = 'public'")}
        visible = await conn.fetchval(     # vacuumed: index-only scans skip the rows' pages
            "SELECT relallvisible FROM pg_class WHERE relname = 'action_keys'")
    finally:
        await conn.close()
    assert {"actions", "action_keys", "action_ancestors", "objects", "object_parents"} \
        <= analyzed
    assert visible > 0
    async with open_store(Config(db=url)) as target:
        after = await _everything(target)
        assert after[0] == before[0]                       # users, key hashes, orgs, members
        assert after[1].keys() == before[1].keys()
        for uuid, (action, edges, logs) in before[1].items():
            assert after[1][uuid] == [action, edges, logs], uuid
        for name, key in keys.items():                      # so every key still works
            assert (await target.authenticate(name, key)).name == name
        for offset, page in zip((0, 50, 100), pages):
            again = await target.list_actions(ListQuery(None, 50, offset=offset))
            assert (again.total, again.docs) == (page.total, page.docs)
        again = await target.list_actions(ListQuery(frozenset({"acme"}), 100, filters={
            "object": SERVICE, "include_related": True}))
        assert (again.total, again.docs) == (related.total, related.docs)
        assert await target.counts_by_state() == before_counts(before[1])
    # a second run adds nothing, and the target checks out
    again = _migrate(source, url)
    assert again.returncode == 0, again.stderr
    assert "0 actions and 0 log lines; skipped 120 actions already there; 0 errors" in again.stderr
    checked = subprocess.run([sys.executable, "-m", "auditd", "check", "--db", url],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def before_counts(actions: dict) -> dict:
    counts = dict.fromkeys(("Pending", "In progress", "Canceling", "Canceled", "Success",
                            "Failed"), 0)
    for action, _, _ in actions.values():
        counts[action["state"]] += 1
    return counts


async def test_migrate_refuses_a_missing_source(tmp_path):
    pgtools.require_postgres()
    done = _migrate(tmp_path / "nope.db", pgtools.clean_database("migrate"))
    assert done.returncode == 1
    assert "no auditd database at" in done.stderr and "--from" in done.stderr
    assert not (tmp_path / "nope.db").exists()


async def _tables(url: str) -> dict:
    """Every row a migration writes, object ids as URIs (their order is the order of the ids),
    each action and line with the partition it is in."""
    import asyncpg
    conn = await asyncpg.connect(url)
    queries = {
        "actions": 'SELECT a.id, uuid, namespace, state, action, method, path, object, o.uri, '
                   '"user", user_agent, ip, location, body, start_ts, end_ts, is_user_action, '
                   'cancelable, retriable, log_count, doc, a.tableoid::regclass::text '
                   'FROM actions a LEFT JOIN objects o ON o.id = a.object_id ORDER BY a.id',
        "keys": "SELECT uuid, id, start_ts FROM action_keys ORDER BY id",
        "logs": "SELECT *, tableoid::regclass::text FROM action_logs ORDER BY action_id, seq",
        "objects": "SELECT uri FROM objects ORDER BY id",
        "edges": "SELECT c.uri, p.uri FROM object_parents e JOIN objects c ON c.id = e.child_id "
                 "JOIN objects p ON p.id = e.parent_id ORDER BY 1, 2",
        "counts": "SELECT * FROM action_counts WHERE n != 0 ORDER BY 1, 2",
        "users": "SELECT name, role, key_hash, created_at FROM users ORDER BY name",
        "orgs": "SELECT o.name, o.created_at, u.name FROM orgs o LEFT JOIN org_members m ON "
                "m.org_id = o.id LEFT JOIN users u ON u.id = m.user_id ORDER BY 1, 3",
        "next id": "SELECT last_value FROM actions_id_seq",
    }
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)] for name, sql in queries.items()}
    finally:
        await conn.close()


async def _forget_some(url: str, uuids: list):
    import asyncpg
    conn = await asyncpg.connect(url)
    for sql in ("DELETE FROM action_logs WHERE action_id IN (SELECT id FROM action_keys "
                "WHERE uuid = ANY($1::text[]))", "DELETE FROM actions WHERE uuid = ANY($1::text[])",
                "DELETE FROM action_keys WHERE uuid = ANY($1::text[])"):
        await conn.execute(sql, uuids)
    await conn.close()


async def test_migrate_in_bulk_writes_what_record_by_record_writes(tmp_path, monkeypatch,
                                                                    caplog):
    """COPY in batches (the default) against one savepoint per record: the same rows, also when
    a migration that stopped is run again (batches mixing new and stored actions)."""
    pgtools.require_postgres()
    from auditd.cli.migrate import migrate
    from auditd.store.postgres import bulk
    source = tmp_path / "old.db"
    async with SQLiteStore(source) as store:
        await _fill(store)
        uuids = [a["uuid"] for _, a, *_ in [x async for x in store.export_actions({})]]
    missing = uuids[0:1] + uuids[5:9] + uuids[60:61] + uuids[-3:]   # the long log's action too
    targets = {}

    async def record_by_record(*args):
        raise bulk.NotBulk("for this test")
    caplog.set_level(logging.DEBUG, logger="auditd.store")
    for mode in ("bulk", "record by record"):
        if mode != "bulk":
            monkeypatch.setattr(bulk, "import_items", record_by_record)
        url = pgtools.clean_database("migrate_" + mode.replace(" ", "_"))
        async with SQLiteStore(source) as src, open_store(Config(db=url)) as target:
            first = await migrate(src, target)
        await _forget_some(url, missing)
        async with SQLiteStore(source) as src, open_store(Config(db=url)) as target:
            second = await migrate(src, target)
        assert (first["imported"], first["lines"], first["errors"]) == (120, 2576, [])
        assert (second["imported"], second["skipped"], second["errors"]) == (9, 111, [])
        targets[mode] = (await _tables(url), first, second)
        assert ("goes record by record" in caplog.text) == (mode != "bulk")
    bulk_tables, by_record = targets["bulk"][0], targets["record by record"][0]
    assert bulk_tables.keys() == by_record.keys()
    for name in bulk_tables:
        assert bulk_tables[name] == by_record[name], name
    assert targets["bulk"][1:] == targets["record by record"][1:]
    assert check(url)["problems"] == []
