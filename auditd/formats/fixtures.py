"""Fixture files and seed bodies: a JSON array of action items, one item, or NDJSON (one a line).

Each item is `auditd.formats.items`' action item: the producer API's shape (CONTRACT.md section 6)
plus `uuid`, `location`, any of the six states, and `logs` (strings or log objects, timestamps
defaulting to the action's start); a line of auditd's own export is one too, and so is the
export's `{"logs_of": uuid, "logs": [...]}` line, which carries more log lines of an action on an
earlier line: `auditd export` output is a fixture file.
"""
import json

from ..model.errors import InvalidRequest
from .items import load_item, load_logs, load_uuid


def parse_fixtures(text: str, source: str) -> list[tuple[str, dict]]:
    """[(where, item)] from a JSON array, a single JSON object, or NDJSON."""
    if not text.strip():
        return []
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"line {number}", json.loads(line)))
            except ValueError as err:
                raise InvalidRequest(
                    f"{source}: line {number} is not JSON ({err}); send a JSON array of actions "
                    "or NDJSON (one action object a line)") from None
    else:
        if isinstance(whole, dict):
            whole = [whole]
        if not isinstance(whole, list):
            raise InvalidRequest(f"{source}: must be a JSON array of action objects (or NDJSON)")
        items = [(f"item {i}", item) for i, item in enumerate(whole)]
    for where, item in items:
        if not isinstance(item, dict):
            raise InvalidRequest(f"{source}: {where} must be a JSON object with at least 'action'")
    return items


def prepare_fixtures(items, source: str, default_user: str, locate) -> list[tuple]:
    """[(record, edges, log lines)] ready for `Store.load`; the first bad item stops it all.
    `locate(ip)` fills the location of an item that has none."""
    prepared, by_uuid = [], {}
    for where, item in items:
        try:
            if "logs_of" in item:
                record, lines = _more_logs(item, prepared, by_uuid)
                lines.extend(line[1:] for line in load_logs(item.get("logs"), record["start_ts"]))
                continue
            record, edges, logs = load_item(item, default_user, locate)
        except ValueError as err:
            raise InvalidRequest(f"{source}: {where}: {err}") from None
        by_uuid[record["uuid"]] = len(prepared)
        prepared.append((record, edges, [line[1:] for line in logs]))
    return prepared


def _more_logs(item: dict, prepared: list, by_uuid: dict):
    """The (record, log lines) an export's logs_of line continues."""
    if set(item) - {"logs_of", "logs"}:
        raise ValueError("a logs_of line has only the keys logs_of and logs")
    uuid = load_uuid(item["logs_of"], "logs_of")
    if uuid not in by_uuid:
        raise ValueError(f"logs_of: {uuid} is not the uuid of an action earlier in the file")
    record, _, lines = prepared[by_uuid[uuid]]
    return record, lines
