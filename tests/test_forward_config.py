"""Forwarding's parts without a server: the [[forward]] tables and their error messages, the
SQLite store's events and positions, and the rendering of events from any starting point."""
import sqlite3
import subprocess
import sys
import time

import pytest

from auditd import config as config_module
from auditd.config import ConfigError, load_config
from auditd.model.actions import new_action
from auditd.store.sqlite import SQLiteStore
from auditd.store.sqlite.database import SCHEMA_VERSION, prepare_database
from auditd.tasks.forward.events import Renderer, matches
from conftest import ROOT


@pytest.fixture(autouse=True)
def no_system_file(monkeypatch, tmp_path):
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_FILE", str(tmp_path / "no-system.toml"))


def load(tmp_path, text: str, **flags):
    path = tmp_path / "auditd.toml"
    path.write_text(text)
    return load_config(flags, str(path), environ={})[0]


def test_sinks_are_read_with_their_defaults(tmp_path):
    config = load(tmp_path, """
port = 9000
[[forward]]
url = "https://bob:pw@siem.example.com:8443/in?token=abc"
headers = { Authorization = "Bearer x", X-Org = "acme" }
states = ["Success", "Failed"]
[[forward]]
name = "journal"
syslog = "unix:/dev/log"
types = ["record", "state"]
batch_size = 10
start = "beginning"
""")
    http, journal = config.forward
    assert config.port == 9000
    # the default name is the url without its password and query string (they may be secrets)
    assert http.name == http.target == "https://siem.example.com:8443/in"
    assert (http.batch_size, http.start, http.backoff_max) == (100, "now", 60.0)
    assert http.states == {"Success", "Failed"} and http.namespaces is None
    assert dict(http.headers) == {"Authorization": "Bearer x", "X-Org": "acme"}
    assert "Bearer" not in repr(http) and "pw" not in repr(http)
    assert journal.syslog == ("unix", "/dev/log") and journal.target == "syslog unix:/dev/log"
    assert (journal.batch_size, journal.start, journal.types) == (10, "beginning",
                                                                  {"record", "state"})


@pytest.mark.parametrize("table, named", [
    ('url = "ftp://x/"', "#1, key 'url' must be an http:// or https:// URL"),
    ('syslog = "udp://host"', "#1, key 'syslog' must be unix:/dev/log"),
    ('syslog = "unix:dev/log"', "#1, key 'syslog'"),
    ('url = "http://a/"\nsyslog = "unix:/dev/log"', "#1 needs exactly one of url"),
    ('name = "x"', "#1 needs exactly one of url"),
    ('url = "http://a/"\nstates = ["Done"]', "#1, key 'states': unknown 'Done'"),
    ('url = "http://a/"\ntypes = ["create"]', "#1, key 'types': unknown 'create'; accepted: record"),
    ('url = "http://a/"\nnamespaces = "acme"', "#1, key 'namespaces' must be a non-empty list"),
    ('url = "http://a/"\nbatch_size = 0', "#1, key 'batch_size' must be a number from 1"),
    ('url = "http://a/"\nstart = "yesterday"', "#1, key 'start' must be one of now, beginning"),
    ('url = "http://a/"\nfacility = "local0"', "#1, key 'facility'"),
    ('syslog = "unix:/dev/log"\nheaders = { A = "b" }', "#1, key 'headers' is a table of HTTP"),
    ('url = "http://a/"\nheaders = { "Bad Name" = "v" }', "#1, key 'headers': 'Bad Name'"),
    ('url = "http://a/"\ntoken = "x"', "#1: unknown key token; accepted: name, url"),
])
def test_a_bad_sink_is_named_by_its_table_and_key(tmp_path, table, named):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f"[[forward]]\n{table}\n")
    assert named in err.value.message and "auditd.toml: [[forward]]" in err.value.message


def test_the_table_index_counts_from_one_and_names_must_differ(tmp_path):
    with pytest.raises(ConfigError, match=r"\[\[forward\]\] #2, key 'url'"):
        load(tmp_path, '[[forward]]\nurl = "http://a/"\n[[forward]]\nurl = 5\n')
    with pytest.raises(ConfigError, match=r"#2, key 'name': 'http://a/' is the name of "
                                          r"\[\[forward\]\] #1 too"):
        load(tmp_path, '[[forward]]\nurl = "http://a/"\n[[forward]]\nurl = "http://a/"\n')
    with pytest.raises(ConfigError, match="forward must be"):
        load(tmp_path, 'forward = "http://a/"\n')


def test_forwarding_needs_the_tamper_evident_log(tmp_path):
    with pytest.raises(ConfigError, match="--transparency: transparency = false"):
        load(tmp_path, '[[forward]]\nurl = "http://a/"\n', transparency=False)


def test_serve_refuses_a_bad_sink_without_a_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[forward]]\nurl = "http://a/"\nbatch_size = "many"\n')
    served = subprocess.run([sys.executable, "-m", "auditd", "serve", "--config", str(path),
                             "--db", str(tmp_path / "a.db"), "--port", "0"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert served.returncode != 0 and "Traceback" not in served.stderr
    assert "[[forward]] #1, key 'batch_size'" in served.stderr


# ---------------------------------------------------------------------------- the store

async def _busy(store) -> list[dict]:
    a = await store.record_action(new_action(action="A", user="u", namespace="acme",
                                             state="Pending"))
    b = await store.record_action(new_action(action="B", user="u", namespace="other"))
    await store.append_logs(a["uuid"], [(1, "stdout", "one"), (2, None, "two")], None)
    await store.change_state(a["uuid"], "In progress", None)
    await store.append_logs(b["uuid"], [(3, "stdout", "b")], None)
    await store.change_state(a["uuid"], "Success", None)
    return [a, b]


async def test_events_and_positions_in_sqlite(tmp_path):
    async with SQLiteStore(tmp_path / "s.db") as store:
        a, _ = await _busy(store)
        rows = await store.read_events(0, 100)
        assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6] and (await store.tree_head())[0] == 6
        assert [r[0] for r in await store.read_events(2, 3)] == [3, 4, 5]
        assert len(await store.action_events(rows[0][1], 6)) == 3     # a's events before 6

        assert (await store.start_forward("s", 4))["position"] == 4
        assert (await store.start_forward("s", 0))["position"] == 4   # a stored one is kept
        await store.forward_failed("s", "HTTP 500", 10.0)
        await store.advance_forward("s", 5, 1, 11.0)
        await store.advance_forward("s", 6, 0, 12.0)   # nothing delivered: not a success
        assert (await store.forward_positions())["s"] == {
            "position": 6, "started_at": pytest.approx(time.time(), abs=60),
            "delivered": 1, "last_success": 11.0, "last_error": "HTTP 500",
            "last_error_at": 10.0, "errors": 1}
        await store.reset()            # the log starts again: so do the positions
        assert (await store.forward_positions())["s"]["position"] == 0
        await store.record_action(new_action(action="C", user="u"))
        assert [r[0] for r in await store.read_events(0, 10)] == [1]


async def test_a_version_3_database_gets_the_positions_table(tmp_path):
    path = str(tmp_path / "v3.db")
    prepare_database(path)
    with sqlite3.connect(path) as conn:
        conn.executescript("DROP TABLE forward_positions; PRAGMA user_version = 3;")
    assert prepare_database(path) == SCHEMA_VERSION
    async with SQLiteStore(path) as store:
        assert await store.forward_positions() == {}


async def test_events_render_the_same_from_any_starting_point(tmp_path):
    """A sink that starts mid-way (start = "now", a restart, an action it never saw) renders
    each event exactly as one that saw everything, from the action's earlier events."""
    async with SQLiteStore(tmp_path / "r.db") as store:
        a, b = await _busy(store)
        rows = await store.read_events(0, 100)
        whole, missing = await Renderer(store).render(rows)
        assert missing == 0
        one_by_one = [(await Renderer(store).render([row]))[0][0] for row in rows]
        assert [e.line() for e in one_by_one] == [e.line() for e in whole]
        assert [(e.type, e.state) for e in whole] == [
            ("record", "Pending"), ("record", "In progress"), ("logs", "Pending"),
            ("state", "In progress"), ("logs", "In progress"), ("state", "Success")]
        final = await store.get_action(a["uuid"], None)
        assert whole[-1].doc == final["doc"]

        class Sink:
            namespaces, states, types = frozenset({"acme"}), frozenset({"Pending"}), None
        assert [e.type for e in whole if matches(Sink, e)] == ["record", "logs"]

        await store.purge(2**40)       # a purge leaf: the action is gone, its bytes too
        later = await store.read_events(6, 100)
        purged, _ = await Renderer(store).render(later)
        assert [(e.type, e.doc, e.namespace) for e in purged] == [("purge", None, None)]
        _, missing = await Renderer(store).render(await store.read_events(0, 100))
        assert missing == 4            # a's four events lost their bytes with the purge


def test_postgresql_has_no_event_log_to_forward_yet_and_says_so(tmp_path):
    import pgtools
    pgtools.require_postgres()
    url = pgtools.clean_database("forward")
    path = tmp_path / "sinks.toml"
    path.write_text('[[forward]]\nurl = "http://127.0.0.1:9/"\n')
    served = subprocess.run([sys.executable, "-m", "auditd", "serve", "--config", str(path),
                             "--db", url, "--port", "0"],   # the key beside the cwd: a new one
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert served.returncode != 0 and "Traceback" not in served.stderr
    assert "forwarding ([[forward]] sinks) needs an SQLite database" in served.stderr
