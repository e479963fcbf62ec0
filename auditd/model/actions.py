"""Actions: their states, how a new one is filled in, and the rules for moving, canceling and
retrying one (CONTRACT.md sections 3, 5 and 6). Pure functions over action dicts.

An action dict has the keys a store keeps: uuid, namespace, state, action, method, path, object,
user, user_agent, ip, location, body, start_ts, end_ts (Unix seconds), is_user_action, cancelable
and retriable (the producer's own flags; the wire's can_be_* also depend on the state), and, once
stored, id, object_id, log_count and doc (see `auditd.store.interface`).
"""
import os

from . import dates
from .errors import InvalidRequest

STATES = ("Pending", "In progress", "Canceling", "Canceled", "Success", "Failed")
FINAL_STATES = frozenset({"Success", "Failed", "Canceled"})
CANCELABLE_STATES = frozenset({"Pending", "In progress"})
START_STATES = ("Pending", "In progress", "Success", "Failed")
TRANSITIONS = {
    "Pending": ("In progress", "Canceling", "Canceled", "Failed"),
    "In progress": ("Success", "Failed", "Canceling"),
    "Canceling": ("Canceled", "Success", "Failed"),
    "Success": (), "Failed": (), "Canceled": (),
}


# ---------------------------------------------------------------------------- a new action

_RANDOM = bytearray()                             # urandom bytes not used yet
os.register_at_fork(after_in_child=_RANDOM.clear)   # a child never repeats its parent's uuids


def new_uuid() -> str:
    """A random (version 4) UUID as text: what str(uuid.uuid4()) gives, for a quarter of the cost
    (one urandom call per 256 uuids)."""
    if len(_RANDOM) < 16:
        _RANDOM[:] = os.urandom(4096)
    raw = _RANDOM[-16:]
    del _RANDOM[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40     # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80     # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_action(**fields) -> dict:
    """A complete action record from a producer's fields (CONTRACT.md section 6), with the
    defaults filled in. `parents` (the target's parent URIs, nearest first) rides along for the
    store, which keeps the object graph."""
    now = dates.now()
    state = fields.get("state", "In progress")
    record = {
        "uuid": new_uuid(),
        "namespace": fields.get("namespace") or fields["user"],
        "state": state,
        "action": fields["action"],
        "method": fields.get("method", ""),
        "path": fields.get("path", ""),
        "object": fields.get("object", ""),
        "user": fields["user"],
        "user_agent": fields.get("user_agent", ""),
        "ip": fields.get("ip", ""),
        "location": fields.get("location", ""),
        "body": fields.get("body"),
        "start_ts": fields.get("start_date", now),
        "end_ts": fields.get("end_date", now) if state in FINAL_STATES else None,
        "is_user_action": fields.get("is_user_action", True),
        "cancelable": fields.get("can_be_canceled", True),
        "retriable": fields.get("can_be_retried", True),
        "parents": fields.get("parents", []),
    }
    if record["end_ts"] is not None and record["end_ts"] < record["start_ts"]:
        record["end_ts"] = record["start_ts"]
    return record


# ---------------------------------------------------------------------------- the rules

def moved(action: dict, state: str, now: int | None = None) -> dict:
    """The action after entering `state` (not checked here): the server sets end_date when an
    action enters a final state, and never before it started."""
    changed = dict(action, state=state)
    if state in FINAL_STATES:
        changed["end_ts"] = max(dates.now() if now is None else now, action["start_ts"])
    return changed


def check_move(action: dict, state: str):
    """Raise InvalidRequest unless the transition table allows `action` to enter `state`."""
    allowed = TRANSITIONS[action["state"]]
    if state not in allowed:
        raise InvalidRequest(
            f"Action {action['uuid']} cannot move from {action['state']} to {state}: "
            + (f"from {action['state']} it can move to {', '.join(allowed)}" if allowed
               else f"{action['state']} is final"))


def cancel_state(action: dict) -> str:
    """The state a cancel moves `action` to: Pending ends Canceled at once, In progress becomes
    Canceling (its producer finishes the move). InvalidRequest when it cannot be canceled."""
    if action["state"] not in CANCELABLE_STATES:
        raise InvalidRequest(f"Action {action['uuid']} cannot be canceled: it is {action['state']}")
    if not action["cancelable"]:
        raise InvalidRequest(f"Action {action['uuid']} cannot be canceled: its producer marked it "
                             "as not cancelable")
    return "Canceled" if action["state"] == "Pending" else "Canceling"


def retry_record(original: dict, caller: dict, parents=()) -> dict:
    """The new action a retry records: the audit trail is append-only, so the original stays as
    it is. Same operation, target, body, parents, namespace and flags; the caller (user, ip,
    user_agent, location) as its author; Pending; a user action. InvalidRequest when the original
    cannot be retried."""
    if original["state"] not in FINAL_STATES:
        raise InvalidRequest(f"Action {original['uuid']} cannot be retried: it is "
                             f"{original['state']} (only Success, Failed or Canceled actions can "
                             "be)")
    if not original["retriable"]:
        raise InvalidRequest(f"Action {original['uuid']} cannot be retried: its producer marked "
                             "it as not retriable")
    return new_action(
        action=original["action"], method=original["method"], path=original["path"],
        object=original["object"], body=original["body"], namespace=original["namespace"],
        user=caller["user"], ip=caller["ip"], user_agent=caller["user_agent"],
        location=caller["location"], state="Pending", is_user_action=True,
        can_be_canceled=bool(original["cancelable"]), can_be_retried=bool(original["retriable"]),
        parents=list(parents))
