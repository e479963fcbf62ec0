"""The schema is applied from schema.sql, versioned with PRAGMA user_version, migrated forward, and
a database from a newer auditd is refused with a clear message."""
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT
from auditd.model.errors import SchemaVersionError
from auditd.model.actions import new_action
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
