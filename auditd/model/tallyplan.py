"""The list planner's rules, shared by the backends: which tallies (tally.py) count a query's
shape, and the walk down their buckets that finds a deep offset's row without skipping the rows
before it. Each backend turns these into its own SQL; nothing here reads anything.

The walk is a generator that yields what it needs to know and is sent the answers (`drive`
answers it; PostgreSQL's store runs the same walk in SQL, postgres/tallies.walk_sql):
- ("rows", a, b): how many of the query's rows start in the seconds [a, b) (a date edge);
- ("pick", first, last, offset): which bucket between first and last holds row `offset`, in
  the list's order: (bucket, offset within it) or (None, offset less the range's rows);
- ("split", bucket): whether a 68-minute bucket is split for the query's keys.
"""
from dataclasses import dataclass

from . import tally
from .query import ListQuery

_KIND = {None: "", "action": "a", "user": "u", "is_user_action": "i"}


@dataclass(frozen=True)
class Shape:
    kind: str | None     # the tallies' kind; None: count the rows (a uuid prefix longer than
                         # the tallies count: a short range of the uuid index)
    keys: list           # their keys (one per namespace, or one)
    column: str | None   # a state's tally column, or None for all states
    ranges: list         # bucket ranges [(first, last)]
    edges: list          # [start, stop) second ranges counted from rows (tally.split_range)
    time: str            # start_ts or end_ts: what the date range bounds
    walk: bool           # whether a deep offset can be found through the tallies
    field: str | None    # the equality filter (action, user or is_user_action), if any
    names: list | None   # the namespaces, sorted, or None for all
    prefix: str | None   # the uuid prefix, if any


def shape(query: ListQuery) -> Shape | None:
    """The tallies that count a query (without an object filter), or None when they cannot:
    one equality filter at most, a date range on start or end (end with nothing else), or a uuid
    prefix alone; namespaces and a state with any of them."""
    f = query.filters
    if "object" in f or "uuid" in f:
        return None
    equal = [name for name in ("action", "user", "is_user_action") if name in f]
    start = (f.get("start_date__gte"), f.get("start_date__lte"))
    end = (f.get("end_date__gte"), f.get("end_date__lte"))
    has_start, has_end = start != (None, None), end != (None, None)
    prefix = f.get("uuid__startswith")
    if len(equal) > 1 or (has_end and (equal or has_start)):
        return None
    if prefix is not None and (equal or has_start or has_end):
        return None
    names = sorted(query.namespaces) if query.namespaces is not None else None
    field = equal[0] if equal else None
    column = tally.STATE_COLUMN.get(f.get("state"))
    if prefix is not None and len(prefix) > tally.PREFIX:
        return Shape(None, [], column, [], [], "start_ts", False, None, names, prefix)
    if prefix is not None:
        values = [prefix.lower()]    # a prefix of the tallies' keys
        kind = "p"
        edges, ranges = [], [(tally.ALL_TIME, tally.ALL_TIME)]
    else:
        values = [""] if field is None else [tally._value(f, field)]
        kind = "e" if has_end else _KIND[field]
        edges, ranges = tally.split_range(*(end if has_end else start))
    if names is not None:
        kind = "n" + kind
        keys = [ns if kind in ("n", "ne") else ns + tally.SEP + v for ns in names for v in values]
    else:
        keys = values
    return Shape(kind, keys, column, ranges, edges, "end_ts" if has_end else "start_ts",
                 prefix is None and not has_end, field, names, prefix)


def interval(bucket: int) -> tuple[int, int, int]:
    """(level, first second, first second after) of a bucket."""
    level = (bucket + tally.LEVEL_SPAN // 2) // tally.LEVEL_SPAN
    i, shift = bucket - level * tally.LEVEL_SPAN, tally.shift(level)
    return level, i << shift, (i + 1) << shift


def fine_edge(fine, a: int, b: int) -> bool:
    """Whether the edge [a, b) lies in one of the split 68-minute buckets `fine` (an edge lies
    in one bucket: tally.split_range)."""
    return tally.bucket(0, a) in fine


def fine_ranges(a: int, b: int) -> list:
    """The seconds [a, b) of one split bucket as ranges of its 64-second and 1-second buckets."""
    width = 1 << tally.shift(-1)
    a1, b1 = -(-a // width) * width, b // width * width
    if a1 >= b1:
        return [(tally.bucket(-2, a), tally.bucket(-2, b - 1))]
    out = [(tally.bucket(-1, a1), tally.bucket(-1, b1) - 1)]
    if a < a1:
        out.append((tally.bucket(-2, a), tally.bucket(-2, a1 - 1)))
    if b1 < b:
        out.append((tally.bucket(-2, b1), tally.bucket(-2, b - 1)))
    return out


def locate(ranges: list, edges: list, fine, offset: int, newest_first: bool, splittable: bool,
           split_skip: int):
    """The walk (see the module's text) to the row at `offset`. Returns (boundary, rows to skip
    after it, a 68-minute bucket to split or None), newest first the rows before `boundary`,
    else from it; None when the offset is past the last row. Reads a few hundred counters, never
    `offset` rows: in a split bucket down to one second's; in another, more than `split_skip`
    rows of a 68-minute bucket to skip asks for it to be split (when `splittable`)."""
    ranges = list(ranges)
    pieces = []
    for a, b in edges:     # an edge in a split bucket is its finer buckets
        if fine_edge(fine, a, b):
            ranges += fine_ranges(a, b)
        else:
            pieces.append((a, b, None))
    pieces += [(interval(first)[1], interval(last)[2], (first, last)) for first, last in ranges]
    pieces.sort(reverse=newest_first)        # the pieces of the range do not overlap in time
    for a, b, buckets in pieces:
        if buckets is None:
            n = yield ("rows", a, b)
            if offset < n:
                return (b if newest_first else a), offset, None
            offset -= n
            continue
        bucket, offset = yield ("pick", *buckets, offset)
        while bucket is not None:
            level, a, b = interval(bucket)
            if level == tally.FINEST or (level == 0 and offset <= split_skip):
                return (b if newest_first else a), offset, None
            # the walk goes on only in a split bucket; else it wants one
            if level == 0 and not (splittable and (yield ("split", bucket))):
                return (b if newest_first else a), offset, bucket if splittable else None
            bucket, offset = yield ("pick", tally.bucket(level - 1, a),
                                    tally.bucket(level - 1, b) - 1, offset)
            if bucket is None:
                raise AssertionError("the tallies of a bucket and of its parts disagree")
    return None


def pick(counts, offset: int) -> tuple[int | None, int]:
    """A "pick" request's answer from (bucket, rows) in the list's order, read only until the
    bucket that holds row `offset` (`counts` may be a cursor)."""
    for bucket, n in counts:
        if offset < n:
            return bucket, offset
        offset -= n
    return None, offset


def drive(walk, answer: dict):
    """Run a walk with synchronous answers: `answer[request]` is called with its arguments."""
    try:
        request = next(walk)
        while True:
            request = walk.send(answer[request[0]](*request[1:]))
    except StopIteration as done:
        return done.value
