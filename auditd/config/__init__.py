"""auditd's settings: one dataclass, filled from defaults, a TOML file, AUDITD_* variables and flags.

Precedence, lowest first: the defaults below, the TOML file (`--config PATH`, else $AUDITD_CONFIG,
else /etc/auditd/auditd.toml when it exists), `AUDITD_<NAME>` environment variables, command-line
flags. The file uses the field names as top-level keys (`port = 9000`); the variables use them in
capitals (`AUDITD_PORT=9000`). An unknown key in the file, a bad value, or an AUDITD_ variable
that is a near miss of a setting's name stops the start with a `ConfigError` that names where it
came from and what is accepted; other unknown AUDITD_ variables only earn a warning (other tools
use the prefix too).

Forwarding sinks are `[[forward]]` tables, in the file only (`ForwardSink`, README "Forwarding to
a SIEM").
"""
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import ConfigError
from .forward import ForwardSink, read_sinks  # noqa: F401 - part of the configuration

DEFAULT_CONFIG_FILE = "/etc/auditd/auditd.toml"
ENV_PREFIX = "AUDITD_"
CONFIG_ENV = "AUDITD_CONFIG"      # names the file; not a setting itself
# AUDITD_* variables that are not settings but belong to this project (the real clients' cache
# for the tests and tests/tools/real-clients.sh, the test suite's backend, the benchmarks'
# folder and PostgreSQL databases, which reach the auditd commands they run): never warned about.
OTHER_KNOWN_ENV = frozenset({CONFIG_ENV, "AUDITD_REAL_CLIENTS_DIR", "AUDITD_TEST_BACKEND",
                             "AUDITD_BENCH_DATA", "AUDITD_BENCH_PG", "AUDITD_BENCH_PG_SIZE",
                             "AUDITD_BENCH_PG_SMALL"})
# An admin key given by the operator: at least 128 bits' worth of the characters a generated key
# uses, never starting with '-' (a command line would take it for an option).
ADMIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{15,255}")

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_LEVELS = ("debug", "info", "warning", "error")


def default_db_path() -> str:
    """$STATE_DIRECTORY under systemd, else ./auditd.db."""
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return str(Path(state_dir) / "auditd.db") if state_dir else "auditd.db"


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = field(default_factory=default_db_path)
    synchronous: str = "FULL"          # SQLite synchronous: FULL (default), NORMAL, OFF
    group_commit: bool = True          # commit concurrent writes together
    writer_process: bool = True        # serve: SQLite's writer in a process of its own
    list_cache_bytes: int = 16 * 1024 * 1024   # SQLite: list pages kept until a write (0: none)
    geoip_db: str = ""                 # MaxMind City database file for `location`
    log_level: str = "info"
    access_log: bool = True
    retention_days: int = 0            # 0 keeps actions forever
    stream_stall_seconds: float = 30.0  # a WebSocket reader stuck this long is closed (1013)
    shutdown_timeout: float = 10.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_connections: int = 4096        # open connections (kept under the descriptor limit)
    head_timeout: float = 10.0         # a request head must arrive within this
    idle_timeout: float = 60.0         # a kept-alive connection that says nothing is closed
    max_inflight_bytes: int = 64 * 1024 * 1024   # request bodies being read at once
    retry_limit: int = 30              # retries per user per minute (0: no limit)
    cancel_limit: int = 60             # cancels per user per minute (0: no limit)
    check_on_start: bool = False       # run SQLite's quick_check before serving
    transparency: bool = True          # every event enters the tamper-evident log (Merkle tree)
    checkpoint_interval: float = 60.0  # seconds between signed checkpoints (when the tree grew)
    demo: bool = False
    fixtures: str = ""
    admin_key: str = ""                # the first admin's key on a new database (a secret)
    forward: list = field(default_factory=list)   # [ForwardSink]: [[forward]] tables, file only

    @classmethod
    def names(cls) -> list[str]:
        """The flat settings (each also a variable and a flag); not `forward`."""
        return [f.name for f in fields(cls) if f.name not in FILE_ONLY]


FILE_ONLY = ("forward",)
# Fields whose value must never be printed (`config show` hides them).
SECRET_FIELDS: frozenset = frozenset({"admin_key"})


_TYPES = {f.name: f.type for f in fields(Config)}


# ---------------------------------------------------------------------------- checking values

def _convert(name: str, value, source: str):
    """`value` (a string from the environment or a flag, or a TOML value) as the field's type."""
    kind = _TYPES[name]
    kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind)
    where = f"{source}: {name}"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be a whole number, not {value!r}") from None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be a number of seconds, not {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number of seconds, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, not {value!r}")
        return number
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _check(name: str, value, source: str):
    """Range and choice checks; returns the value, normalized where that is harmless."""
    where = f"{source}: {name}"
    if name == "port" and not 0 <= value <= 65535:
        raise ConfigError(f"{where} must be a port number from 0 to 65535, not {value}")
    if name == "host" and not value.strip():
        raise ConfigError(f"{where} must be an address to listen on, such as 127.0.0.1 or ::")
    if name == "db" and not value.strip():
        raise ConfigError(f"{where} must be the path of the SQLite database file")
    if name == "synchronous":
        if value.upper() not in SYNCHRONOUS_MODES:
            raise ConfigError(f"{where} must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                              f"not {value!r}")
        return value.upper()
    if name == "log_level":
        if value.lower() not in LOG_LEVELS:
            raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
        return value.lower()
    if name == "retention_days" and value < 0:
        raise ConfigError(f"{where} must be 0 (keep forever) or a number of days, not {value}")
    if name in ("stream_stall_seconds", "shutdown_timeout", "head_timeout",
                "idle_timeout", "checkpoint_interval") and value <= 0:
        raise ConfigError(f"{where} must be a number of seconds above 0, not {value}")
    if name == "list_cache_bytes" and value < 0:
        raise ConfigError(f"{where} must be 0 (remember no list page) or a number of bytes, "
                          f"not {value}")
    if name == "max_body_bytes" and value < 1024:
        raise ConfigError(f"{where} must be at least 1024 bytes, not {value}")
    if name == "max_connections" and value < 16:
        raise ConfigError(f"{where} must be at least 16, not {value}")
    if name == "max_inflight_bytes" and value < 1024 * 1024:
        raise ConfigError(f"{where} must be at least 1 MiB (1048576), not {value}")
    if name in ("retry_limit", "cancel_limit") and value < 0:
        raise ConfigError(f"{where} must be 0 (no limit) or a number per minute, not {value}")
    if name == "admin_key" and value and not ADMIN_KEY_PATTERN.fullmatch(value):
        raise ConfigError(f"{where} must be 16 to 256 characters of A-Z a-z 0-9 _ - (not "
                          "starting with '-'), e.g. the output of: python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'")
    if name in ("geoip_db", "fixtures") and value and not Path(value).is_file():
        raise ConfigError(f"{where}: no such file: {value}")
    return value


# ---------------------------------------------------------------------------- the sources

def config_file_path(explicit: str | None, environ) -> tuple[str | None, bool]:
    """(path, required): the file to read, and whether its absence is an error."""
    if explicit:
        return explicit, True
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], True
    return (DEFAULT_CONFIG_FILE, False) if Path(DEFAULT_CONFIG_FILE).is_file() else (None, False)


def _read_file(path: str, required: bool) -> dict:
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return {}
    except OSError as err:
        raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    if "forward" in table:
        table["forward"] = read_sinks(table["forward"], path)
    known = set(Config.names()) | set(FILE_ONLY)
    unknown = sorted(key for key in table if key not in known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; known settings: {', '.join(Config.names())}")
    return table


def _read_environment(environ) -> dict[str, tuple[str, str]]:
    """{name: (value, variable)} from AUDITD_* variables. An unknown AUDITD_ name is left to
    `unknown_environment` (a warning), except a near miss of a setting's name (AUDITD_PROT), which
    is surely a typo that would otherwise be ignored: that stops the start."""
    known = set(Config.names())
    found, near = {}, []
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in OTHER_KNOWN_ENV:
            continue
        name = variable[len(ENV_PREFIX):].lower()
        if name in known:
            found[name] = (value, variable)
        elif (close := _near_miss(name)):
            near.append(f"{variable} (did you mean {ENV_PREFIX}{close.upper()}?)")
    if near:
        raise ConfigError(f"unknown environment variable{'s' if len(near) > 1 else ''} "
                          f"{', '.join(sorted(near))}; accepted: {_accepted_variables()}")
    return found


def _near_miss(name: str) -> str | None:
    """The setting `name` (lower case, no prefix) is probably a typo of, if any."""
    close = difflib.get_close_matches(name, Config.names(), n=1, cutoff=0.7)
    return close[0] if close else None


def _accepted_variables() -> str:
    return ", ".join([CONFIG_ENV] + [ENV_PREFIX + n.upper() for n in Config.names()])


def unknown_environment(environ=None) -> str | None:
    """A warning naming the AUDITD_* variables that are no setting (None when there are none)."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + n.upper() for n in Config.names()} | OTHER_KNOWN_ENV
    unknown = sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in known
                     and not _near_miss(v[len(ENV_PREFIX):].lower()))   # those stop the start
    if not unknown:
        return None
    return (f"ignoring unknown environment variable{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)} (the settings are {_accepted_variables()})")


def load_config(flags: dict | None = None, config_file: str | None = None,
                environ=None) -> tuple[Config, dict[str, str]]:
    """The effective configuration and, for each setting, where its value came from.

    `flags` maps field names to values given on the command line (None: not given); their source
    is named `--flag-name` in messages."""
    environ = os.environ if environ is None else environ
    config, sources = Config(), {}
    for name in Config.names():
        sources[name] = "default"
    path, required = config_file_path(config_file, environ)
    layers = []
    if path:
        layers += [(name, value, path) for name, value in _read_file(path, required).items()]
    layers += [(name, value, variable)
               for name, (value, variable) in _read_environment(environ).items()]
    layers += [(name, value, "--" + name.replace("_", "-"))
               for name, value in (flags or {}).items() if value is not None]
    for name, value, source in layers:
        if name in FILE_ONLY:
            setattr(config, name, value)
            continue
        setattr(config, name, _check(name, _convert(name, value, source), source))
        sources[name] = source
    if config.forward and not config.transparency:
        raise ConfigError(f"{sources['transparency']}: transparency = false, but the [[forward]] "
                          "sinks read the tamper-evident log's events: turn transparency on, or "
                          "remove the [[forward]] tables")
    return config, sources


# ---------------------------------------------------------------------------- [[forward]]

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t"))
    escaped = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def render_toml(config: Config, sources: dict[str, str] | None = None) -> str:
    """The configuration as a TOML file that `--config` accepts; secrets are left out."""
    lines = []
    for name in Config.names():
        if name in SECRET_FIELDS:
            lines.append(f"# {name} = (set, hidden)")
            continue
        line = f"{name} = {_toml_value(getattr(config, name))}"
        if sources:
            line += f"  # {sources[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"
