"""The canonical leaf encoding of auditd's events (docs/TRANSPARENCY.md defines it for verifiers).

Every immutable event is one leaf of the Merkle tree (auditd/merkle.py). A leaf's bytes are the
canonical JSON of one object:

    UTF-8, keys sorted, no whitespace (separators "," and ":"), non-ASCII characters as
    themselves, strings escaped as JSON requires (\\" \\\\ \\b \\f \\n \\r \\t, other controls as
    \\u00xx in lower-case hex), integers in decimal within +-(2**53 - 1), true/false/null.

For the values used here (ASCII keys, strings, safe integers, booleans, null, arrays) this is
exactly the RFC 8785 (JCS) serialisation, so any JCS library reproduces the bytes.

    record  {"v":1,"type":"record","uuid","namespace","state","action","method","path","object",
             "parents","user","user_agent","ip","location","body","start_ts","end_ts",
             "is_user_action","cancelable","retriable"}
    state   {"v":1,"type":"state","uuid","from","to","time","end_ts"}
    cancel  {"v":1,"type":"cancel","uuid","from","to","time","end_ts"}
    retry   {"v":1,"type":"retry","uuid","new_uuid","time"}        (then the new action's record)
    logs    {"v":1,"type":"logs","uuid","first_seq","lines":[[seq,ts,stream,line],...]}
    purge   {"v":1,"type":"purge","uuid","time"}     (retention removed the action: nothing follows)

Pure functions only: a store builds the bytes in its write transaction and keeps them.
"""
import json

from .merkle import VerificationError

VERSION = 1
SAFE_INT = (1 << 53) - 1

_STR, _OPT_STR, _INT, _OPT_INT, _BOOL = "a string", "a string or null", "an integer", \
    "an integer or null", "a boolean"
_STRINGS, _LINES = "a list of strings", "a list of [seq, ts, stream, line]"

RECORD_FIELDS = {
    "uuid": _STR, "namespace": _STR, "state": _STR, "action": _STR, "method": _STR,
    "path": _STR, "object": _STR, "parents": _STRINGS, "user": _STR,
    "user_agent": _STR, "ip": _STR, "location": _STR, "body": _OPT_STR, "start_ts": _INT,
    "end_ts": _OPT_INT, "is_user_action": _BOOL, "cancelable": _BOOL, "retriable": _BOOL,
}
STATE_FIELDS = {"uuid": _STR, "from": _STR, "to": _STR, "time": _INT, "end_ts": _OPT_INT}
FIELDS = {
    "record": RECORD_FIELDS,
    "state": STATE_FIELDS,
    "cancel": STATE_FIELDS,
    "retry": {"uuid": _STR, "new_uuid": _STR, "time": _INT},
    "logs": {"uuid": _STR, "first_seq": _INT, "lines": _LINES},
    "purge": {"uuid": _STR, "time": _INT},
}


def canonical(obj) -> bytes:
    """The canonical JSON bytes of `obj` (see the module docstring)."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate: it has no UTF-8 form") from None


def _valid(kind: str, value) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _OPT_STR:
        return value is None or isinstance(value, str)
    if kind in (_INT, _OPT_INT):
        if value is None:
            return kind == _OPT_INT
        return type(value) is int and -SAFE_INT <= value <= SAFE_INT
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STRINGS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return (isinstance(value, list) and all(   # log lines
        isinstance(v, list) and len(v) == 4 and _valid(_INT, v[0]) and _valid(_INT, v[1])
        and _valid(_OPT_STR, v[2]) and _valid(_STR, v[3]) for v in value))


def _problem(obj) -> str | None:
    """Why a decoded leaf object is not a valid leaf, or None."""
    if not isinstance(obj, dict):
        return "a leaf is a JSON object"
    if obj.get("v") != VERSION or type(obj.get("v")) is not int:
        return f"unknown leaf version {obj.get('v')!r} (this verifier knows {VERSION})"
    fields = FIELDS.get(obj.get("type"))
    if fields is None:
        return f"unknown leaf type {obj.get('type')!r}"
    keys = set(obj) - {"v", "type"}
    if keys != set(fields):
        missing, extra = sorted(set(fields) - keys), sorted(keys - set(fields))
        return (f"a {obj['type']} leaf has the fields {', '.join(sorted(fields))}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(extra)}" if extra else ""))
    for name, kind in fields.items():
        if not _valid(kind, obj[name]):
            return f"field {name!r} of a {obj['type']} leaf must be {kind}"
    if obj["type"] == "logs":
        if not obj["lines"]:
            return "a logs leaf holds at least one line"
        seqs = [line[0] for line in obj["lines"]]
        if seqs != list(range(obj["first_seq"], obj["first_seq"] + len(seqs))):
            return "the lines of a logs leaf are numbered first_seq, first_seq + 1, ..."
    return None


def _encode(obj: dict) -> bytes:
    problem = _problem(obj)
    if problem:
        raise ValueError(problem)
    return canonical(obj)


_RECORD_STRINGS = tuple(n for n, kind in RECORD_FIELDS.items() if kind == _STR)
_RECORD_FLAGS = tuple(n for n, kind in RECORD_FIELDS.items() if kind == _BOOL)


def _flag(name: str, value) -> bool:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise ValueError(f"field {name!r} of a record leaf must be a boolean (or 0/1)")


def record_leaf(action: dict) -> bytes:
    """The leaf of a newly recorded action. `action` has the RECORD_FIELDS (as the store's
    new_action builds them; `parents` may be missing: no parents); flags may be 0/1.
    On the write path of every record, so it checks the types without `_problem`."""
    obj = {name: action[name] for name in _RECORD_STRINGS}
    obj.update({name: _flag(name, action[name]) for name in _RECORD_FLAGS})
    obj.update(v=VERSION, type="record", parents=list(action.get("parents") or ()),
               body=action["body"], start_ts=action["start_ts"], end_ts=action["end_ts"])
    for name in _RECORD_STRINGS:
        if type(obj[name]) is not str:
            raise ValueError(f"field {name!r} of a record leaf must be a string")
    if not (_valid(_OPT_STR, obj["body"]) and _valid(_INT, obj["start_ts"])
            and _valid(_OPT_INT, obj["end_ts"]) and _valid(_STRINGS, obj["parents"])):
        raise ValueError(_problem(obj))
    return canonical(obj)


def state_leaf(uuid: str, from_state: str, to_state: str, time: int, end_ts: int | None,
               cancel: bool = False) -> bytes:
    """A state change (`cancel`: one made by a cancel request); `end_ts` is the action's end
    time after the change (None while it is not final)."""
    return _encode({"v": VERSION, "type": "cancel" if cancel else "state", "uuid": uuid,
                    "from": from_state, "to": to_state, "time": time, "end_ts": end_ts})


def cancel_leaf(uuid: str, from_state: str, to_state: str, time: int,
                end_ts: int | None) -> bytes:
    return state_leaf(uuid, from_state, to_state, time, end_ts, cancel=True)


def retry_leaf(uuid: str, new_uuid: str, time: int) -> bytes:
    """A retry of action `uuid`, which recorded action `new_uuid` (whose record leaf follows)."""
    return _encode({"v": VERSION, "type": "retry", "uuid": uuid, "new_uuid": new_uuid,
                    "time": time})


def logs_leaf(uuid: str, first_seq: int, lines) -> bytes:
    """A batch of log lines appended in one call: `lines` as (ts, stream_type, line), numbered
    first_seq, first_seq + 1, ..."""
    return _encode({"v": VERSION, "type": "logs", "uuid": uuid, "first_seq": first_seq,
                    "lines": [[first_seq + i, ts, stream, line]
                              for i, (ts, stream, line) in enumerate(lines)]})


def purge_leaf(uuid: str, time: int) -> bytes:
    """Retention (or `auditd purge`) removed the action and its log lines; the earlier leaves'
    hashes stay in the tree, their bytes may be dropped."""
    return _encode({"v": VERSION, "type": "purge", "uuid": uuid, "time": time})


def decode_leaf(data: bytes) -> dict:
    """The event a leaf holds; VerificationError unless the bytes are a valid leaf in
    canonical form (so one event has exactly one encoding)."""
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise VerificationError("the leaf is not UTF-8 JSON") from None
    problem = _problem(obj)
    if problem:
        raise VerificationError(problem)
    if canonical(obj) != bytes(data):
        raise VerificationError("the leaf is not in canonical form (sorted keys, no spaces)")
    return obj


def replay(events: list[dict]) -> dict:
    """What the stored action should be after its events (decoded leaves, in tree order): the
    record's fields with `state` and `end_ts` as the last change left them, `log_count`, `logs`
    as (seq, ts, stream, line) and `retries` (uuids of the actions its retries recorded).
    Raises VerificationError naming the first event that cannot follow the ones before it, so a
    deleted or reordered event shows even where each leaf is intact."""
    if not events or events[0].get("type") != "record":
        raise VerificationError("event 0: an action's first event is its record")
    action = {k: v for k, v in events[0].items() if k not in ("v", "type")}
    action.update(log_count=0, logs=[], retries=[], purged=False)
    for i, event in enumerate(events[1:], 1):
        kind = event.get("type")
        if action["purged"]:
            raise VerificationError(f"event {i}: a {kind} after the action was purged")
        if event.get("uuid") != action["uuid"]:
            raise VerificationError(f"event {i}: it is about {event.get('uuid')}, "
                                    f"not {action['uuid']}")
        if kind in ("state", "cancel"):
            if event["from"] != action["state"]:
                raise VerificationError(f"event {i}: a {kind} from {event['from']} but the "
                                        f"action was {action['state']}")
            action["state"], action["end_ts"] = event["to"], event["end_ts"]
        elif kind == "logs":
            if event["first_seq"] != action["log_count"] + 1:
                raise VerificationError(f"event {i}: log lines from {event['first_seq']} but "
                                        f"{action['log_count']} came before")
            action["logs"].extend(tuple(line) for line in event["lines"])
            action["log_count"] += len(event["lines"])
        elif kind == "retry":
            action["retries"].append(event["new_uuid"])
        elif kind == "purge":
            action["purged"] = True
        else:
            raise VerificationError(f"event {i}: a second {kind} event")
    return action
