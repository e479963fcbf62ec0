"""The stand-alone verifier: checks auditd's proofs and checkpoints without a server or database.

Needs only the standard library and `cryptography`; docs/TRANSPARENCY.md describes every input.

    python -m auditd.verify checkpoint CP.json [--public-key B64]
    python -m auditd.verify proof PROOF.json [--checkpoint CP.json] [--public-key B64]
    python -m auditd.verify consistency OLD_CP.json NEW_CP.json PROOF.json [--public-key B64]
    python -m auditd.verify export FILE.ndjson [--public-key B64]   (auditd export --proofs)

Exit status 0 when everything verifies, 1 (with one sentence saying what failed) otherwise.
Without --public-key a checkpoint is checked against the key it names: that shows it was not
altered, not who signed it. Pin the key you trust (GET /api/audit/v1/checkpoint/ names it).
"""
import argparse
import base64
import binascii
import json
import sys

from .checkpoint import check_checkpoint
from .leaves import decode_leaf, replay
from .merkle import VerificationError, check_consistency, check_inclusion, leaf_hash


def _int(obj: dict, key: str, what: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VerificationError(f"the {what} has no non-negative integer {key!r}")
    return value


def _hex(value, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise VerificationError(f"{what} is not hex") from None
    if len(raw) != 32:
        raise VerificationError(f"{what} is {len(raw)} bytes, not 32")
    return raw


def _hex_list(values, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise VerificationError(f"{what} is not a list of hex hashes")
    return [_hex(v, f"element {i} of {what}") for i, v in enumerate(values)]


def checkpoint(cp: dict, public_key=None) -> str:
    """Check a checkpoint's signature; a sentence saying what it shows."""
    check_checkpoint(cp, public_key)
    who = ("the key given" if public_key is not None
           else f"the key it names ({cp.get('public_key')}; pass --public-key to pin the key "
                "you trust)")
    return (f"the checkpoint of {cp['origin']} at tree size {cp['tree_size']} (time "
            f"{cp['timestamp']}) is signed by {who}")


def inclusion(proof: dict, cp: dict | None = None, public_key=None) -> str:
    """Check an action's proof (GET /api/audit/v1/action/<uuid>/proof/): every leaf decodes,
    is about the action, follows the one before it, and is in the tree of `tree_size` leaves
    whose root is `root_hash`; with `cp`, that tree head is the signed checkpoint's."""
    if not isinstance(proof, dict):
        raise VerificationError("a proof is a JSON object")
    size = _int(proof, "tree_size", "proof")
    root = _hex(proof.get("root_hash"), "the proof's root_hash")
    uuid = proof.get("uuid")
    items = proof.get("leaves")
    if not isinstance(items, list) or not items:
        raise VerificationError("the proof has no leaves")
    events, last = [], -1
    for n, item in enumerate(items):
        index = _int(item, "leaf_index", f"leaf {n} of the proof")
        where = f"leaf {n} (index {index})"
        if index <= last:
            raise VerificationError(f"{where}: leaf indexes must increase (after {last})")
        last = index
        try:
            data = base64.b64decode(item.get("leaf"), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise VerificationError(f"{where}: 'leaf' is not base64") from None
        path = _hex_list(item.get("inclusion_path"), f"the inclusion path of {where}")
        try:
            check_inclusion(leaf_hash(data), index, size, path, root)
            event = decode_leaf(data)
        except VerificationError as e:
            raise VerificationError(f"{where}: {e}") from None
        if uuid is not None and event["uuid"] != uuid:
            raise VerificationError(f"{where}: it is about action {event['uuid']}, not {uuid}")
        events.append(event)
    action = replay(events)
    said = ""
    if cp is not None:
        said = "; " + checkpoint(cp, public_key)
        if (cp["tree_size"], cp["root_hash"].lower()) != (size, root.hex()):
            raise VerificationError(
                f"the proof is against tree size {size} but the checkpoint is of tree size "
                f"{cp['tree_size']}" if cp["tree_size"] != size else
                "the proof's root hash is not the checkpoint's, for the same tree size: "
                "the log has two versions of its history")
    lines = action["log_count"]
    return (f"{len(events)} events of action {action['uuid']} ({action['action']}, now "
            f"{action['state']}, {lines} log line{'' if lines == 1 else 's'}) are in the tree "
            f"of size {size} with root {root.hex()}{said}")


def consistency(old: dict, new: dict, proof: dict, public_key=None) -> str:
    """Check that the tree of checkpoint `new` extends the tree of checkpoint `old`
    (GET /api/audit/v1/checkpoint/consistency/?first=N&second=M). Without `public_key` both must
    be signed by the key `old` names."""
    pinned = public_key if public_key is not None else old.get("public_key") \
        if isinstance(old, dict) else None
    try:
        said = checkpoint(old, public_key)
    except VerificationError as e:
        raise VerificationError(f"the old checkpoint: {e}") from None
    try:
        checkpoint(new, pinned)
    except VerificationError as e:
        raise VerificationError(f"the new checkpoint: {e}") from None
    if old["origin"] != new["origin"]:
        raise VerificationError(f"the checkpoints are of two logs: {old['origin']} and "
                                f"{new['origin']}")
    first, second = _int(proof, "first", "proof"), _int(proof, "second", "proof")
    if (first, second) != (old["tree_size"], new["tree_size"]):
        raise VerificationError(f"the proof is from size {first} to {second}, the checkpoints "
                                f"are of sizes {old['tree_size']} and {new['tree_size']}")
    path = _hex_list(proof.get("consistency_path"), "the proof's consistency_path")
    check_consistency(first, second, _hex(old["root_hash"], "the old root hash"),
                      _hex(new["root_hash"], "the new root hash"), path)
    return (f"the tree of size {second} (root {new['root_hash']}) extends the tree of size "
            f"{first} (root {old['root_hash']}): none of the first {first} leaves changed; "
            f"{said}, and so is the newer one")


# ---------------------------------------------------------------------------- command line

EXPORTED = ("namespace", "state", "action", "method", "path", "object", "user", "user_agent",
            "ip", "location", "body")


def export(lines, public_key=None) -> str:
    """Check an `auditd export --proofs` file: its checkpoint's signature, every action's proof
    against it, and that what the file says of each action (its fields and log lines) is what
    its proven events replay to. `lines`: the file's lines."""
    cp, actions, logs, open_logs = None, 0, {}, {}
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except ValueError:
            raise VerificationError(f"line {number} is not JSON") from None
        if number == 1:
            if not isinstance(item, dict) or set(item) != {"checkpoint"}:
                raise VerificationError("line 1 is not the export's checkpoint: export with "
                                        "--proofs")
            cp = item["checkpoint"]
            checkpoint(cp, public_key)
            continue
        if "logs_of" in item:
            logs.setdefault(item["logs_of"], []).extend(item.get("logs", []))
            continue
        if item.get("proof") is None:
            raise VerificationError(f"line {number}: action {item.get('uuid')} has no proof "
                                    "(recorded after the checkpoint?)")
        action = _proven(dict(item["proof"], uuid=item.get("uuid")), cp, public_key, number)
        for name in EXPORTED:
            if item.get(name) != action[name]:
                raise VerificationError(f"line {number}: action {action['uuid']}'s {name} is "
                                        f"{item.get(name)!r} in the file but "
                                        f"{action[name]!r} in the log")
        logs[action["uuid"]] = list(item.get("logs", []))
        open_logs[action["uuid"]] = (number, action["logs"])
        actions += 1
    for uuid, (number, proven) in open_logs.items():
        said = [(line.get("seq"), line.get("timestamp"), line.get("streamType"), line.get("log"))
                for line in logs[uuid]]
        if said != [tuple(line) for line in proven[:len(said)]]:
            raise VerificationError(f"line {number}: action {uuid}'s log lines in the file are "
                                    "not the ones in the log")
    if cp is None:
        raise VerificationError("the file is empty")
    return (f"{actions} actions, their fields and log lines, are in the tree of the "
            f"checkpoint of size {cp['tree_size']}")


def _proven(proof: dict, cp: dict, public_key, number: int) -> dict:
    """The action as its proven events replay to (inclusion checked against `cp`)."""
    try:
        inclusion(proof, cp, public_key)
    except VerificationError as e:
        raise VerificationError(f"line {number}: {e}") from None
    events = [decode_leaf(base64.b64decode(item["leaf"])) for item in proof["leaves"]]
    return replay(events)


def _read(path: str, what: str):
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise VerificationError(f"cannot read the {what} {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise VerificationError(f"the {what} {path} is not JSON: {e}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m auditd.verify",
        description="Check auditd's inclusion proofs, consistency proofs and signed checkpoints "
                    "(RFC 9162 Merkle tree, Ed25519). Exit 0: verified; 1: not.")
    sub = parser.add_subparsers(dest="command", required=True)
    key = dict(metavar="B64", help="the log's public key (32 bytes, base64) to trust; without "
               "it a checkpoint is checked against the key it names")
    p = sub.add_parser("checkpoint", help="check a checkpoint's signature")
    p.add_argument("checkpoint", metavar="CP.json")
    p.add_argument("--public-key", **key)
    p = sub.add_parser("proof", help="check an action's proof (its events are in the tree)")
    p.add_argument("proof", metavar="PROOF.json", help="as GET .../action/<uuid>/proof/ returns")
    p.add_argument("--checkpoint", metavar="CP.json",
                   help="a signed checkpoint the proof's tree size and root must match")
    p.add_argument("--public-key", **key)
    p = sub.add_parser("consistency", help="check that a newer checkpoint extends an older one")
    p.add_argument("old", metavar="OLD_CP.json")
    p.add_argument("new", metavar="NEW_CP.json")
    p.add_argument("proof", metavar="PROOF.json",
                   help="as GET .../checkpoint/consistency/?first=N&second=M returns")
    p.add_argument("--public-key", **key)
    p = sub.add_parser("export", help="check an export made with 'auditd export --proofs'")
    p.add_argument("file", metavar="FILE.ndjson")
    p.add_argument("--public-key", **key)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "checkpoint":
            said = checkpoint(_read(args.checkpoint, "checkpoint"), args.public_key)
        elif args.command == "export":
            try:
                with open(args.file, encoding="utf-8") as f:
                    said = export(f, args.public_key)
            except OSError as e:
                raise VerificationError(f"cannot read {args.file}: {e.strerror}") from None
        elif args.command == "proof":
            cp = _read(args.checkpoint, "checkpoint") if args.checkpoint else None
            said = inclusion(_read(args.proof, "proof"), cp, args.public_key)
        else:
            said = consistency(_read(args.old, "old checkpoint"),
                               _read(args.new, "new checkpoint"),
                               _read(args.proof, "consistency proof"), args.public_key)
    except VerificationError as e:
        print(f"NOT VERIFIED: {e}.", file=sys.stderr)
        return 1
    print(f"VERIFIED: {said}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
