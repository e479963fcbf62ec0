"""`auditd migrate --from DB --to DB`: move everything from one database to another, typically
from an SQLite file to PostgreSQL. Users keep their keys (hashes move), organizations and
memberships move, and every action moves with its state, dates, flags, log lines and object graph
edges. Actions already in the target are skipped and log lines are keyed by (action, seq), so a
migration that stopped can be run again and completes what is missing."""
import asyncio

from ..formats.ndjson import BatchWriter
from ..model.errors import AuditdError
from ..store import backend_for, open_store
from .common import analyze, config_from_args, say
from .progress import Progress

BATCH_ACTIONS = 500           # one target transaction per batch of actions ...
BATCH_LINES = 5000            # ... or of log lines, whichever comes first
RECORD_KEYS = ("uuid", "namespace", "state", "action", "method", "path", "object", "user",
               "user_agent", "ip", "location", "body", "start_ts", "end_ts", "is_user_action",
               "cancelable", "retriable")


def _item(kind: str, number: int, action: dict, rest: list) -> tuple:
    """An export item of the source as an import item of the target."""
    if kind == "action":
        edges, logs = rest
        return "action", number, {k: action[k] for k in RECORD_KEYS}, edges, list(logs)
    return "logs", number, action["uuid"], list(rest[0])


async def migrate(source, target, progress=None) -> dict:
    """Copy accounts, then actions oldest first in batches (the next batch is read while one is
    written). Returns the counts and the errors [(action uuid, error)]."""
    accounts = await target.import_accounts(await source.export_accounts())
    summary = {"accounts": accounts, "imported": 0, "skipped": 0, "lines": 0, "errors": []}
    uuids = {}

    def results(batch_results):
        for number, outcome, added, error in batch_results:
            summary["lines"] += added
            if outcome in ("imported", "skipped"):
                summary[outcome] += 1
            elif outcome == "error":
                summary["errors"].append((uuids.get(number), error))
        if progress is not None:
            progress.update(summary["imported"] + summary["skipped"],
                            f"{summary['lines']:,} log lines")

    writer = BatchWriter(target, results, BATCH_ACTIONS, BATCH_LINES)
    try:
        async for kind, action, *rest in source.export_actions({}):
            uuids[len(uuids)] = action["uuid"]
            await writer.add(_item(kind, len(uuids) - 1, action, rest))
        await writer.finish()
    finally:
        await writer.abandon()
    return summary


def cmd_migrate(args) -> int:
    source_config = config_from_args(args)
    source_config.db = args.source
    target_config = config_from_args(args)
    target_config.db = args.target
    source_backend = backend_for(args.source)
    if not source_backend.exists(args.source):
        raise AuditdError(f"no auditd database at {args.source}: --from names the database to "
                          "copy (an SQLite file 'auditd serve' used)")
    say(f"migrating {source_backend.describe(args.source)} to "
        f"{backend_for(args.target).describe(args.target)} ...")

    async def run():
        async with open_store(source_config) as source, open_store(target_config) as target:
            progress = Progress("migrating", await source.count_actions({}), "actions")
            summary = await migrate(source, target, progress)
            progress.finish(summary["imported"] + summary["skipped"],
                            f"{summary['lines']:,} log lines")
            await analyze(target)
            summary["source"] = await source.count_actions({})
            summary["target"] = await target.count_actions({})
            return summary

    summary = asyncio.run(run())
    accounts = summary["accounts"]
    say(f"migrated {accounts['users']:,} users, {accounts['orgs']:,} organizations, "
        f"{accounts['memberships']:,} memberships; {summary['imported']:,} actions and "
        f"{summary['lines']:,} log lines; skipped {summary['skipped']:,} actions already there; "
        f"{len(summary['errors']):,} errors")
    for uuid, error in summary["errors"][:20]:
        say(f"  action {uuid}: {error}")
    if summary["errors"] or summary["target"] < summary["source"]:
        say(f"the target holds {summary['target']:,} of the source's {summary['source']:,} "
            "actions: fix what the errors say and run the same migration again")
        return 1
    return 0


def register_commands(commands):
    """migrate."""
    cmd = commands.add_parser(
        "migrate", help="copy everything from one database to another (SQLite to PostgreSQL)",
        description="Copy users (with their key hashes: keys keep working), organizations, "
                    "memberships, and every action with its log lines and object graph from "
                    "--from to --to, e.g. --from /var/lib/auditd/auditd.db --to "
                    "postgresql://auditd@dbhost/auditd. Stop the servers writing to --from "
                    "first. What the target has already is skipped, so running it again "
                    "completes a migration that stopped.")
    cmd.add_argument("--from", dest="source", required=True, metavar="DB",
                     help="the database to copy: an SQLite file (or a PostgreSQL URL)")
    cmd.add_argument("--to", dest="target", required=True, metavar="DB",
                     help="the database to fill: postgresql://[user@]host[:port]/dbname (or an "
                          "SQLite file); created or migrated to this auditd's schema")
    cmd.add_argument("--config", dest="config_file", metavar="PATH",
                     help="TOML configuration file (for settings other than the databases)")
    cmd.set_defaults(func=cmd_migrate)
