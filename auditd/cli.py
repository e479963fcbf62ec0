"""The `auditd` command line."""
import argparse
import asyncio
import sys

from . import __version__
from .config import DEFAULT_CONFIG_FILE, Config, load_config, render_toml
from .errors import AuditdError
from .store import ROLES, Store


def _say(message: str):
    print(message, file=sys.stderr)


def add_db_options(parser):
    """--db and --config, for every subcommand that opens the database (public: data and demo
    subcommands use it too, with `config_from_args`)."""
    parser.add_argument("--db", metavar="PATH",
                        help="SQLite database file (default: $STATE_DIRECTORY/auditd.db under "
                             "systemd, else ./auditd.db; also AUDITD_DB or `db` in the config "
                             "file)")
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
    parser.add_argument("--demo", action="store_const", const=True,
                        help="start with realistic demo data and a live simulated operation")
    parser.add_argument("--fixtures", metavar="FILE", help="load this fixture file at start")


def config_from_args(args) -> Config:
    """The effective configuration: defaults < config file < AUDITD_* < the flags in `args`."""
    flags = {name: getattr(args, name, None) for name in Config.names()}
    config, _ = load_config(flags, getattr(args, "config_file", None))
    return config




async def _with_store(args, fn):
    async with Store(config_from_args(args).db) as store:
        return await fn(store)


# ---------------------------------------------------------------------------- commands

def cmd_serve(args) -> int:
    from .server import serve, setup_logging
    config = config_from_args(args)
    setup_logging(config.log_level)
    return asyncio.run(serve(config))


def cmd_config_show(args) -> int:
    flags = {name: getattr(args, name, None) for name in Config.names()}
    config, sources = load_config(flags, args.config_file)
    sys.stdout.write("# auditd's effective configuration; each value's source is in its comment\n")
    sys.stdout.write(render_toml(config, sources))
    return 0


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
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    config = commands.add_parser(
        "config", help="show the effective configuration",
        description="Settings come from defaults, a TOML file (--config, $AUDITD_CONFIG, else "
                    f"{DEFAULT_CONFIG_FILE}), AUDITD_<NAME> variables and flags, later ones "
                    "winning.")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION",
                                            required=True)
    show = config_commands.add_parser(
        "show", help="print the configuration `serve` would use, as TOML (no secrets)",
        description="Print the configuration `auditd serve` would use with the same flags, file "
                    "and environment, as TOML that --config accepts.")
    add_settings_flags(show)
    show.set_defaults(func=cmd_config_show)

    user = commands.add_parser("user", help="manage users and their API keys",
                               description="Manage users. Keys are printed once, alone on "
                                           "stdout; messages go to stderr.")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_commands.add_parser("add", help="create a user and print its API key")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="user",
                     help="user: reads, cancels, retries its namespaces' actions; producer: "
                          "records actions and logs, reads everything; admin: everything")
    add_db_options(add)
    for name, text in (("remove", "delete a user"), ("rotate-key", "replace a user's API key")):
        sub = user_commands.add_parser(name, help=text)
        sub.add_argument("name")
        add_db_options(sub)
    add_db_options(user_commands.add_parser("list", help="list users: name, role, organizations"))
    user.set_defaults(func=cmd_user)

    org = commands.add_parser("org", help="manage organizations (shared namespaces)")
    org_commands = org.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    sub = org_commands.add_parser("add", help="create an organization")
    sub.add_argument("org")
    add_db_options(sub)
    for name, text in (("add-member", "let a user see the organization's actions"),
                       ("remove-member", "stop a user seeing the organization's actions")):
        sub = org_commands.add_parser(name, help=text)
        sub.add_argument("org")
        sub.add_argument("user")
        add_db_options(sub)
    add_db_options(org_commands.add_parser("list", help="list organizations and their members"))
    org.set_defaults(func=cmd_org)

    from . import data, demo
    data.register_commands(commands)
    demo.register_commands(commands)
    from .client import cli as client_cli; client_cli.register_commands(commands)  # wiring: auditd action
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
