"""The schema is applied from schema.sql, versioned with PRAGMA user_version, migrated forward, and
a database from a newer auditd is refused with a clear message."""
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT
from auditd.model.errors import SchemaVersionError
from auditd.model.actions import new_action
from auditd.model.tally import ALL_TIME
from auditd.store.sqlite import SCHEMA_VERSION, SQLiteStore
from auditd.store.sqlite.database import prepare_database


def index_columns(path, name):
    with sqlite3.connect(path) as conn:
        return [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]


def user_version(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


async def test_a_new_database_gets_the_whole_schema_at_the_current_version(tmp_path):
    path = str(tmp_path / "new.db")
    assert prepare_database(path) == SCHEMA_VERSION
    assert user_version(path) == SCHEMA_VERSION
    assert index_columns(path, "actions_by_object") == ["object_id", "namespace", "start_ts", "id"]


async def test_a_version_1_database_is_migrated_and_keeps_its_actions(tmp_path):
    path = str(tmp_path / "old.db")
    prepare_database(path)
    async with SQLiteStore(path) as store:
        recorded = await store.record_action(new_action(action="Service Create", user="alice",
                                                        object="/api/app/v1/service/s/"))
    with sqlite3.connect(path) as conn:   # make it what version 1 wrote
        conn.executescript("DROP INDEX actions_by_object; "
                           "CREATE INDEX actions_by_object ON actions (object_id, start_ts, id); "
                           "PRAGMA user_version = 1;")

    assert prepare_database(path) == SCHEMA_VERSION
    assert user_version(path) == SCHEMA_VERSION
    assert index_columns(path, "actions_by_object") == ["object_id", "namespace", "start_ts", "id"]
    async with SQLiteStore(path) as store:
        assert recorded["uuid"] in await store.get_action_doc(recorded["uuid"], None)


def test_a_database_from_a_newer_auditd_is_refused_with_a_clear_message(tmp_path):
    path = str(tmp_path / "newer.db")
    prepare_database(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match="newer auditd"):
        prepare_database(path)

    served = subprocess.run([sys.executable, "-m", "auditd", "serve", "--db", path, "--port", "0"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert served.returncode != 0
    assert f"schema version {SCHEMA_VERSION + 1}" in served.stderr
    assert "Traceback" not in served.stderr
    assert user_version(path) == SCHEMA_VERSION + 1    # left as it was


def test_a_file_that_is_not_auditds_is_refused(tmp_path):
    path = str(tmp_path / "other.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(SchemaVersionError, match="not auditd's"):
        prepare_database(path)


V4_INDEXES = (   # what version 4 had where version 5 widened or added an index
    "DROP INDEX actions_by_time; CREATE INDEX actions_by_time ON actions (start_ts, id); "
    "DROP INDEX actions_by_namespace; "
    "CREATE INDEX actions_by_namespace ON actions (namespace, start_ts, id); "
    "DROP INDEX actions_by_state; CREATE INDEX actions_by_state ON actions (state, start_ts, id); "
    "DROP INDEX actions_by_namespace_state; "
    "CREATE INDEX actions_by_namespace_state ON actions (namespace, state, start_ts, id); "
    "DROP INDEX actions_by_end; CREATE INDEX actions_by_end ON actions (end_ts); "
    "DROP INDEX actions_by_action; DROP INDEX actions_by_namespace_action; "
    "DROP INDEX actions_by_user; DROP INDEX actions_by_is_user_action; "
    "DROP INDEX actions_by_uuid; DROP TABLE tallies; DROP TABLE action_ancestors; "
    "DROP TABLE ancestor_counts; DROP INDEX actions_by_uuid_prefix; ")


def schema_of(path):
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'actions_by%' "
            "ORDER BY name")]
        return {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
                for name in names}


def tallies_of(path):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM tallies ORDER BY kind, key, bucket").fetchall()


async def test_a_version_4_database_gets_the_tallies_the_writer_would_have_kept(tmp_path):
    path = str(tmp_path / "v4.db")
    async with SQLiteStore(path) as store:
        made = [await store.record_action(new_action(
            action=f"Service {verb}", user=user, namespace=user, state="In progress",
            start_date=1_700_000_000 + i * 5000)) for i, (verb, user) in
            enumerate([("Create", "alice"), ("Stop", "bob"), ("Create", "bob")] * 5)]
        for action in made[::3]:
            await store.change_state(action["uuid"], "Success", None)
        await store.cancel(made[1]["uuid"], None)
    fresh_schema, fresh_tallies = schema_of(path), tallies_of(path)
    assert fresh_tallies
    with sqlite3.connect(path) as conn:
        conn.executescript(V4_INDEXES + "PRAGMA user_version = 4;")
    assert schema_of(path) != fresh_schema

    assert prepare_database(path) == SCHEMA_VERSION
    assert schema_of(path) == fresh_schema
    assert tallies_of(path) == fresh_tallies


async def version_7(path):
    """A database as schema 7 kept it (uuid prefixes counted by two digits), and the tallies
    schema 8 counts for it."""
    async with SQLiteStore(path) as store:
        made = [await store.record_action(new_action(
            action="Service Create", user=f"u{i % 3}", namespace=f"u{i % 3}",
            state="In progress")) for i in range(300)]
        for action in made[::4]:
            await store.change_state(action["uuid"], "Success", None)
    fresh = tallies_of(path)
    prefixes = [row for row in fresh if row[0] == "p"]
    assert {len(row[1]) for row in prefixes} == {3} and 200 < len(prefixes) <= 300
    with sqlite3.connect(path) as conn:     # what version 7 kept: two digits
        conn.execute("DELETE FROM tallies WHERE kind IN ('p', 'np')")
        conn.execute("INSERT INTO tallies (kind, key, bucket, in_progress) "
                     "SELECT 'p', substr(uuid, 1, 2), ?, count(*) FROM actions "
                     "GROUP BY substr(uuid, 1, 2)", (ALL_TIME,))
        conn.execute("PRAGMA user_version = 7")
    assert tallies_of(path) != fresh
    return fresh


async def test_a_version_7_database_gets_its_uuid_prefixes_counted_by_three_digits(tmp_path):
    path = str(tmp_path / "v7.db")
    fresh = await version_7(path)
    assert prepare_database(path) == SCHEMA_VERSION
    assert tallies_of(path) == fresh


async def test_a_command_on_an_older_database_says_what_its_migration_does(tmp_path):
    # counting the prefixes of ten million actions takes a minute: a command that waits for it
    # says so on stderr, and its output on stdout stays data
    path = str(tmp_path / "v7.db")
    fresh = await version_7(path)
    done = subprocess.run([sys.executable, "-m", "auditd", "user", "list", "--db", path],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NAME\tROLE\tORGANIZATIONS"]
    assert f"migrating {path} from schema version 7 to 8" in done.stderr
    assert "counting the uuid prefixes of 300 actions by 3 digits" in done.stderr
    assert "uuid prefixes counted" in done.stderr
    assert tallies_of(path) == fresh
    again = subprocess.run([sys.executable, "-m", "auditd", "user", "list", "--db", path],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert again.returncode == 0 and "migrating" not in again.stderr


def ancestors_of(path):
    with sqlite3.connect(path) as conn:
        return (conn.execute("SELECT * FROM action_ancestors ORDER BY 1, 2, 3").fetchall(),
                conn.execute("SELECT * FROM ancestor_counts ORDER BY 1, 2").fetchall())


async def test_a_version_5_database_gets_its_actions_filed_under_their_ancestors(tmp_path):
    path = str(tmp_path / "v5.db")
    stack, service = "/api/app/v1/stack/ST/", "/api/app/v1/service/SV/"
    async with SQLiteStore(path) as store:
        await store.record_action(new_action(action="Service Start", object=service, user="u"))
        await store.record_action(new_action(action="Container Start",   # brings SV -> ST too
                                             object="/api/app/v1/container/C/",
                                             parents=[service, stack], user="u"))
        await store.record_action(new_action(action="Stack Start", object=stack, user="u"))
    fresh, fresh_schema = ancestors_of(path), schema_of(path)
    assert len(fresh[0]) == 3    # the service's action under ST; the container's under SV and ST
    assert sorted(n for _, _, n in fresh[1]) == [1, 2]     # one under SV, two under ST
    with sqlite3.connect(path) as conn:
        conn.executescript("DROP TABLE action_ancestors; DROP TABLE ancestor_counts; "
                           "DROP INDEX actions_by_uuid_prefix; PRAGMA user_version = 5;")

    assert prepare_database(path) == SCHEMA_VERSION
    assert ancestors_of(path) == fresh
    assert schema_of(path) == fresh_schema
