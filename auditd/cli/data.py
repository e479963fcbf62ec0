"""The data lifecycle commands: export, import, purge, backup and check."""
import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from ..formats import ndjson
from ..model import dates
from ..model.actions import STATES
from ..model.errors import AuditdError
from ..store import backend_for, open_store
from ..tasks.checkpoints import Checkpointer
from .common import add_db_options, analyze, database_config, date_arg, say
from .progress import Progress


def cmd_export(args) -> int:
    config = database_config(args)
    if args.proofs and args.format != "ndjson":
        raise AuditdError("--proofs needs --format ndjson: CSV has no room for proofs")
    filters = {"states": args.state, "namespaces": args.namespace,
               "since": args.since, "until": args.until}
    target = Path(args.output) if args.output and args.output != "-" else None
    partial = target.with_name(target.name + ".partial") if target else None
    if target is not None:
        _check_output(target, "-o")

    async def run(out):
        async with open_store(config) as store:
            total = await store.count_actions(filters)
            # No bar over the actions themselves when they go to the same terminal.
            progress = None if out.isatty() else Progress("exporting", total, "actions")
            checkpoint = None
            if args.proofs:
                checkpoint = await Checkpointer(store, config.db, 60).sign()
            count = await ndjson.export(store, filters, out, args.format, progress,
                                        checkpoint=checkpoint)
            if progress is not None:
                progress.finish(count)
            return count

    try:
        if target is None:
            count = asyncio.run(run(sys.stdout))
            sys.stdout.flush()
        else:
            try:
                out = open(partial, "w", encoding="utf-8", newline="")
            except OSError as err:
                raise AuditdError(f"cannot write {target}: {err.strerror}; choose a path in "
                                  "a folder you can write to") from None
            with out:
                count = asyncio.run(run(out))
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
    except BrokenPipeError:   # `auditd export | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if partial is not None:
            partial.unlink(missing_ok=True)
    say(f"exported {count:,} actions as {args.format}"
         + (f" to {target}" if target else ""))
    return 0



def _check_output(target: Path, option: str):
    """A file to write must be in a folder that exists, and not be a folder itself."""
    if target.is_dir():
        raise AuditdError(f"{option} {target} is a folder: give a file's path, e.g. "
                          f"{target / 'auditd-export.ndjson'}")
    if not target.parent.is_dir():
        raise AuditdError(f"cannot write {target}: the folder {target.parent} does not exist; "
                          f"create it first (mkdir -p {target.parent}) or choose another path")


def cmd_import(args) -> int:
    config = database_config(args, must_exist=not args.create)

    async def run(stream, size):
        async with open_store(config) as store:
            progress = Progress("importing", size, "bytes")
            summary = await ndjson.import_file(store, stream, size, progress)
            await analyze(store)
            return summary

    if args.file == "-":
        summary = asyncio.run(run(sys.stdin.buffer, None))
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as err:
            raise AuditdError(f"cannot read {args.file}: {err.strerror}; give the path of a "
                              "file written by 'auditd export'") from None
        with stream:
            summary = asyncio.run(run(stream, os.fstat(stream.fileno()).st_size or None))
    say(summary.text())
    return 1 if summary.errors else 0



async def purge_before(store, cut: int, progress=None) -> tuple[int, int]:
    def report(actions, lines):
        if progress is not None:
            progress.update(actions, f"{lines:,} log lines")
    return await store.purge(cut, on_progress=report)


def cmd_purge(args) -> int:
    config = database_config(args)
    when = dates.format_iso(args.before)

    async def run(store):
        actions, lines = await store.count_purgeable(args.before)
        if args.dry_run:
            say(f"would remove {actions:,} final actions ended before {when} "
                 f"and their {lines:,} log lines (nothing removed: --dry-run)")
            return 0
        progress = Progress("purging", actions, "actions")
        removed, removed_lines = await purge_before(store, args.before, progress)
        progress.finish(removed, f"{removed_lines:,} log lines")
        say(f"removed {removed:,} final actions (Success, Failed, Canceled) ended before {when} "
             f"and their {removed_lines:,} log lines")
        return 0

    async def main():
        async with open_store(config) as store:
            return await run(store)
    return asyncio.run(main())



def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 1e5 else f"{nbytes:,} bytes"


def cmd_backup(args) -> int:
    path = database_config(args).db
    target = Path(args.path)
    backend = backend_for(path)
    if not Path(path).is_file():   # a database server: its backend says how to back it up
        backend.backup(path, str(target))
    if target.is_dir():
        raise AuditdError(f"{target} is a directory: give the backup file's path, "
                          f"e.g. {target / 'auditd-backup.db'}")
    if not target.parent.is_dir():
        raise AuditdError(f"the folder {target.parent} does not exist: create it first (mkdir -p "
                          f"{target.parent}) or give the backup another path; nothing was "
                          "written")
    if target.exists() and not args.force:
        raise AuditdError(f"{target} already exists: choose another path, or add --force to "
                          "replace it")
    if target.resolve() == Path(path).resolve():
        raise AuditdError("the backup path is the database itself: choose another path")
    say(f"backing up {path} ({_size(Path(path).stat().st_size)}) to {target} ...")
    try:
        summary = backend.backup(path, str(target))
    except sqlite3.Error as err:
        if "unable to open" in str(err) or "readonly" in str(err):   # the target's side
            raise AuditdError(f"backup failed: cannot write {target} ({err}): check that you may "
                              "write to its folder; nothing was written") from None
        raise AuditdError(f"backup failed: {err}; nothing was written to {target}. "
                          f"Run 'auditd check --db {path}' to look at the database") from None
    except OSError as err:
        raise AuditdError(f"backup failed: {err}; nothing was written to {target}: "
                          "check the directory exists and has space") from None
    counts = summary["counts"]
    print(f"wrote {target}: {_size(target.stat().st_size)}, schema version "
          f"{summary['schema_version']}, {counts['actions']:,} actions, "
          f"{counts['action_logs']:,} log lines, {counts['users']:,} users")
    return 0


def cmd_check(args) -> int:
    path = database_config(args).db
    backend = backend_for(path)
    try:
        report = backend.check(path, say=lambda step: say(f"checking {step}..."))
    except sqlite3.Error as err:
        report = {"problems": [f"the database cannot be read: {err}"], "schema_version": None,
                  "counts": {}, "states": {}}
    print(f"database: {backend.describe(path)}"
          + (f" ({_size(Path(path).stat().st_size)})" if Path(path).is_file() else ""))
    print(f"schema version: {report['schema_version']} (this auditd: {backend.SCHEMA_VERSION})")
    counts = report["counts"]
    if counts.get("actions") is not None:
        states = ", ".join(f"{n:,} {s}" for s, n in report["states"].items() if n)
        print(f"actions: {counts['actions']:,}" + (f" ({states})" if states else ""))
        print(f"log lines: {counts['action_logs']:,}")
        print(f"users: {counts['users']:,}, organizations: {counts['orgs']:,}, "
              f"objects: {counts['objects']:,}")
    if not report["problems"]:
        print("ok: integrity, foreign keys, counts, tallies and filing check out")
        return 0
    for problem in report["problems"]:
        print(f"problem: {problem}")
    version = report["schema_version"]
    if version is not None and version > backend.SCHEMA_VERSION:
        print(f"the database was written by a newer auditd (schema version {version}; this one "
              f"knows up to {backend.SCHEMA_VERSION}): it is not damaged, use that newer auditd "
              "to check or serve it")
        return 1
    if version == 0:
        print("this file is not an auditd database: is --db the file 'auditd serve' uses?")
        return 1
    print("the database is damaged: stop the server, restore the latest backup (README: Backup and "
          "restore), or save what is readable with 'auditd export' into a new database with "
          "'auditd import'")
    return 1



def register_commands(commands):
    """export, import, purge, backup and check."""

    export_cmd = commands.add_parser(
        "export", help="write actions and their log lines as NDJSON or CSV",
        description="Stream actions, oldest first, to stdout or a file. NDJSON carries everything "
                    "(log lines, namespace, object graph) and is what 'auditd import' reads; CSV "
                    "has one row per action. Dates: " + dates.ACCEPTED_FORMATS + ".")
    export_cmd.add_argument("--format", choices=("ndjson", "csv"), default="ndjson")
    export_cmd.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export_cmd.add_argument("--state", action="append", choices=STATES,
                            help="only actions in this state (repeat for several)")
    export_cmd.add_argument("--namespace", action="append", metavar="NAME",
                            help="only this namespace's actions (repeat for several)")
    export_cmd.add_argument("--since", type=date_arg, metavar="DATE",
                            help="only actions that started at or after DATE")
    export_cmd.add_argument("--until", type=date_arg, metavar="DATE",
                            help="only actions that started before DATE")
    export_cmd.add_argument("--proofs", action="store_true",
                            help="NDJSON with a signed checkpoint first and each action's "
                                 "inclusion proof, for 'python -m auditd.verify export FILE'")
    add_db_options(export_cmd)
    export_cmd.set_defaults(func=cmd_export)

    import_cmd = commands.add_parser(
        "import", help="load an export or a fixture file (actions already present are skipped)",
        description="Load a file written by 'auditd export' (NDJSON; '-' reads stdin) or a "
                    "fixture file (a JSON array or NDJSON of actions, as 'serve --fixtures' "
                    "reads). Actions are matched by uuid, so importing the same file twice adds "
                    "nothing (an item without uuid gets a new one each time). Works while the "
                    "server runs.")
    import_cmd.add_argument("file", metavar="FILE")
    add_db_options(import_cmd)
    import_cmd.add_argument("--create", action="store_true",
                            help="create the database if there is none at --db (without it, a "
                                 "missing database is an error: a mistyped path creates nothing)")
    import_cmd.set_defaults(func=cmd_import)

    purge_cmd = commands.add_parser(
        "purge", help="remove final actions that ended before a date, with their log lines",
        description="Remove Success, Failed and Canceled actions whose end date is before DATE, "
                    "with their log lines. Pending, In progress and Canceling actions are never "
                    "removed. Dates: " + dates.ACCEPTED_FORMATS + ".")
    purge_cmd.add_argument("--before", type=date_arg, required=True, metavar="DATE")
    purge_cmd.add_argument("--dry-run", action="store_true",
                           help="only count what would be removed")
    add_db_options(purge_cmd)
    purge_cmd.set_defaults(func=cmd_purge)

    backup_cmd = commands.add_parser(
        "backup", help="copy the database consistently, even while the server runs",
        description="Write a consistent copy of the database to PATH (SQLite online backup: "
                    "the server keeps serving). The copy is one self-contained file.")
    backup_cmd.add_argument("path", metavar="PATH")
    backup_cmd.add_argument("--force", action="store_true", help="replace PATH if it exists")
    add_db_options(backup_cmd)
    backup_cmd.set_defaults(func=cmd_backup)

    check_cmd = commands.add_parser(
        "check", help="check the database's integrity and show its schema version and counts",
        description="Run SQLite's integrity and foreign key checks, and count what auditd keeps "
                    "beside the actions (counts, tallies, include_related's filing, log line "
                    "numbers) again from the actions, in one snapshot (a server may go on "
                    "writing); each step is said on stderr. Exit 1 when anything is wrong.")
    add_db_options(check_cmd)
    check_cmd.set_defaults(func=cmd_check)
