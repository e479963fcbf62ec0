"""`auditd verify`: recompute the tamper-evident log of an SQLite database from what is stored,
without opening it as a store (nothing is changed).

Checked, in order, and the first problem found is named:

1. every event's leaf bytes hash to its stored hash (else: a changed event);
2. the events are numbered without a gap (else: a deleted event);
3. the tree recomputed from the hashes has the stored head and the stored checkpoints' roots
   (else: events reordered, or replaced together with their hashes);
4. every action replays from its events to exactly what its row and its log lines hold (else: a
   changed field, deleted or added log lines, or events out of order for that action); an
   action without events, and events of an action that is gone without a purge, are named too;
5. with a checkpoint saved elsewhere: its signature, and that the log still holds the tree it
   signed (else: the log was rewritten after it).
"""
import json
import sqlite3
from pathlib import Path

from ...checkpoint import check_checkpoint
from ...leaves import decode_leaf, replay
from ...merkle import CompactRange, VerificationError, leaf_hash, root

REPLAYED_FIELDS = ("namespace", "state", "action", "method", "path", "object", "user",
                   "user_agent", "ip", "location", "start_ts", "end_ts")
FLAGS = ("is_user_action", "cancelable", "retriable")


class Damage(Exception):
    """What is wrong: `kind` (change, deletion, reordering), the event and the action."""

    def __init__(self, kind: str, message: str, uuid: str | None = None,
                 event: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.uuid, self.event = kind, message, uuid, event


def verify(path: str, checkpoint: dict | None = None, public_key=None) -> dict:
    """{"events", "actions", "tree_size", "root_hash"} when intact; Damage otherwise."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("BEGIN")   # one snapshot, even beside a running server
        return _verify(conn, checkpoint, public_key)
    finally:
        conn.close()


def _verify(conn, checkpoint, public_key) -> dict:
    events = conn.execute("SELECT idx, action_id, leaf, hash FROM events ORDER BY idx").fetchall()
    hashes, by_action = [], {}
    for position, (idx, action_id, leaf, stored_hash) in enumerate(events):
        if idx != position + 1:
            raise Damage("deletion", f"event {position} is missing: the log jumps from event "
                                     f"{position - 1} to event {idx - 1}", event=position)
        if leaf is not None and leaf_hash(leaf) != stored_hash:
            raise Damage("change", f"event {idx - 1} no longer matches its hash: its stored "
                                   "bytes were changed", _uuid_of(leaf), idx - 1)
        hashes.append(stored_hash)
        by_action.setdefault(action_id, []).append((idx - 1, leaf))
    frontier = CompactRange.from_bytes(
        conn.execute("SELECT frontier FROM tree_state").fetchone()[0])
    recomputed = CompactRange()
    recomputed.extend(hashes)
    if recomputed.size != frontier.size:
        raise Damage("deletion", f"the tree head says {frontier.size} events, the log holds "
                                 f"{recomputed.size}: events were deleted or added",
                     event=min(recomputed.size, frontier.size))
    if recomputed.root() != frontier.root():
        raise Damage("reordering", "the events no longer hash to the tree's root: they were "
                                   "reordered, or replaced together with their hashes",
                     event=_first_moved(conn, hashes))
    for size, stored_root in conn.execute("SELECT tree_size, root_hash FROM checkpoints"):
        if size > len(hashes) or root(hashes[:size]) != stored_root:
            raise Damage("reordering", f"the checkpoint of size {size} no longer matches the "
                                       "log: its history was rewritten", event=size - 1)
    _replay_actions(conn, by_action)
    if checkpoint is not None:
        _against(checkpoint, hashes, public_key)
    return {"events": len(hashes), "actions": len(by_action), "tree_size": frontier.size,
            "root_hash": frontier.root().hex()}


def _first_moved(conn, hashes) -> int | None:
    """The first event whose stored level-0 neighbourhood no longer hashes to the stored node
    of the 16 leaves around it (tree.py keeps every 4th level)."""
    for index, node in conn.execute("SELECT idx, hash FROM tree_nodes WHERE level = 4 "
                                    "ORDER BY idx"):
        if root(hashes[index * 16:(index + 1) * 16]) != node:
            return index * 16
    return None


def _uuid_of(leaf: bytes | None) -> str | None:
    try:
        return json.loads(leaf).get("uuid") if leaf else None
    except (ValueError, AttributeError):
        return None


def _replay_actions(conn, by_action: dict):
    rows = {row[0]: row for row in conn.execute(
        "SELECT id, uuid, " + ", ".join(REPLAYED_FIELDS + FLAGS) + ", doc, log_count "
        "FROM actions ORDER BY id")}
    for action_id, row in rows.items():
        if action_id not in by_action:
            raise Damage("change", f"action {row[1]} is stored but the log has no event of it: "
                                   "it was added behind the log's back", row[1])
    for action_id, events in by_action.items():
        decoded = []
        for index, leaf in events:
            if leaf is None:
                continue
            try:
                decoded.append((index, decode_leaf(leaf)))
            except VerificationError as err:
                raise Damage("change", f"event {index} is not a valid leaf: {err}",
                             _uuid_of(leaf), index) from None
        if not decoded:
            continue
        uuid = decoded[0][1].get("uuid")
        try:
            state = replay([event for _, event in decoded])
        except VerificationError as err:
            raise Damage("reordering", f"the events of action {uuid} do not follow each other "
                                       f"({err}): events were reordered or deleted", uuid,
                         decoded[0][0]) from None
        row = rows.get(action_id)
        if state["purged"]:
            if row is not None:
                raise Damage("change", f"action {uuid} was purged (event {decoded[-1][0]}) but "
                                       "is stored again", uuid, decoded[-1][0])
            continue
        if row is None:
            raise Damage("deletion", f"action {uuid} is gone but the log never purged it: "
                                     "it was deleted", uuid, decoded[-1][0])
        _compare(conn, row, state, decoded)


def _compare(conn, row, state: dict, decoded):
    uuid, values = row[1], dict(zip(REPLAYED_FIELDS + FLAGS, row[2:]))
    last = decoded[-1][0]
    for name in REPLAYED_FIELDS:
        if values[name] != state[name]:
            raise Damage("change", f"action {uuid}: {name} is stored as {values[name]!r} but "
                                   f"its events say {state[name]!r}", uuid, last)
    for name in FLAGS:
        if bool(values[name]) != state[name]:
            raise Damage("change", f"action {uuid}: {name} was changed", uuid, last)
    doc = json.loads(row[-2])
    if doc.get("body") != state["body"] or doc.get("uuid") != uuid:
        raise Damage("change", f"action {uuid}: its stored document (body) was changed", uuid,
                     last)
    lines = conn.execute("SELECT seq, ts, stream_type, line FROM action_logs "
                         "WHERE action_id = ? ORDER BY seq", (row[0],)).fetchall()
    if [tuple(line) for line in state["logs"]] != lines or row[-1] != state["log_count"]:
        kind = "deletion" if len(lines) < len(state["logs"]) else "change"
        raise Damage(kind, f"action {uuid}: its stored log lines differ from its events "
                           f"({len(lines)} stored, {len(state['logs'])} logged)", uuid, last)


def _against(checkpoint: dict, hashes: list, public_key):
    try:
        check_checkpoint(checkpoint, public_key)
    except VerificationError as err:
        raise Damage("change", f"the checkpoint itself does not verify: {err}") from None
    size = checkpoint["tree_size"]
    if size > len(hashes):
        raise Damage("deletion", f"the checkpoint covers {size} events, the log holds only "
                                 f"{len(hashes)}: events were deleted", event=len(hashes))
    if root(hashes[:size]).hex() != checkpoint["root_hash"]:
        raise Damage("reordering", f"the log no longer holds the tree the checkpoint of size "
                                   f"{size} signed: its first {size} events were rewritten",
                     event=size - 1)
