"""Events as sinks receive them: each leaf of the tamper-evident log (auditd.leaves) becomes one
JSON object, with the Action JSON as it was right after the event.

    {"id": 41, "type": "state", "time": "2024-05-01T12:00:03Z", "uuid": "...",
     "namespace": "acme", "action": {...the Action JSON...}, "event": {...}}

- `id` is the leaf index: unique, increasing, the same on every delivery (receivers deduplicate
  by it) and the event's position in the log minus 1.
- `time` (ISO 8601, UTC, seconds) is when the event happened: a record's start, a change's
  time, a logs batch's last line's time.
- `action` is rendered by `auditd.model.document.render_action` from the action's events up to
  this one (its record, then its state changes: what the Action JSON shows changes with nothing
  else). A purge's `action` and `namespace` are null: the action is gone.
- `event` is what the leaf says that the Action JSON does not: a record's `parents`; a state
  change's or cancel's `from` and `to`; a retry's `new_uuid`; a logs batch's `first_seq` and
  `lines` ([seq, ts, stream, line], ...).

The Renderer keeps recent actions as folded so far (at most CACHE_ACTIONS of them and
CACHE_BYTES of their bodies); an action it does not hold is read back from its earlier events
(`Store.action_events`).
"""
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass

from ...leaves import decode_leaf
from ...merkle import VerificationError
from ...model.dates import format_iso
from ...model.document import render_action

log = logging.getLogger("auditd.forward")

CACHE_ACTIONS = 10_000
CACHE_BYTES = 32 * 1024 * 1024
_LOGS = b'"type":"logs"'    # in canonical form only a logs leaf holds this (strings escape ")


@dataclass
class Event:
    id: int
    type: str
    time: int
    uuid: str
    namespace: str | None
    state: str | None        # the action's state after the event (None: purged)
    doc: str | None          # the Action JSON as after the event
    details: dict

    def line(self, short: bool = False) -> bytes:
        """The event's JSON (one line, UTF-8). `short`: without the audited call's body and the
        event's details, for a transport that cannot take long messages."""
        doc, details = self.doc, self.details
        if short:
            doc = json.dumps({**json.loads(doc), "body": None}) if doc else doc
            details = {"truncated": True}
        head = json.dumps({"id": self.id, "type": self.type, "time": format_iso(self.time),
                           "uuid": self.uuid, "namespace": self.namespace},
                          ensure_ascii=False, separators=(",", ":"))
        return (head[:-1] + ',"action":' + (doc or "null") + ',"event":'
                + json.dumps(details, ensure_ascii=False, separators=(",", ":"))
                + "}").encode("utf-8")


def _fold(action: dict | None, event: dict) -> dict | None:
    """The action (as replay's dict) after one more event."""
    if event["type"] == "record":
        return {k: v for k, v in event.items() if k not in ("v", "type")}
    if event["type"] in ("state", "cancel") and action is not None:
        return {**action, "state": event["to"], "end_ts": event["end_ts"]}
    return action


def _details(event: dict) -> dict:
    kind = event["type"]
    if kind == "record":
        return {"parents": event["parents"]}
    if kind in ("state", "cancel"):
        return {"from": event["from"], "to": event["to"]}
    if kind == "retry":
        return {"new_uuid": event["new_uuid"]}
    if kind == "logs":
        return {"first_seq": event["first_seq"], "lines": event["lines"]}
    return {}


def _time(event: dict) -> int:
    if event["type"] == "record":
        return event["start_ts"]
    if event["type"] == "logs":
        return max(line[1] for line in event["lines"])
    return event["time"]


class Renderer:
    def __init__(self, store):
        self.store = store
        self.actions: OrderedDict = OrderedDict()   # action key -> (position, action, size)
        self.size = 0

    def forget(self):
        self.actions.clear()
        self.size = 0

    def _keep(self, key: int, position: int, action: dict | None):
        self._drop(key)
        size = 512 + len((action or {}).get("body") or "")
        self.actions[key] = (position, action, size)
        self.size += size
        while len(self.actions) > CACHE_ACTIONS or self.size > CACHE_BYTES:
            self._drop(next(iter(self.actions)))

    def _drop(self, key: int):
        entry = self.actions.pop(key, None)
        if entry is not None:
            self.size -= entry[2]

    async def _before(self, key: int, position: int) -> dict | None:
        """The action as its events before `position` leave it."""
        cached = self.actions.get(key)
        if cached is not None and cached[0] < position:
            return cached[1]
        action = None
        for leaf in await self.store.action_events(key, position):
            if leaf is None or _LOGS in leaf:
                continue
            try:
                action = _fold(action, decode_leaf(leaf))
            except VerificationError:
                continue   # `auditd verify` names it; the event is still forwarded
        return action

    async def render(self, rows) -> tuple[list[Event], int]:
        """The events of rows (position, action key, leaf) in order, and how many had no bytes
        left (their action was purged before the sink got them) or did not decode."""
        events, missing = [], 0
        for position, key, leaf in rows:
            try:
                event = decode_leaf(leaf) if leaf is not None else None
            except VerificationError as err:
                log.error("forward: the event at leaf %d does not decode (%s): skipped; "
                          "run 'auditd verify'", position - 1, err)
                event = None
            if event is None:
                missing += 1
                continue
            if event["type"] == "purge":
                self._drop(key)
                action = None
            else:
                before = None if event["type"] == "record" else await self._before(key, position)
                action = _fold(before, event)
                self._keep(key, position, action)
            events.append(Event(
                id=position - 1, type=event["type"], time=_time(event), uuid=event["uuid"],
                namespace=action["namespace"] if action else None,
                state=action["state"] if action else None,
                doc=render_action(action) if action else None, details=_details(event)))
        return events, missing


def matches(sink, event: Event) -> bool:
    """Whether the sink's filters (config.ForwardSink) let the event through."""
    return ((sink.types is None or event.type in sink.types)
            and (sink.namespaces is None or event.namespace in sink.namespaces)
            and (sink.states is None or event.state in sink.states))
