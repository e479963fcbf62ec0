# PYTHON_ARGCOMPLETE_OK (shell completion: see _complete)
"""The `auditd` command line: one module per command group, each adding its subcommands with
`register_commands(commands)`.

- `serve`: serve, config show. `accounts`: user, org. `data`: export, import, purge, backup,
  check. `verify`: the tamper-evident log. `forward`: forward status. `migrate`: migrate (one database to another). `run`: run a command as an audited
  action, and `action`: ls, inspect, logs, cancel, retry (both clients of the API, through
  `auditd.client`).
"""
import argparse
import os
import sqlite3
import sys

from .. import __version__
from ..config import unknown_environment
from ..model.errors import AuditdError
from . import accounts, action, data, forward, migrate, run, serve, verify
from .common import database_problem, say, show_migrations


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditd", description="The Docker Cloud Audit API (Actions) as one local daemon.")
    parser.add_argument("--version", action="version", version=f"auditd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, accounts, data, verify, forward, migrate, run, action):
        module.register_commands(commands)
    return parser


def _complete(parser):
    """Answer the shell's completion request, when it is one (`_ARGCOMPLETE` is set), with
    argcomplete, an optional dependency: pip install 'auditd[completion]', then
    `eval "$(register-python-argcomplete auditd)"` in bash or zsh."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)   # prints the completions and exits


def main(argv=None) -> int:
    parser = build_parser()
    _complete(parser)
    args = parser.parse_args(argv)
    warning = unknown_environment()
    if warning and args.command not in ("action", "run"):   # those two read no settings
        say(f"auditd: warning: {warning}")
    if args.command != "serve":
        show_migrations()
    try:
        return args.func(args)
    except AuditdError as err:
        say(f"auditd: {err.message}")
        return 1
    except sqlite3.Error as err:   # opening or reading the database: say what it means
        say(f"auditd: {database_problem(err, _db_of(args))}")
        return 1
    except BrokenPipeError:   # `auditd user list | head -1`: the reader has all it wanted
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return 130


def _db_of(args) -> str | None:
    try:
        from .common import config_from_args
        return config_from_args(args).db
    except AuditdError:
        return getattr(args, "db", None)


def _quiet_stdout():
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
