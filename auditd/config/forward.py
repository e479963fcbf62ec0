"""Forwarding sinks: the `[[forward]]` tables of the TOML file (README "Forwarding to a SIEM")."""
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..model.actions import STATES
from .errors import ConfigError


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
