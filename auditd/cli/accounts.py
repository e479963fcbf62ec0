"""`auditd user ...` and `auditd org ...`: users, their API keys, organizations."""
import asyncio

from ..model.access import ROLES, check_name
from ..store import open_store
from .common import add_db_options, database_config, say

FIRST_USER_NOTE = (
    "note: this database had no users. 'auditd serve' creates the admin 'admin' only on a "
    "database without users, so it will not now: add an admin yourself ('auditd user add NAME "
    "--role admin'), or start 'auditd serve --admin-key KEY', which creates 'admin' with that key")


async def _with_store(args, fn, names=()):
    """Check the names first (a refused name creates nothing), then open an existing database,
    or a new one with --create."""
    for kind, name in names:
        check_name(name, kind)
    config = database_config(args, must_exist=not getattr(args, "create", False))
    async with open_store(config) as store:
        return await fn(store)


def cmd_user(args) -> int:
    async def run(store):
        if args.user_command == "add":
            first = await store.count_users() == 0
            print(await store.add_user(args.name, args.role), flush=True)
            say(f"created user '{args.name}' (role {args.role}); the key above is shown only once")
            if first and args.role != "admin":
                say(FIRST_USER_NOTE)
        elif args.user_command == "rotate-key":
            print(await store.rotate_key(args.name))
            say(f"new key for '{args.name}'; the old one no longer works")
        elif args.user_command == "remove":
            await store.remove_user(args.name)
            say(f"removed user '{args.name}'")
        else:
            print("NAME\tROLE\tORGANIZATIONS")
            for user in await store.list_users():
                orgs = ",".join(user["orgs"]) or "-"
                print(f"{user['name']}\t{user['role']}\t{orgs}")
    names = [("user", args.name)] if args.user_command == "add" else []
    return asyncio.run(_with_store(args, run, names)) or 0


def cmd_org(args) -> int:
    async def run(store):
        if args.org_command == "add":
            await store.add_org(args.org)
            say(f"created organization '{args.org}'")
        elif args.org_command == "add-member":
            await store.add_member(args.org, args.user)
            say(f"'{args.user}' is now a member of '{args.org}'")
        elif args.org_command == "remove-member":
            await store.remove_member(args.org, args.user)
            say(f"'{args.user}' is no longer a member of '{args.org}'")
        else:
            print("ORGANIZATION\tMEMBERS")
            for org in await store.list_orgs():
                print(f"{org['name']}\t{','.join(org['members']) or '-'}")
    names = [("organization", args.org)] if args.org_command == "add" else []
    return asyncio.run(_with_store(args, run, names)) or 0


def _add_create(parser):
    parser.add_argument("--create", action="store_true",
                        help="create the database if there is none at --db (without it, a "
                             "missing database is an error: a mistyped path creates nothing)")


def register_commands(commands):
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
    _add_create(add)
    for name, text in (("remove", "delete a user"), ("rotate-key", "replace a user's API key")):
        sub = user_commands.add_parser(name, help=text)
        sub.add_argument("name")
        add_db_options(sub)
    add_db_options(user_commands.add_parser(
        "list", help="list users: name, role, organizations (a header line first)"))
    user.set_defaults(func=cmd_user)

    org = commands.add_parser("org", help="manage organizations (shared namespaces)")
    org_commands = org.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    sub = org_commands.add_parser("add", help="create an organization")
    sub.add_argument("org")
    add_db_options(sub)
    _add_create(sub)
    for name, text in (("add-member", "let a user see the organization's actions"),
                       ("remove-member", "stop a user seeing the organization's actions")):
        sub = org_commands.add_parser(name, help=text)
        sub.add_argument("org")
        sub.add_argument("user")
        add_db_options(sub)
    add_db_options(org_commands.add_parser(
        "list", help="list organizations and their members (a header line first)"))
    org.set_defaults(func=cmd_org)
