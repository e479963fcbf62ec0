"""`auditd verify`: prove the database's tamper-evident log intact, or name the first damage."""
import json

from ..model.errors import AuditdError
from ..store import backend_for
from .common import add_db_options, database_config, say


def cmd_verify(args) -> int:
    path = database_config(args).db
    backend = backend_for(path)
    if not hasattr(backend, "verify"):
        raise AuditdError(f"{backend.describe(path)} keeps no tamper-evident log yet: "
                          "auditd verify reads SQLite databases")
    checkpoint = None
    if args.checkpoint:
        try:
            with open(args.checkpoint, encoding="utf-8") as f:
                checkpoint = json.load(f)
        except (OSError, ValueError) as err:
            raise AuditdError(f"cannot read the checkpoint {args.checkpoint}: {err}; give a "
                              "file saved from GET /api/audit/v1/checkpoint/") from None
    try:
        report = backend.verify(path, checkpoint, args.public_key)
    except backend.Damage as damage:
        where = []
        if damage.uuid:
            where.append(f"action {damage.uuid}")
        if damage.event is not None:
            where.append(f"event {damage.event}")
        print(f"DAMAGED ({damage.kind}){': ' + ', '.join(where) if where else ''}: "
              f"{damage.message}")
        say("the log no longer proves what this database holds: compare with a backup and "
            "with checkpoints kept elsewhere")
        return 1
    print(f"ok: {report['events']:,} events of {report['actions']:,} actions replay to what "
          f"is stored; tree size {report['tree_size']:,}, root {report['root_hash']}")
    if checkpoint is not None:
        print(f"ok: the log still holds the tree of the checkpoint of size "
              f"{checkpoint['tree_size']:,} ({checkpoint.get('origin')}, signature valid)")
    return 0


def register_commands(commands):
    verify = commands.add_parser(
        "verify", help="check the tamper-evident log against everything stored",
        description="Recompute the Merkle tree of every event from the stored events, replay "
                    "each action from its events and compare it with what is stored, and with "
                    "--checkpoint check a checkpoint saved elsewhere (its signature, and that the "
                    "log still holds the tree it signed). Exit 0 when intact, 1 naming the first "
                    "damage: a change, a deletion or a reordering.")
    verify.add_argument("--checkpoint", metavar="FILE",
                        help="a checkpoint saved earlier (the JSON of "
                             "GET /api/audit/v1/checkpoint/)")
    verify.add_argument("--public-key", metavar="BASE64",
                        help="the signing key to trust (base64 of the 32-byte Ed25519 public "
                             "key); default: the one the checkpoint names")
    add_db_options(verify)
    verify.set_defaults(func=cmd_verify)
