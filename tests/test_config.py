"""Configuration as an operator meets it: `auditd config show`, and `auditd serve` refusing to
start on a setting it does not accept."""
import os
import subprocess
import sys
import tomllib
from dataclasses import fields

import pytest

from auditd import config as config_module
from auditd.config import SECRET_FIELDS, Config, ConfigError, load_config
from conftest import ROOT


@pytest.fixture(autouse=True)
def no_system_file(monkeypatch, tmp_path):
    """In-process loads never read this machine's /etc/auditd/auditd.toml."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_FILE", str(tmp_path / "no-system.toml"))


def auditd(*args, env=None, cwd=ROOT):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("AUDITD_") and k != "STATE_DIRECTORY"}
    # Nor do the processes: an empty AUDITD_CONFIG stands for "no file" unless a test names one.
    clean["AUDITD_CONFIG"] = os.devnull
    return subprocess.run([sys.executable, "-m", "auditd", *args], capture_output=True,
                          text=True, cwd=cwd, env=dict(clean, **(env or {})), timeout=60)


def show(*args, env=None) -> dict:
    result = auditd("config", "show", *args, env=env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_flags_beat_environment_beat_file(tmp_path):
    file = tmp_path / "auditd.toml"
    file.write_text('port = 1111\nhost = "0.0.0.0"\nlog_level = "debug"\n')
    env = {"AUDITD_PORT": "2222", "AUDITD_LOG_LEVEL": "warning"}
    shown = show("--config", str(file), "--log-level", "error", env=env)
    assert (shown["host"], shown["port"], shown["log_level"]) == ("0.0.0.0", 2222, "error")
    # AUDITD_CONFIG names the file when --config does not.
    shown = show(env={"AUDITD_CONFIG": str(file)})
    assert (shown["host"], shown["port"], shown["log_level"]) == ("0.0.0.0", 1111, "debug")


def test_every_setting_can_be_set_and_show_round_trips(tmp_path):
    existing = tmp_path / "exists.mmdb"
    existing.write_text("")
    changed = {}
    for f in fields(Config):
        if f.name not in Config.names():    # [[forward]] tables: test_forward_config.py
            continue
        default = getattr(Config(), f.name)
        if f.type is bool:
            changed[f.name] = not default
        elif f.type is int:
            changed[f.name] = default + 4321
        elif f.type is float:
            changed[f.name] = default + 1.5
        elif f.name in ("geoip_db", "fixtures"):
            changed[f.name] = str(existing)
        elif f.name == "synchronous":
            changed[f.name] = "NORMAL"
        elif f.name == "log_level":
            changed[f.name] = "warning"
        elif f.name == "admin_key":
            changed[f.name] = "ci-admin-key-0123456789"
        else:
            changed[f.name] = default + '-changed "quoted" \\ \u00e9'
    env = {"AUDITD_" + name.upper(): str(value).lower() if isinstance(value, bool) else str(value)
           for name, value in changed.items()}
    shown = show(env=env)
    visible = {k: v for k, v in changed.items() if k not in SECRET_FIELDS}
    assert shown == visible
    # What `config show` prints is a file `--config` accepts, with the same meaning; secrets
    # are never in it.
    saved = tmp_path / "saved.toml"
    saved.write_text(auditd("config", "show", env=env).stdout)
    assert changed["admin_key"] not in saved.read_text()
    assert "# admin_key = (set, hidden)" in saved.read_text()
    assert show("--config", str(saved)) == visible


def test_database_defaults_to_the_state_directory(tmp_path):
    assert show(env={"STATE_DIRECTORY": str(tmp_path)})["db"] == str(tmp_path / "auditd.db")
    defaults = show()
    assert (defaults["db"], defaults["host"], defaults["port"]) == ("auditd.db", "127.0.0.1", 8080)


@pytest.mark.parametrize("bad, named", [
    (["--port", "http"], "--port"),
    (["--config", "FILE"], "listen_port"),
])
def test_serve_refuses_to_start_on_a_bad_setting(tmp_path, bad, named):
    (tmp_path / "FILE").write_text('listen_port = 80\nport = 9000\n')
    bad = [str(tmp_path / a) if a == "FILE" else a for a in bad]
    result = auditd("serve", "--db", str(tmp_path / "x.db"), *bad)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("flags, environ, named", [
    ({"synchronous": "sometimes"}, {}, "--synchronous"),
    ({}, {"AUDITD_SHUTDOWN_TIMEOUT": "-1"}, "AUDITD_SHUTDOWN_TIMEOUT"),
    ({}, {"AUDITD_PORT": "70000"}, "AUDITD_PORT"),
    ({}, {"AUDITD_GROUP_COMMIT": "maybe"}, "AUDITD_GROUP_COMMIT"),
    ({}, {"AUDITD_GROUP_COMIT": "false"}, "AUDITD_GROUP_COMIT"),
    ({}, {"AUDITD_CONFIG": "/nonexistent/auditd.toml"}, "/nonexistent/auditd.toml"),
    ({"fixtures": "/nonexistent/fixtures.json"}, {}, "/nonexistent/fixtures.json"),
])
def test_bad_settings_are_named(flags, environ, named):
    with pytest.raises(ConfigError) as caught:
        load_config(flags, environ=environ)
    assert named in caught.value.message


def test_invalid_toml_is_reported_with_its_line(tmp_path):
    file = tmp_path / "broken.toml"
    file.write_text('port = 8080\nhost = 127.0.0.1\n')
    result = auditd("config", "show", "--config", str(file))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(file) in result.stderr and "line 2" in result.stderr


def test_the_system_file_is_read_only_when_it_exists(tmp_path, monkeypatch):
    system_file = tmp_path / "etc-auditd.toml"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_FILE", str(system_file))
    assert load_config(environ={})[0].port == 8080
    system_file.write_text("port = 7070\n")
    config, sources = load_config(environ={})
    assert config.port == 7070 and sources["port"] == str(system_file)
    with pytest.raises(ConfigError, match="no such file|does not exist"):
        load_config(environ={"AUDITD_CONFIG": str(tmp_path / "absent.toml")})


def test_user_commands_use_the_configured_database(tmp_path):
    file = tmp_path / "auditd.toml"
    db = tmp_path / "from-config.db"
    file.write_text(f"db = {str(db)!r}\n".replace("'", '"'))
    added = auditd("user", "add", "bob", "--create", "--config", str(file), cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert db.exists()
    listed = auditd("user", "list", env={"AUDITD_CONFIG": str(file)}, cwd=tmp_path)
    assert listed.stdout.splitlines()[1].split("\t")[0] == "bob"
