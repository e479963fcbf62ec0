"""What a store reports after each commit, in commit order, once the commit is durable.

The live streams are fed from these alone: a note carries everything a stream sends, so the
streams never ask the store anything on the way.
"""
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ActionChanged:
    """An action was recorded (`kind` "create") or changed state ("update").

    `action` is the action as committed (see `auditd.store.interface`); `lineage` is its object
    followed by that object's ancestors, nearest first, as the events stream sends `parents`."""
    kind: str
    action: dict
    lineage: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LinesAppended:
    """Log lines were appended to the action with this store id: [(seq, ts, stream_type, line)],
    consecutive, oldest first."""
    action_id: int
    lines: list


@dataclass(frozen=True, slots=True)
class ActionsRemoved:
    """Actions were deleted (a reset, a purge): their followers end where they are. `ids` None
    means every action."""
    ids: frozenset | None = None
