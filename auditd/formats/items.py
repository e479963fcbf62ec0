"""An action as a file carries it, defined once: a fixture item or a line of auditd's export.

`load_item` checks one with `auditd.schemas.ActionItemSchema` and gives the complete record (as
`auditd.model.actions.new_action` makes it), the object graph edges above its object as
[child URI, parent URI], and its log lines as (seq or None, ts, stream_type, line). Fixture files,
`POST /_auditd/seed` and `auditd import` all go through it, so they accept the same things and
say the same about what is wrong.
"""
from marshmallow import ValidationError

from ..model.actions import new_action
from ..schemas import MAX_LOG_LINE, MAX_LOG_LINES, UuidText, describe_errors, load_action_item

LOG_KEYS = frozenset({"seq", "timestamp", "streamType", "log", "type"})
LOG_SHAPE = '{"log": str, "timestamp": int, "streamType": str, "seq": int}'
_NOT_PRODUCER = ("uuid", "location", "logs", "resource_uri", "cancelable", "retriable",
                 "parents", "proof")


def load_item(data, default_user: str | None, locate=None) -> tuple[dict, list, list]:
    """(record, edges, logs) from one item; ValueError with a sentence naming every problem.

    `default_user` is the user of an item without one (None: `user` is required). `locate(ip)`
    fills `location` when the item has none (without it, "")."""
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object with at least 'action'")
    if default_user is None and "user" not in data:
        raise ValueError("user: is required")
    try:
        loaded = load_action_item(data)
    except ValidationError as err:
        raise ValueError(describe_errors(err.messages)) from None
    fields = {k: v for k, v in loaded.items() if k not in _NOT_PRODUCER and v is not None}
    fields.setdefault("user", default_user)
    for flag, producer_flag in (("cancelable", "can_be_canceled"),
                                ("retriable", "can_be_retried")):
        if flag in loaded:   # the producer's own flag, which an export carries
            fields[producer_flag] = loaded[flag]
    record = new_action(**fields)
    if "uuid" in loaded:
        record["uuid"] = loaded["uuid"]
    location = loaded.get("location")
    record["location"] = location if location is not None else (
        locate(record["ip"]) if locate is not None else "")
    record["parents"] = []
    logs = load_logs(loaded["logs"], record["start_ts"]) if "logs" in loaded else []
    return record, loaded.get("parents", []), logs


def load_uuid(value, name: str) -> str:
    try:
        return _UUID.deserialize(value)
    except ValidationError as err:
        raise ValueError(f"{name}: {describe_errors(err.messages)}") from None


_UUID = UuidText()


def load_logs(items, default_ts: int, where: str = "logs") -> list[tuple]:
    """[(seq or None, ts, stream_type, line)] from strings or log objects; a line without a
    timestamp takes `default_ts`, one without seq follows the line before it."""
    if not isinstance(items, list):
        raise ValueError(f"{where}: must be a list of strings or of {LOG_SHAPE} objects")
    if len(items) > MAX_LOG_LINES:
        raise ValueError(f"{where}: at most {MAX_LOG_LINES} lines per item")
    lines = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            item = {"log": item}
        if not isinstance(item, dict) or not isinstance(item.get("log"), str):
            raise ValueError(f"{here}: must be a string or a {LOG_SHAPE} object")
        unknown = set(item) - LOG_KEYS
        if unknown:
            raise ValueError(f"{here}: unknown key '{sorted(unknown)[0]}'")
        seq, ts, stream_type = item.get("seq"), item.get("timestamp", default_ts), \
            item.get("streamType")
        if seq is not None and (type(seq) is not int or seq < 1):
            raise ValueError(f"{here}.seq: must be an integer >= 1")
        if type(ts) is not int:
            raise ValueError(f"{here}.timestamp: must be Unix seconds (an integer)")
        if stream_type is not None and not isinstance(stream_type, str):
            raise ValueError(f"{here}.streamType: must be a string")
        if len(item["log"]) > MAX_LOG_LINE:
            raise ValueError(f"{here}.log: is longer than {MAX_LOG_LINE} characters")
        lines.append((seq, ts, stream_type, item["log"]))
    return lines


def numbered(lines: list[tuple], first_seq: int = 1) -> list[tuple]:
    """(seq, ts, stream_type, line) with every missing seq following the line before it."""
    out, seq = [], first_seq - 1
    for given, ts, stream_type, line in lines:
        seq = given if given is not None else seq + 1
        out.append((seq, ts, stream_type, line))
    return out
