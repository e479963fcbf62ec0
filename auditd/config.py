"""auditd's settings: one dataclass, filled from defaults, a TOML file, AUDITD_* variables and flags.

Precedence, lowest first: the defaults below, the TOML file (`--config PATH`, else $AUDITD_CONFIG,
else /etc/auditd/auditd.toml when it exists), `AUDITD_<NAME>` environment variables, command-line
flags. The file uses the field names as top-level keys (`port = 9000`); the variables use them in
capitals (`AUDITD_PORT=9000`). An unknown key or a bad value stops the start with a `ConfigError`
that names where it came from and what is accepted.

Forwarding sinks are `[[forward]]` tables, in the file only (`ForwardSink`, README "Forwarding to
a SIEM").
"""
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from .model.actions import STATES
from .model.errors import AuditdError

DEFAULT_CONFIG_FILE = "/etc/auditd/auditd.toml"
ENV_PREFIX = "AUDITD_"
CONFIG_ENV = "AUDITD_CONFIG"      # names the file; not a setting itself

SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(AuditdError):
    """A setting is unknown or its value is not accepted: the start stops."""


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
    forward: list = field(default_factory=list)   # [ForwardSink]: [[forward]] tables, file only

    @classmethod
    def names(cls) -> list[str]:
        """The flat settings (each also a variable and a flag); not `forward`."""
        return [f.name for f in fields(cls) if f.name not in FILE_ONLY]


FILE_ONLY = ("forward",)
EVENT_TYPES = ("record", "state", "cancel", "retry", "logs", "purge")
SYSLOG_FACILITIES = tuple("kern user mail daemon auth syslog lpr news uucp cron authpriv ftp ntp "
                          "audit alert clock".split()) + tuple(f"local{i}" for i in range(8))


@dataclass(frozen=True)
class ForwardSink:
    """One `[[forward]]` table: where events go (`url`: HTTP POST of NDJSON; or `syslog`:
    ("unix", path) or ("udp" | "tcp", host, port)), which ones, and how."""
    name: str
    url: str | None = field(default=None, repr=False)   # may hold a password: see `target`
    syslog: tuple | None = None
    namespaces: frozenset | None = None     # None: every namespace
    states: frozenset | None = None         # the action's state after the event
    types: frozenset | None = None          # event types (EVENT_TYPES)
    batch_size: int = 100
    headers: tuple = field(default=(), repr=False)   # ((name, value), ...): secret, never shown
    start: str = "now"                      # "now" | "beginning", for a sink with no position
    backoff_max: float = 60.0               # seconds between retries, at most
    facility: str = "local0"                # syslog only

    @property
    def target(self) -> str:
        """Where it sends, as safe to show: no password, no query string (it may hold a token)."""
        if self.url:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        if self.syslog[0] == "unix":
            return f"syslog unix:{self.syslog[1]}"
        return f"syslog {self.syslog[0]}://{self.syslog[1]}:{self.syslog[2]}"


# Fields whose value must never be printed (none yet; `config show` hides any listed here).
SECRET_FIELDS: frozenset = frozenset()
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
    if name == "max_body_bytes" and value < 1024:
        raise ConfigError(f"{where} must be at least 1024 bytes, not {value}")
    if name == "max_connections" and value < 16:
        raise ConfigError(f"{where} must be at least 16, not {value}")
    if name == "max_inflight_bytes" and value < 1024 * 1024:
        raise ConfigError(f"{where} must be at least 1 MiB (1048576), not {value}")
    if name in ("retry_limit", "cancel_limit") and value < 0:
        raise ConfigError(f"{where} must be 0 (no limit) or a number per minute, not {value}")
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
    """{name: (value, variable)} from AUDITD_* variables; an unknown AUDITD_ name is an error."""
    known = set(Config.names())
    found, unknown = {}, []
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_ENV:
            continue
        name = variable[len(ENV_PREFIX):].lower()
        if name in known:
            found[name] = (value, variable)
        else:
            unknown.append(variable)
    if unknown:
        accepted = ", ".join(ENV_PREFIX + n.upper() for n in Config.names())
        raise ConfigError(f"unknown environment variable{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(sorted(unknown))}; accepted: {CONFIG_ENV}, {accepted}")
    return found


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

_SINK_KEYS = ("name", "url", "syslog", "namespaces", "states", "types", "batch_size", "headers",
              "start", "backoff_max", "facility")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _strings(value, where: str, allowed=None) -> frozenset:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a non-empty list of strings, not {value!r}")
    wrong = [v for v in value if allowed is not None and v not in allowed]
    if wrong:
        raise ConfigError(f"{where}: unknown {', '.join(map(repr, wrong))}; accepted: "
                          f"{', '.join(allowed)}")
    return frozenset(value)


def _address(value, where: str, schemes: tuple, expected: str):
    """A URL of one of `schemes` (http(s): any path; udp/tcp: host and port only), or unix:/path
    when "unix" is one of them; ConfigError saying what is `expected` otherwise."""
    if isinstance(value, str) and "unix" in schemes and value.startswith("unix:/"):
        return ("unix", value[5:])
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        port = parts.port if parts else None
    except ValueError:
        parts = None
    if not parts or parts.scheme not in schemes or not parts.hostname or (
            parts.scheme in ("udp", "tcp") and (not port or parts.path.strip("/") or parts.query)):
        raise ConfigError(f"{where} must be {expected}, not {value!r}")
    return value if parts.scheme.startswith("http") else (parts.scheme, parts.hostname, port)


def read_sink(table, where: str) -> ForwardSink:
    """One [[forward]] table as a ForwardSink; ConfigError naming `where` and the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, not {table!r}")
    unknown = sorted(set(table) - set(_SINK_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; accepted: {', '.join(_SINK_KEYS)}")
    if ("url" in table) == ("syslog" in table):
        raise ConfigError(f"{where} needs exactly one of url (HTTP POST) or syslog "
                          "(unix:/dev/log, udp://host:port, tcp://host:port)")
    got = {}
    if "url" in table:
        got["url"] = _address(table["url"], f"{where}, key 'url'", ("http", "https"),
                              "an http:// or https:// URL to POST to")
    else:
        got["syslog"] = _address(table["syslog"], f"{where}, key 'syslog'",
                                 ("unix", "udp", "tcp"), "unix:/dev/log (a local socket), "
                                 "udp://host:port or tcp://host:port")
    for key, allowed in (("namespaces", None), ("states", STATES), ("types", EVENT_TYPES)):
        if key in table:
            got[key] = _strings(table[key], f"{where}, key '{key}'", allowed)
    for key, lo, hi, kinds in (("batch_size", 1, 10_000, (int,)),
                               ("backoff_max", 0.1, 3600, (int, float))):
        if key in table:
            if type(table[key]) not in kinds or not lo <= table[key] <= hi:
                raise ConfigError(f"{where}, key '{key}' must be a number from {lo} to {hi}, "
                                  f"not {table[key]!r}")
            got[key] = kinds[-1](table[key])
    for key, allowed in (("start", ("now", "beginning")), ("facility", SYSLOG_FACILITIES)):
        if key in table:
            if table[key] not in allowed or (key == "facility" and "syslog" not in table):
                raise ConfigError(f"{where}, key '{key}' must be one of {', '.join(allowed)}"
                                  + (" (for a syslog sink)" if key == "facility" else "")
                                  + f", not {table[key]!r}")
            got[key] = table[key]
    if "headers" in table:
        headers = table["headers"]
        if "url" not in table or not isinstance(headers, dict):
            raise ConfigError(f"{where}, key 'headers' is a table of HTTP headers for a url "
                              "sink, such as headers = { Authorization = \"Bearer ...\" }")
        for key, value in headers.items():   # the values are secrets: never in a message
            if not _HEADER_NAME.match(key) or not isinstance(value, str) \
                    or "\r" in value or "\n" in value:
                raise ConfigError(f"{where}, key 'headers': {key!r} needs a header name and a "
                                  "string value on one line")
        got["headers"] = tuple(headers.items())
    name = table.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}, key 'name' must be a non-empty string, not {name!r}")
    return ForwardSink(name=name or ForwardSink(name="", **got).target, **got)


def read_sinks(tables, path: str) -> list[ForwardSink]:
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: forward must be [[forward]] tables, one per sink")
    sinks = [read_sink(t, f"{path}: [[forward]] #{i}") for i, t in enumerate(tables, 1)]
    names = [s.name for s in sinks]
    for i, name in enumerate(names, 1):
        if names.index(name) != i - 1:
            raise ConfigError(f"{path}: [[forward]] #{i}, key 'name': {name!r} is the name of "
                              f"[[forward]] #{names.index(name) + 1} too; give each sink its "
                              "own name (its delivery position is stored under it)")
    return sinks


# ---------------------------------------------------------------------------- showing it

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
