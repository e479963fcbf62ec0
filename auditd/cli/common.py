"""What the commands share: the --db/--config options and every setting's flag, the effective
configuration, messages on stderr, and dates on the command line."""
import argparse
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from ..config import DEFAULT_CONFIG_FILE, Config, load_config
from ..model import dates
from ..model.errors import AuditdError
from ..store import backend_for


def say(message: str):
    """A message for the person at the terminal: stderr, so stdout stays data."""
    print(message, file=sys.stderr, flush=True)


def show_migrations():
    """Print what a schema migration does while a command waits for it (counting ten million
    actions again takes a minute): the store's `auditd.store.migrate` messages, on stderr.
    `serve` shows them through its own logging instead."""
    migrations = logging.getLogger("auditd.store.migrate")
    if migrations.handlers:
        return     # main() called again in one process (the tests)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("auditd: %(message)s"))
    migrations.addHandler(handler)
    migrations.setLevel(logging.INFO)


def date_arg(text: str) -> int:
    """An argparse type: a date in any accepted form (an age such as 30d too), as Unix
    seconds."""
    try:
        return dates.parse_date(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; accepted: {dates.ACCEPTED_FORMATS}") from None


MEMORY_DB = ":memory:"


def database_config(args, must_exist: bool = True) -> Config:
    """The configuration of the command, whose database must exist unless it may be created
    (`must_exist=False`: the command was given --create). A database is never created in a folder
    that does not exist: that is a mistyped path far more often than a wish."""
    config = config_from_args(args)
    db = config.db
    if db == MEMORY_DB:
        raise AuditdError(f"--db {MEMORY_DB} is a throwaway database that lives only inside its "
                          "'auditd serve'; give this command the path of a database file")
    backend = backend_for(db)
    try:
        if backend.exists(db):
            return config
    except PermissionError:
        raise AuditdError(f"cannot look at {db}: permission denied (uid {os.geteuid()}): run "
                          "the command as the user that owns the database") from None
    if must_exist:
        create = (" To start a new database there, add --create (or run 'auditd serve --db "
                  f"{db}' once)." if hasattr(args, "create") else "")
        raise AuditdError(f"no database at {db}{_where(args)}: check --db (it names the file "
                          f"'auditd serve' uses).{create}")
    check_folder(db)
    return config


def check_folder(db: str):
    """Refuse a database path whose folder does not exist (it is not created). A database
    server's URL (postgresql://...) has no folder."""
    if "://" in db:
        return
    folder = Path(db).parent
    if not folder.is_dir():
        raise AuditdError(f"the folder {folder} does not exist: check --db {db}, or create the "
                          f"folder first (mkdir -p {folder})")


def _where(args) -> str:
    return "" if getattr(args, "db", None) else " (the default, AUDITD_DB or the config file's db)"


def database_problem(err: sqlite3.Error, db: str | None) -> str:
    """What an SQLite error while opening or reading `db` means for the person at the terminal."""
    text = str(err)
    where = db or "the database"
    if "readonly" in text or "read-only" in text:
        return (f"{where} is read-only for this user (uid {os.geteuid()}): run the command as "
                "the user that owns the database (the service's user under systemd: README, "
                "Running under systemd), or give write access to the file and its folder "
                "(SQLite writes beside it even to read)")
    if "not a database" in text or "malformed" in text:
        return (f"{where} is not an auditd database SQLite can read ({text}): is --db the file "
                "'auditd serve' uses? 'auditd check --db PATH' tells more")
    if "unable to open" in text:
        return f"cannot open {where} ({text}): check the path and its folder's permissions"
    if "locked" in text or "busy" in text:
        return f"{where} is busy ({text}): another process holds it; retry shortly"
    return f"{where} could not be used ({text}): check the disk and the file"


def add_db_options(parser):
    """--db and --config, for every subcommand that opens the database."""
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database file (default: $STATE_DIRECTORY/auditd.db under "
                             "systemd, else ./auditd.db; also AUDITD_DB or `db` in the config "
                             f"file); `serve --db {MEMORY_DB}` is a throwaway database")
    _add_config_file(parser)


def _add_config_file(parser):
    parser.add_argument("--config", dest="config_file", metavar="PATH",
                        help="TOML configuration file (default: $AUDITD_CONFIG, else "
                             f"{DEFAULT_CONFIG_FILE} when it exists)")


def add_settings_flags(parser):
    """A flag for every setting; each overrides the config file and AUDITD_* variables."""
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on (default 8080)")
    add_db_options(parser)
    parser.add_argument("--synchronous", metavar="MODE",
                        help="SQLite synchronous mode: FULL (default: every acknowledged write "
                             "survives a power cut), NORMAL or OFF")
    parser.add_argument("--group-commit", action=argparse.BooleanOptionalAction,
                        help="commit concurrent writes together (default; --no-group-commit "
                             "commits each write alone, for comparison)")
    parser.add_argument("--writer-process", action=argparse.BooleanOptionalAction,
                        help="serve: run the SQLite writer in a process of its own, beside the "
                             "event loop (default; --no-writer-process runs it on the loop)")
    parser.add_argument("--list-cache-bytes", metavar="BYTES",
                        help="SQLite: memory for list pages answered again while nothing is "
                             "written (default 16 MiB; 0 reads every list)")
    parser.add_argument("--geoip-db", metavar="PATH",
                        help="MaxMind City database file used to fill `location`")
    parser.add_argument("--log-level", metavar="LEVEL",
                        help="debug, info (default), warning or error")
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                        help="log one line per request (default on)")
    parser.add_argument("--retention-days", metavar="DAYS",
                        help="remove finished actions older than this (default 0: keep forever)")
    parser.add_argument("--stream-stall-seconds", metavar="SECONDS",
                        help="close a WebSocket whose reader takes nothing for this long "
                             "(default 30)")
    parser.add_argument("--shutdown-timeout", metavar="SECONDS",
                        help="on SIGTERM, wait this long for requests in flight (default 10)")
    parser.add_argument("--max-body-bytes", metavar="BYTES",
                        help="largest request body accepted (default 8 MiB)")
    parser.add_argument("--max-connections", metavar="N",
                        help="open connections at most (default 4096, and always under the "
                             "open-file limit)")
    parser.add_argument("--head-timeout", metavar="SECONDS",
                        help="close a connection whose request head has not arrived within "
                             "this (default 10)")
    parser.add_argument("--idle-timeout", metavar="SECONDS",
                        help="close a kept-alive connection idle this long (default 60)")
    parser.add_argument("--max-inflight-bytes", metavar="BYTES",
                        help="request bodies being read at once, in bytes; past it, 503 with "
                             "Retry-After (default 64 MiB)")
    parser.add_argument("--retry-limit", metavar="N",
                        help="retries per user per minute; past it, 429 (default 30; 0: none)")
    parser.add_argument("--cancel-limit", metavar="N",
                        help="cancels per user per minute; past it, 429 (default 60; 0: none)")
    parser.add_argument("--check-on-start", action=argparse.BooleanOptionalAction,
                        help="run SQLite's quick_check on the database before serving")
    parser.add_argument("--transparency", action=argparse.BooleanOptionalAction,
                        help="keep every event in the tamper-evident log (default on; "
                             "--no-transparency only to measure what it costs)")
    parser.add_argument("--checkpoint-interval", metavar="SECONDS",
                        help="sign a checkpoint of the log this often when it grew (default 60)")
    parser.add_argument("--demo", action="store_const", const=True,
                        help="start with realistic demo data and a live simulated operation")
    parser.add_argument("--fixtures", metavar="FILE",
                        help="load this file at start into a database without actions: a JSON "
                             "array of actions or NDJSON, 'auditd export' output included")
    parser.add_argument("--admin-key", metavar="KEY",
                        help="create the first admin 'admin' with this key (16+ characters of "
                             "A-Z a-z 0-9 _ -) instead of a random one printed once; on a "
                             "database with an admin, only accepted if it is that admin's key "
                             "(also AUDITD_ADMIN_KEY or `admin_key` in the config file)")


def config_from_args(args) -> Config:
    """The effective configuration: defaults < config file < AUDITD_* < the flags in `args`."""
    flags = {name: getattr(args, name, None) for name in Config.names()}
    config, _ = load_config(flags, getattr(args, "config_file", None))
    return config


async def analyze(store):
    """After a bulk load: the store's planner statistics refreshed, saying so (minutes for ten
    million actions on PostgreSQL)."""
    if not store.PLANNER_STATISTICS:
        return
    say("refreshing the database's planner statistics and visibility map (VACUUM ANALYZE) ...")
    started = time.monotonic()
    await store.analyze()
    say(f"  done in {time.monotonic() - started:.1f} s")
