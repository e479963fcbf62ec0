"""`auditd serve` and `auditd config show`."""
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from ..config import DEFAULT_CONFIG_FILE, Config, load_config, render_toml
from .common import MEMORY_DB, add_settings_flags, check_folder, config_from_args
from .forward import render_sinks

log = logging.getLogger("auditd")


def cmd_serve(args) -> int:
    from ..server.logs import setup_logging
    from ..server.run import serve
    config = config_from_args(args)
    setup_logging(config.log_level)
    if config.db != MEMORY_DB:
        check_folder(config.db)   # the file may be created, a mistyped folder is not
        return asyncio.run(serve(config))
    # A throwaway database: WAL and the store's several connections need a file, so it is one in
    # a private (0700) temporary folder, removed when the server stops.
    with tempfile.TemporaryDirectory(prefix="auditd-memory-") as folder:
        config.db = str(Path(folder) / "auditd.db")
        log.info("--db %s: a throwaway database %s, removed when the server stops ('auditd user "
                 "add --db %s' works while it runs)", MEMORY_DB, config.db, config.db)
        return asyncio.run(serve(config))


def cmd_config_show(args) -> int:
    flags = {name: getattr(args, name, None) for name in Config.names()}
    config, sources = load_config(flags, args.config_file)
    sys.stdout.write("# auditd's effective configuration; each value's source is in its comment\n")
    sys.stdout.write(render_toml(config, sources))
    sys.stdout.write(render_sinks(config.forward))
    return 0


def register_commands(commands):
    serve = commands.add_parser("serve", help="run the API server",
                                description="Run the API server. On a database without users it "
                                            "creates the admin 'admin', with --admin-key's key or "
                                            "a new one printed once.")
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
