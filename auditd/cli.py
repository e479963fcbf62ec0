"""The `auditd` command line."""
import argparse
import asyncio
import sys

from . import __version__
from .config import Config
from .errors import AuditdError
from .store import ROLES, Store


def _say(message: str):
    print(message, file=sys.stderr)


def _add_db(parser):
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database file (default: $STATE_DIRECTORY/auditd.db under "
                             "systemd, else ./auditd.db)")


def _config(args) -> Config:
    config = Config()
    for name in Config.names():
        value = getattr(args, name, None)
        if value is not None:
            setattr(config, name, value)
    return config


async def _with_store(args, fn):
    async with Store(_config(args).db) as store:
        return await fn(store)


# ---------------------------------------------------------------------------- commands

def cmd_serve(args) -> int:
    from .server import serve, setup_logging
    config = _config(args)
    setup_logging(config.log_level)
    return asyncio.run(serve(config))


def cmd_user(args) -> int:
    async def run(store):
        if args.user_command == "add":
            print(await store.add_user(args.name, args.role))
            _say(f"created user '{args.name}' (role {args.role}); the key above is shown only once")
        elif args.user_command == "rotate-key":
            print(await store.rotate_key(args.name))
            _say(f"new key for '{args.name}'; the old one no longer works")
        elif args.user_command == "remove":
            await store.remove_user(args.name)
            _say(f"removed user '{args.name}'")
        else:
            for user in await store.list_users():
                orgs = ",".join(user["orgs"]) or "-"
                print(f"{user['name']}\t{user['role']}\t{orgs}")
    return asyncio.run(_with_store(args, run)) or 0


def cmd_org(args) -> int:
    async def run(store):
        if args.org_command == "add":
            await store.add_org(args.org)
            _say(f"created organization '{args.org}'")
        elif args.org_command == "add-member":
            await store.add_member(args.org, args.user)
            _say(f"'{args.user}' is now a member of '{args.org}'")
        elif args.org_command == "remove-member":
            await store.remove_member(args.org, args.user)
            _say(f"'{args.user}' is no longer a member of '{args.org}'")
        else:
            for org in await store.list_orgs():
                print(f"{org['name']}\t{','.join(org['members']) or '-'}")
    return asyncio.run(_with_store(args, run)) or 0


# ---------------------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditd", description="The Docker Cloud Audit API (Actions) as one local daemon.")
    parser.add_argument("--version", action="version", version=f"auditd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the API server",
                                description="Run the API server. On an empty database it creates "
                                            "the user 'admin' and prints its key once.")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    _add_db(serve)
    serve.add_argument("--synchronous", choices=("FULL", "NORMAL", "OFF"),
                       help="SQLite synchronous mode (default FULL: every acknowledged write "
                            "survives a power cut)")
    serve.add_argument("--no-group-commit", dest="group_commit", action="store_const",
                       const=False, help="commit each write alone (for comparison)")
    serve.add_argument("--geoip-db", dest="geoip_db", metavar="PATH",
                       help="MaxMind City database file used to fill `location`")
    serve.add_argument("--log-level", dest="log_level",
                       choices=("debug", "info", "warning", "error"))
    serve.set_defaults(func=cmd_serve)

    user = commands.add_parser("user", help="manage users and their API keys",
                               description="Manage users. Keys are printed once, alone on "
                                           "stdout; messages go to stderr.")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_commands.add_parser("add", help="create a user and print its API key")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="user",
                     help="user: reads, cancels, retries its namespaces' actions; producer: "
                          "records actions and logs, reads everything; admin: everything")
    _add_db(add)
    for name, text in (("remove", "delete a user"), ("rotate-key", "replace a user's API key")):
        sub = user_commands.add_parser(name, help=text)
        sub.add_argument("name")
        _add_db(sub)
    _add_db(user_commands.add_parser("list", help="list users: name, role, organizations"))
    user.set_defaults(func=cmd_user)

    org = commands.add_parser("org", help="manage organizations (shared namespaces)")
    org_commands = org.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    sub = org_commands.add_parser("add", help="create an organization")
    sub.add_argument("org")
    _add_db(sub)
    for name, text in (("add-member", "let a user see the organization's actions"),
                       ("remove-member", "stop a user seeing the organization's actions")):
        sub = org_commands.add_parser(name, help=text)
        sub.add_argument("org")
        sub.add_argument("user")
        _add_db(sub)
    _add_db(org_commands.add_parser("list", help="list organizations and their members"))
    org.set_defaults(func=cmd_org)

    from . import data, demo
    data.register_commands(commands)
    demo.register_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AuditdError as err:
        _say(f"auditd: {err.message}")
        return 1
    except KeyboardInterrupt:
        return 130
