"""`auditd forward status`: each sink's position, lag, last success and last error, from the
database (so it works while the server runs, and after it stopped); and the [[forward]] tables
as `config show` prints them (headers hidden)."""
import asyncio
import json
import time

from ..config import _toml_value
from ..model.dates import format_iso
from ..store import open_store
from .common import add_db_options, database_config


def render_sinks(sinks) -> str:
    """The [[forward]] tables as TOML that --config accepts, without secrets: header values,
    and a url's password and query string, are left out."""
    lines = []
    for sink in sinks:
        lines += ["", "[[forward]]", f"name = {_toml_value(sink.name)}"]
        if sink.url:
            lines.append(f"url = {_toml_value(sink.target)}"
                         + ("" if sink.target == sink.url else
                            "  # its password or query string hidden"))
        else:
            lines.append(f"syslog = {_toml_value(sink.target.split(' ', 1)[1])}")
            lines.append(f"facility = {_toml_value(sink.facility)}")
        for key in ("namespaces", "states", "types"):
            if getattr(sink, key) is not None:
                items = ", ".join(_toml_value(v) for v in sorted(getattr(sink, key)))
                lines.append(f"{key} = [{items}]")
        lines += [f"batch_size = {sink.batch_size}", f"start = {_toml_value(sink.start)}",
                  f"backoff_max = {sink.backoff_max!r}"]
        if sink.headers:
            lines.append(f"# headers: {', '.join(k for k, _ in sink.headers)} (values hidden)")
    return "\n".join(lines) + ("\n" if lines else "")


async def _status(config) -> tuple[int, dict]:
    async with open_store(config) as store:
        head, _ = await store.tree_head()
        return head, await store.forward_positions()


def _when(ts, now) -> str:
    if ts is None:
        return "never"
    return f"{format_iso(ts)} ({max(now - ts, 0):.0f} s ago)"


def status_report(config, head: int, stored: dict) -> list[dict]:
    """One dict per sink, configured ones first (in file order), then stored positions of sinks
    no longer configured."""
    configured = {sink.name: sink for sink in config.forward}
    report = []
    for name in [*configured, *(n for n in stored if n not in configured)]:
        row, sink = stored.get(name), configured.get(name)
        report.append({
            "sink": name, "target": sink.target if sink else None,
            "configured": sink is not None, "started": row is not None, "head": head,
            "position": row["position"] if row else None,
            "lag": max(head - row["position"], 0) if row else None,
            **{k: row[k] if row else None for k in ("delivered", "last_success", "last_error",
                                                   "last_error_at", "errors")}})
    return report


def cmd_forward_status(args) -> int:
    config = database_config(args)
    head, stored = asyncio.run(_status(config))
    report = status_report(config, head, stored)
    if args.json:
        print(json.dumps({"head": head, "sinks": report}, indent=2))
        return 0
    if not report:
        print(f"no sinks: add [[forward]] tables to the configuration file (log head: {head:,} "
              "events)")
        return 0
    now = time.time()
    for item in report:
        print(f"{item['sink']}" + (f"  ->  {item['target']}" if item["target"] else
                                   "  (no longer in the configuration)"))
        if not item["started"]:
            print("  not started yet: it starts when 'auditd serve' runs with it")
            continue
        print(f"  position {item['position']:,} of {head:,} events, lag {item['lag']:,}; "
              f"delivered {item['delivered']:,}")
        print(f"  last success {_when(item['last_success'], now)}")
        if item["last_error"] is not None:
            print(f"  last error   {_when(item['last_error_at'], now)}: {item['last_error']} "
                  f"({item['errors']:,} failed attempts in all)")
        else:
            print("  last error   none")
    return 0


def register_commands(commands):
    forward = commands.add_parser(
        "forward", help="forwarding to SIEMs: each sink's progress",
        description="Sinks are [[forward]] tables in the configuration file (README: "
                    "Forwarding to a SIEM).")
    actions = forward.add_subparsers(dest="forward_command", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status", help="each sink's position, lag, last success and last error",
        description="Read each sink's stored delivery position from the database: how many "
                    "events it is behind the log's head, when it last took a batch, and its "
                    "last error. Pass the same --config as 'auditd serve' to see the configured "
                    "sinks that have not started yet.")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_db_options(status)
    status.set_defaults(func=cmd_forward_status)
