"""Tallies: exact counts of actions per filter value and time bucket, so that a list's
`total_count` is read from a few hundred counters instead of counting matching rows.

A tally row is (kind, key, bucket) with one count per state. The kind names which filters the
key holds: `a` an action name, `na` a namespace and an action name, `u`/`nu` a user, `i`/`ni`
is_user_action, `` and `n` nothing but the namespace; they count by start time. `e` and `ne`
count the actions that ended, by end time. `p` and `np` count by the uuid's first three hex
digits (4,096 keys), over all time: a prefix of up to three digits is counted from 1 to 256 of
them, a longer one is a range of the uuid index of a 16th of a three-digit prefix's rows. Buckets come in three widths (2**12 s ~ 68 min, 2**18 s ~ 3 days,
2**24 s ~ 194 days): every action is counted once at each width, so any time range is a handful
of whole buckets of each width plus two partial edges shorter than 68 minutes, which are counted
from the rows themselves through an index.

A burst can put a million actions into one 68-minute bucket, and a deep offset into it would
then skip rows one by one. Such a bucket is *split* for a start-time kind and key (the store
keeps which): from then on it is also counted in two finer widths, 2**6 s and one second
(levels -1 and -2), so the walk goes down to one second's rows.

Pure rules, no I/O: what an action adds to the tallies, and how a range splits into buckets.
"""
import functools

from .actions import STATES

SHIFTS = (12, 18, 24)                 # bucket widths, finest first: 2**shift seconds
FINE_SHIFTS = (6, 0)                  # levels -1 and -2, kept in split buckets only
FINEST = -len(FINE_SHIFTS)
SPLIT_KINDS = ("", "n", "a", "na", "u", "nu", "i", "ni")   # the start-time kinds
LEVEL_SPAN = 1 << 40                  # bucket = level * LEVEL_SPAN + (ts >> shift)
ALL_TIME = len(SHIFTS) * LEVEL_SPAN   # the one bucket of the all-time kinds (uuid prefixes)
STATE_COLUMNS = ("pending", "in_progress", "canceling", "canceled", "success", "failed")
STATE_COLUMN = dict(zip(STATES, STATE_COLUMNS))
SEP = "\x1f"                          # between a namespace and the value in a two-part key
PREFIX = 3                            # the uuid prefix the p/np kinds count by
PREFIX_KINDS = ("p", "np")

# kind -> the list filter it answers (None: none beyond namespace and state)


def shift(level: int) -> int:
    return SHIFTS[level] if level >= 0 else FINE_SHIFTS[-1 - level]


def bucket(level: int, ts: int) -> int:
    return level * LEVEL_SPAN + (ts >> shift(level))


def _start_pairs(ns: str, action: str, user: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for kind, value in (("", ""), ("a", action), ("u", user), ("i", flag)):
        out += [(kind, value), ("n" + kind, ns + SEP + value if kind else ns)]
    return out


def start_keys(action: dict) -> list[tuple[str, str]]:
    """The (kind, key) pairs an action counts in by start time (SPLIT_KINDS)."""
    return _start_pairs(action["namespace"], action["action"], action["user"],
                        _value(action, "is_user_action"))


def fine_buckets(ts: int) -> list[int]:
    """The buckets of levels -1 and -2 that the second `ts` counts in, in a split bucket."""
    return [bucket(level, ts) for level in range(-1, FINEST - 1, -1)]


def fine_delta(changes, split: set) -> dict:
    """`delta`'s finer part: the changes of the (kind, key, level-0 bucket) in `split`, in
    levels -1 and -2."""
    total: dict[tuple, list] = {}
    for before, after in changes:
        for action, sign in ((before, -1), (after, 1)):
            if action is None:
                continue
            ts = action["start_ts"]
            b0, column = ts >> SHIFTS[0], STATES.index(action["state"])
            for kind, key in start_keys(action):
                if (kind, key, b0) in split:
                    for fine in fine_buckets(ts):
                        row = total.setdefault((kind, key, fine), [0] * len(STATES))
                        row[column] += sign
    return {k: v for k, v in total.items() if any(v)}


def _value(action: dict, field: str) -> str:
    value = action[field]
    return str(int(value)) if field == "is_user_action" else value


def _signature(action: dict) -> tuple:
    """What an action's tallies depend on, but its uuid: records alike share it."""
    end = action["end_ts"]
    return (action["namespace"], action["action"], action["user"],
            str(int(action["is_user_action"])), action["start_ts"] >> SHIFTS[0],
            None if end is None else end >> SHIFTS[0])


@functools.lru_cache(maxsize=4096)
def _signature_keys(signature: tuple) -> tuple:
    ns, action, user, flag, start, end = signature
    starts = [level * LEVEL_SPAN + (start >> (shift - SHIFTS[0]))
              for level, shift in enumerate(SHIFTS)]
    out = []
    for kind, key in _start_pairs(ns, action, user, flag):
        out += [(kind, key, b) for b in starts]
    if end is not None:
        for level, shift in enumerate(SHIFTS):
            b = level * LEVEL_SPAN + (end >> (shift - SHIFTS[0]))
            out += [("e", "", b), ("ne", ns, b)]
    return tuple(out)


def delta(changes) -> dict:
    """The tally changes of a run of (before, after) action pairs (None: not there): {(kind,
    key, bucket): [one count per state]}, leaving out what cancels out. Actions alike (the same
    namespace, action, user, flag, state and finest buckets) are summed before their keys are
    made, so a batch of similar records costs little more than one."""
    alike: dict[tuple, int] = {}
    prefixes: dict[tuple, int] = {}
    for before, after in changes:
        for action, sign in ((before, -1), (after, 1)):
            if action is None:
                continue
            column = STATES.index(action["state"])
            sig = (_signature(action), column)
            alike[sig] = alike.get(sig, 0) + sign
            pre = (action["namespace"], action["uuid"][:PREFIX], column)
            prefixes[pre] = prefixes.get(pre, 0) + sign
    total: dict[tuple, list] = {}

    def add(key, column, n):
        row = total.get(key)
        if row is None:
            row = total[key] = [0] * len(STATES)
        row[column] += n
    for (sig, column), n in alike.items():
        if n:
            for key in _signature_keys(sig):
                add(key, column, n)
    for (ns, prefix, column), n in prefixes.items():
        if n:
            add(("p", prefix, ALL_TIME), column, n)
            add(("np", ns + SEP + prefix, ALL_TIME), column, n)
    return {k: v for k, v in total.items() if any(v)}


def split_range(low: int | None, high: int | None):
    """Split the seconds low..high (inclusive; None: unbounded) into whole buckets and edges.
    Returns (edges, ranges): edges are [start, stop) second ranges to count from rows (each
    within one of the finest buckets), ranges are (first bucket, last bucket) of one width."""
    start = low
    stop = None if high is None else high + 1
    edges, ranges = [], []
    for level, shift in enumerate(SHIFTS):
        width = 1 << shift
        a = start if start is None else -(-start // width) * width   # round up
        b = stop if stop is None else stop // width * width           # round down
        if a is not None and b is not None and a >= b:
            # no whole bucket of this width: the rest is finer buckets (or rows, at the finest)
            break
        if level == 0:
            if start is not None and start < a:
                edges.append((start, a))
            if stop is not None and b < stop:
                edges.append((b, stop))
        else:
            finer = level - 1
            if start is not None and start < a:
                ranges.append((bucket(finer, start), bucket(finer, a) - 1))
            if stop is not None and b < stop:
                ranges.append((bucket(finer, b), bucket(finer, stop) - 1))
        start, stop = a, b
    else:
        level = len(SHIFTS)
    if level == 0:      # shorter than one finest bucket: all rows, one edge in each bucket
        cut = (high + 1) >> SHIFTS[0] << SHIFTS[0]
        return ([(low, cut), (cut, high + 1)] if low < cut <= high else [(low, high + 1)]), []
    top = level - 1
    first = top * LEVEL_SPAN - LEVEL_SPAN // 2 if start is None else bucket(top, start)
    last = top * LEVEL_SPAN + LEVEL_SPAN // 2 - 1 if stop is None else bucket(top, stop) - 1
    if first <= last:
        ranges.append((first, last))
    return edges, ranges
