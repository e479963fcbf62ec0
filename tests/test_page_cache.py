"""A repeated list is answered from memory until the database changes (auditd/store/pagecache.py):
a poller's "newest 25" costs no statement while nothing is written, and whatever was committed
before a request, by this server or by any other process on the file, is in its answer."""
import json
import sqlite3

from auditd.model.actions import new_action
from auditd.model.query import ListQuery, Page
from auditd.store.pagecache import PageCache, query_key
from auditd.store import sqlite as sqlite_store
from auditd.store.sqlite import SQLiteStore

NEWEST = ListQuery(frozenset({"ns1"}), 25, filters={"state": "Success"})


def _statements(store) -> list[str]:
    """Every statement the store's loop connection runs from now on (but data_version checks)."""
    seen = []
    store._inline.set_trace_callback(
        lambda sql: None if sql.startswith("PRAGMA data_version") else seen.append(sql))
    return seen


def _uuids(page) -> list[str]:
    return [json.loads(doc)["uuid"] for doc in page.docs]


async def _store_with(path, n: int) -> tuple[SQLiteStore, list[dict]]:
    store = await SQLiteStore(str(path)).open()
    recorded = [await store.record_action(new_action(
        action="Service Create", user="alice", namespace="ns1", state="Success",
        start_date=1_700_000_000 + i)) for i in range(n)]
    return store, recorded


async def test_a_repeated_list_runs_no_statement_until_something_is_written(tmp_path):
    store, recorded = await _store_with(tmp_path / "a.db", 30)
    try:
        first = await store.list_actions(NEWEST)
        assert first.total == 30
        assert _uuids(first) == [a["uuid"] for a in reversed(recorded)][:25]
        statements = _statements(store)
        again = await store.list_actions(NEWEST)
        assert again == first and again.json_items() == first.json_items()
        assert statements == []

        # a write through the store: the next answer has it, read again
        newer = await store.record_action(new_action(
            action="Service Create", user="alice", namespace="ns1", state="Success",
            start_date=1_700_000_100))
        after = await store.list_actions(NEWEST)
        assert after.total == 31 and _uuids(after)[0] == newer["uuid"]
        assert any("FROM actions" in sql or "tallies" in sql for sql in statements)

        # another query, another namespace set, another page: each its own answer
        other = await store.list_actions(ListQuery(frozenset({"ns1"}), 5, offset=5,
                                                   filters={"state": "Success"}))
        assert _uuids(other) == _uuids(after)[5:10]
        assert (await store.list_actions(ListQuery(frozenset({"ns2"}), 25))).total == 0
    finally:
        await store.close()


async def test_a_commit_by_another_process_is_in_the_next_answer(tmp_path, monkeypatch):
    """Another process writing the file (a CLI command, a second store) moves data_version,
    which every list request reads first: no answer from before it, not even for a moment (the
    store's other caches look at most every CACHE_RECHECK: an hour here)."""
    monkeypatch.setattr(sqlite_store, "CACHE_RECHECK", 3600)
    path = tmp_path / "b.db"
    store, recorded = await _store_with(path, 3)
    try:
        assert (await store.list_actions(NEWEST)).total == 3
        other = await SQLiteStore(str(path)).open()
        try:
            added = await other.record_action(new_action(
                action="Service Create", user="bob", namespace="ns1", state="Success",
                start_date=1_700_000_050))
        finally:
            await other.close()
        page = await store.list_actions(NEWEST)
        assert page.total == 4 and _uuids(page)[0] == added["uuid"]

        # a raw change of a document, as a repair script would make it
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE actions SET doc = replace(doc, '\"bob\"', '\"carol\"')")
        conn.close()
        page = await store.list_actions(NEWEST)
        assert json.loads(page.docs[0])["user"] == "carol"
    finally:
        await store.close()


def _page(nbytes: int) -> Page:
    return Page(1, [b"x" * (nbytes // 2)], (1, 1))


def test_a_page_read_before_a_newer_version_was_seen_is_not_kept():
    cache = PageCache()
    key = query_key(NEWEST)
    assert cache.get(1, key) is None
    cache.get(2, query_key(ListQuery(None, 25)))   # another request saw a commit meanwhile
    cache.put(1, key, _page(100))                  # the first request's page, from version 1
    assert cache.get(2, key) is None
    cache.put(2, key, _page(100))
    assert cache.get(2, key) is not None
    assert cache.get(3, key) is None and cache.pages == {}


def test_the_cache_holds_at_most_its_budget_and_never_one_huge_page():
    cache = PageCache(budget=64 * 1024)
    cache.get(1, None)
    cache.put(1, ("huge",), _page(8 * 1024))        # more than a sixteenth of the budget
    assert cache.pages == {}
    for i in range(100):
        cache.put(1, ("page", i), _page(1024))
        assert cache.size <= cache.budget
    assert 0 < len(cache.pages) < 100
    assert cache.get(1, ("page", 99)) is not None   # the newest is kept


def test_a_query_whose_filters_cannot_be_a_key_is_never_kept():
    query = ListQuery(None, 25, filters={"namespace": ["a", "b"]})
    assert query_key(query) is None
    cache = PageCache()
    assert cache.get(1, None) is None
    cache.put(1, None, _page(10))
    assert cache.pages == {}


async def test_list_cache_bytes_0_reads_every_list_and_a_negative_one_is_refused(tmp_path):
    from auditd.config import ConfigError, load_config
    from auditd.store.sqlite import create
    config, _ = load_config({"db": str(tmp_path / "c.db")}, environ={
        "AUDITD_LIST_CACHE_BYTES": "0"})
    assert config.list_cache_bytes == 0
    store = await create(config).open()
    try:
        await store.record_action(new_action(action="Service Create", user="alice",
                                             namespace="ns1", state="Success"))
        await store.list_actions(NEWEST)
        statements = _statements(store)
        assert (await store.list_actions(NEWEST)).total == 1
        assert statements
    finally:
        await store.close()
    try:
        load_config({"list_cache_bytes": "-1", "db": str(tmp_path / "c.db")}, environ={})
    except ConfigError as err:
        assert "--list-cache-bytes: list_cache_bytes must be 0" in str(err), str(err)
    else:
        raise AssertionError("a negative list_cache_bytes was accepted")


async def test_a_change_check_that_fails_is_503_and_the_next_one_looks_again(tmp_path):
    """The check behind every list and every credentials lookup reads the WAL index: when SQLite
    cannot (an I/O error, a recovery under way), the request is Unavailable (503 with the
    reason), not a crash; once it can again, the next list answers, with what was written."""
    from auditd.model.errors import Unavailable
    store, _ = await _store_with(tmp_path / "e.db", 3)
    try:
        assert (await store.list_actions(NEWEST)).total == 3
        await store.record_action(new_action(action="Service Create", user="alice",
                                             namespace="ns1", state="Success"))
        store._inline.set_authorizer(lambda action, arg, *_: sqlite3.SQLITE_DENY
                                     if action == sqlite3.SQLITE_PRAGMA
                                     and arg == "data_version" else sqlite3.SQLITE_OK)
        for attempt in (lambda: store.list_actions(NEWEST),
                        lambda: store.authenticate("alice", "any key")):
            try:
                await attempt()
            except Unavailable as err:
                assert "not authorized" in err.message and "retry" in err.message
            else:
                raise AssertionError("a failed change check answered")
        store._inline.set_authorizer(None)
        assert (await store.list_actions(NEWEST)).total == 4
    finally:
        await store.close()
