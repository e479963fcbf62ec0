"""`action ls` output as the docker-cloud CLI 1.0.9 prints it.

docker-cloud builds its rows in dockercloudcli/commands.py (action_ls): the uuid's first 8
characters, the action, start and end as `ago.human(now - date, precision=1)`, the target (the
object URI without `/api/<subsystem>/v1/`), ip and location; then prints them with
`tabulate(rows, headers, stralign="left", tablefmt="plain")` (tabulate 0.8.10). This module does
the same without either library. One deliberate difference: with no actions docker-cloud prints
only five of the seven headers and an empty line; this prints the seven headers alone.
"""
import datetime
import math
import re

HEADERS = ["UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION"]
DATE_FORMAT = "%a, %d %b %Y %H:%M:%S +0000"
MIN_PADDING = 2           # tabulate's: every column is at least its header's width + 2
SEPARATOR = "  "          # tabulate's "plain" format: two spaces between columns


# ---------------------------------------------------------------------------- the cells

def parse_date(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, DATE_FORMAT).replace(tzinfo=datetime.timezone.utc)


def humanize(text: str | None, now: datetime.datetime) -> str:
    """The `ago` package's human(now - date, precision=1): '3 hours ago', 'in 5 seconds'."""
    date = parse_date(text)
    if date is None:
        return ""
    delta = now - date
    tense = "in {}" if delta < datetime.timedelta(0) else "{} ago"
    delta = abs(delta)
    units = (("year", delta.days // 365), ("day", delta.days % 365),
             ("hour", delta.seconds // 3600), ("minute", delta.seconds // 60 % 60),
             ("second", delta.seconds % 60), ("millisecond", delta.microseconds // 1000),
             ("microsecond", delta.microseconds % 1000))
    for unit, count in units:
        if count:
            return tense.format(f"{count} {unit}{'' if count == 1 else 's'}")
    return tense.format("")


def target(object_uri: str) -> str:
    """'/api/app/v1/alice/service/ID/' -> 'alice/service/ID' (docker-cloud's TARGET)."""
    terms = (object_uri or "").strip("/").split("/", 3)
    return terms[3] if len(terms) == 4 else ""


def row(action: dict, now: datetime.datetime) -> list[str]:
    return [action["uuid"][:8], action["action"], humanize(action["start_date"], now),
            humanize(action["end_date"], now), target(action["object"]), action["ip"],
            action["location"]]


# ---------------------------------------------------------------------------- tabulate "plain"

def _is_int(cell: str) -> bool:
    return re.fullmatch(r"\s*[+-]?\d+\s*", cell) is not None


def _is_number(cell: str) -> bool:
    try:
        value = float(cell)
    except ValueError:
        return False
    if "_" in cell:           # Python 3 reads 1_0 as 10; tabulate's Python 2 did not
        return False
    if math.isinf(value) or math.isnan(value):
        return cell.lower() in ("inf", "-inf", "nan")
    return True


def _digits_after_point(cell: str) -> int:
    if _is_int(cell) or not _is_number(cell):
        return -1
    pos = cell.rfind(".")
    pos = cell.lower().rfind("e") if pos < 0 else pos
    return len(cell) - pos - 1 if pos >= 0 else -1


def _column(cells: list[str], header: str) -> tuple[list[str], str]:
    """One column aligned as tabulate aligns it: text left; a column whose every cell is a
    number is right-aligned on the decimal point (floats in "g" format). Returns the padded
    cells and the padded header."""
    cells = [c.strip() for c in cells]
    numeric = all(_is_number(c) for c in cells)
    if numeric and not all(_is_int(c) for c in cells):
        cells = [format(float(c), "g") for c in cells]
    if numeric:
        after = [_digits_after_point(c) for c in cells]
        cells = [c + " " * (max(after) - a) for c, a in zip(cells, after)]
    width = max([len(header) + MIN_PADDING] + [len(c) for c in cells])
    if numeric:
        return [c.rjust(width) for c in cells], header.rjust(width)
    return [c.ljust(width) for c in cells], header.ljust(width)


def tabulate(rows: list[list[str]], headers: list[str] = HEADERS) -> str:
    """tabulate(rows, headers, stralign="left", tablefmt="plain") for text cells."""
    if not rows:
        return SEPARATOR.join(h.ljust(len(h) + MIN_PADDING) for h in headers).rstrip()
    columns = [_column([r[i] for r in rows], h) for i, h in enumerate(headers)]
    lines = [SEPARATOR.join(header for _, header in columns).rstrip()]
    for i in range(len(rows)):
        lines.append(SEPARATOR.join(cells[i] for cells, _ in columns).rstrip())
    return "\n".join(lines)


def action_table(actions: list[dict], now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return tabulate([row(a, now) for a in actions])
