"""The `auditd` command line: one module per command group, each adding its subcommands with
`register_commands(commands)`.

- `serve`: serve, config show. `accounts`: user, org. `data`: export, import, purge, backup,
  check. `verify`: the tamper-evident log. `forward`: forward status. `migrate`: migrate (one database to another). `run`: run a command as an audited
  action, and `action`: ls, inspect, logs, cancel, retry (both clients of the API, through
  `auditd.client`).
"""
import argparse

from .. import __version__
from ..model.errors import AuditdError
from . import accounts, action, data, forward, migrate, run, serve, verify
from .common import say


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditd", description="The Docker Cloud Audit API (Actions) as one local daemon.")
    parser.add_argument("--version", action="version", version=f"auditd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (serve, accounts, data, verify, forward, migrate, run, action):
        module.register_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AuditdError as err:
        say(f"auditd: {err.message}")
        return 1
    except KeyboardInterrupt:
        return 130
