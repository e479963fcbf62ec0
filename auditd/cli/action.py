"""`auditd action ls | inspect | logs | cancel | retry`: docker-cloud's action commands under
Python 3, on the AsyncClient.

They read the server and credentials as docker-cloud does (DOCKERCLOUD_REST_HOST,
DOCKERCLOUD_STREAM_HOST, DOCKERCLOUD_USER, DOCKERCLOUD_APIKEY), overridden by --url, --user and
--key, and take short ids. Exit codes: 0 done, 1 the server refused or could not be reached (its
message on stderr), 2 a usage mistake, 130 interrupted.
"""
import argparse
import asyncio
import json
import os
import sys

from ..client.aio import ApiError, AsyncClient

PROG = "auditd action"
LIST_FILTERS = ("uuid", "uuid__startswith", "state", "start_date__gte", "start_date__lte",
                "end_date__gte", "end_date__lte", "object", "include_related", "action", "user",
                "is_user_action", "order_by")


class Usage(Exception):
    """A mistake in how the command was called: exit 2."""


def _say(message: str):
    print(f"auditd: {message}", file=sys.stderr)


def _out(text: str):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _client(args) -> AsyncClient:
    try:
        return AsyncClient(args.url, args.auth_user, args.key)
    except ValueError as err:
        raise Usage(str(err)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, not {text!r}")
    return int(text)


def _tail(text: str):
    if text.lower() == "all":
        return "all"
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of lines or 'all', not {text!r}")
    return int(text)


def _identifier(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an action id cannot be empty")
    return text


def _filter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in LIST_FILTERS:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME one of {', '.join(LIST_FILTERS)}, not {text!r}")
    return name, value


# ---------------------------------------------------------------------------- the commands

async def _ls(api: AsyncClient, args) -> int:
    from ..client.table import action_table
    filters = dict(args.filter or ())
    for name, value in (("state", args.state), ("user", args.by), ("action", args.action),
                        ("object", args.object), ("start_date__gte", args.since),
                        ("start_date__lte", args.until),
                        ("include_related", True if args.include_related else None)):
        if value is not None:
            if name in filters:
                raise Usage(f"the filter {name} is given twice")
            filters[name] = value
    found = []
    async for action in api.actions(limit=min(args.last, 1000), **filters):
        found.append(action)
        if len(found) >= args.last:
            break
    if args.json:
        _out(json.dumps(found, indent=2))
    elif args.quiet:
        for action in found:
            _out(action["uuid"])
    else:
        _out(action_table(found))
    return 0


async def _each(api: AsyncClient, args, fn) -> int:
    """Run `fn(uuid)` for each identifier; an error on one is reported and the others still
    run (as docker-cloud does); exit 1 when any failed."""
    failed = False
    for identifier in args.identifier:
        try:
            await fn(await api.resolve(identifier))
        except ApiError as err:
            _say(err.message)
            failed = True
    return 1 if failed else 0


async def _inspect(api: AsyncClient, args) -> int:
    async def show(uuid):
        _out(json.dumps(await api.get(uuid), indent=2))
    return await _each(api, args, show)


async def _logs(api: AsyncClient, args) -> int:
    async def show(uuid):
        async for message in api.follow_logs(uuid, tail=args.tail, follow=args.follow):
            if message.get("type") == "log":
                _out(message.get("log", ""))
    return await _each(api, args, show)


async def _cancel(api: AsyncClient, args) -> int:
    async def cancel(uuid):
        action = await api.cancel(uuid)
        _out(json.dumps(action, indent=2) if args.json else f"{action['uuid']}\t{action['state']}")
    return await _each(api, args, cancel)


async def _retry(api: AsyncClient, args) -> int:
    async def retry(uuid):
        action = await api.retry(uuid)
        _out(json.dumps(action, indent=2) if args.json else action["uuid"])
    return await _each(api, args, retry)


def cmd_action(args) -> int:
    async def run():
        async with _client(args) as api:
            return await args.action_func(api, args)
    try:
        return asyncio.run(run())
    except Usage as err:
        _say(str(err))
        return 2
    except ApiError as err:
        _say(err.message)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`auditd action ls | head -1`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# ---------------------------------------------------------------------------- the parser

def _connection_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("server and credentials")
    group.add_argument("--url", help="the server (default: $DOCKERCLOUD_REST_HOST, else "
                                     "http://127.0.0.1:8080)")
    group.add_argument("--user", dest="auth_user", metavar="NAME",
                       help="whose API key (default: $DOCKERCLOUD_USER)")
    group.add_argument("--key", help="the API key (default: $DOCKERCLOUD_APIKEY)")
    return flags


def register_commands(subparsers):
    """Add `action` and its subcommands to the `auditd` parser's subcommands."""
    conn = _connection_flags()
    action = subparsers.add_parser(
        "action", help="list, inspect, follow, cancel and retry actions on a running server",
        description="docker-cloud's action commands under Python 3. Server and credentials come "
                    "from DOCKERCLOUD_REST_HOST, DOCKERCLOUD_USER and DOCKERCLOUD_APIKEY (as for "
                    "docker-cloud) or --url, --user and --key. Ids may be short: any prefix "
                    "that only one action's uuid starts with.")
    commands = action.add_subparsers(dest="action_command", metavar="COMMAND", required=True)

    ls = commands.add_parser("ls", parents=[conn], help="list actions, newest first",
                             description="List actions, newest first, as docker-cloud's table.")
    ls.add_argument("-q", "--quiet", action="store_true", help="print only the full uuids")
    ls.add_argument("--json", action="store_true", help="print the actions as a JSON array")
    ls.add_argument("-l", "--last", type=_positive, default=25, metavar="N",
                    help="the last N actions (default 25)")
    ls.add_argument("--state", help="only actions in this state (Pending, In progress, ...)")
    ls.add_argument("--by", metavar="USER", help="only actions performed by this user")
    ls.add_argument("--action", metavar="NAME", help="only this operation, e.g. 'Service Create'")
    ls.add_argument("--object", metavar="URI", help="only actions on this resource URI")
    ls.add_argument("--include-related", action="store_true",
                    help="with --object: also the actions of its related objects")
    ls.add_argument("--since", metavar="DATE",
                    help="started at or after DATE (ISO 8601, RFC 2822 or Unix seconds)")
    ls.add_argument("--until", metavar="DATE", help="started at or before DATE")
    ls.add_argument("--filter", action="append", type=_filter, metavar="NAME=VALUE",
                    help="any list filter of the API, e.g. end_date__gte=2026-01-01 "
                         "(repeatable)")
    ls.set_defaults(action_func=_ls)

    inspect = commands.add_parser("inspect", parents=[conn], help="print actions as JSON")
    logs = commands.add_parser("logs", parents=[conn], help="print an action's log lines",
                               description="Print an action's log lines; with -f, keep "
                                           "printing new ones until the action ends.")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="follow until the action ends")
    logs.add_argument("-t", "--tail", type=_tail, metavar="N",
                      help="the last N lines only (default 300; 'all' for every line)")
    cancel = commands.add_parser("cancel", parents=[conn],
                                 help="cancel Pending or In progress actions; prints uuid and "
                                      "new state")
    retry = commands.add_parser("retry", parents=[conn],
                                help="retry Success, Failed or Canceled actions; prints the new "
                                     "action's uuid")
    for sub, func in ((inspect, _inspect), (logs, _logs), (cancel, _cancel), (retry, _retry)):
        sub.add_argument("identifier", nargs="+", metavar="ID", type=_identifier,
                         help="the action's uuid, or a prefix of it")
        if sub in (cancel, retry):
            sub.add_argument("--json", action="store_true", help="print the whole action")
        sub.set_defaults(action_func=func)
    action.set_defaults(func=cmd_action)
