"""Dates on the wire: RFC 2822 for actions, ISO 8601 for events, several forms accepted in filters."""
import calendar
import email.utils
import functools
import re
import time
from datetime import datetime, timezone

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

ACCEPTED_FORMATS = (
    "RFC 2822 ('Wed, 17 Sep 2014 08:26:22 +0000'), ISO 8601 date or date-time "
    "('2014-09-17', '2014-09-17T08:26:22Z'; no zone means UTC), Unix seconds, or an age "
    "meaning that long before now ('30s', '10m', '2h', '7d', '1w')"
)

# An age: a whole number of seconds, minutes, hours, days or weeks before now.
_AGE = re.compile(r"(\d{1,9})\s*([smhdw])", re.IGNORECASE)
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# The dates every form can express and format: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TS = -62135596800
MAX_TS = 253402300799
ACCEPTED_RANGE = "dates from 0001-01-01 to 9999-12-31 (UTC) are accepted"


class DateRangeError(ValueError):
    """A well-formed date outside MIN_TS..MAX_TS."""


def in_range(ts: int) -> int:
    if not MIN_TS <= ts <= MAX_TS:
        raise DateRangeError(f"out of range: {ACCEPTED_RANGE}")
    return ts


def now() -> int:
    return int(time.time())


@functools.lru_cache(maxsize=4096)   # most dates rendered are "now": one per second
def format_rfc2822(ts: int) -> str:
    """`Wed, 17 Sep 2014 08:26:22 +0000`, always UTC and English whatever the locale."""
    t = time.gmtime(ts)
    return "%s, %02d %s %04d %02d:%02d:%02d +0000" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def format_iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def is_relative(value) -> bool:
    """Whether `value` is an age ('2h'): its meaning moves with the clock, so it must not be
    remembered as the date it meant once."""
    return isinstance(value, str) and _AGE.fullmatch(value.strip()) is not None


def parse_date(value: str) -> int:
    """Unix seconds from any accepted form (an age counts back from now); ValueError when none fits (DateRangeError when the
    date is well formed but outside the years 1 to 9999)."""
    text = value.strip()
    if not text:
        raise ValueError("empty date")
    if text.lstrip("-").isdigit():
        return in_range(int(text))
    age = _AGE.fullmatch(text)
    if age:
        return in_range(now() - int(age.group(1)) * _AGE_SECONDS[age.group(2).lower()])
    try:
        parsed = _parse_text(text)
    except OverflowError:
        raise DateRangeError(f"out of range: {ACCEPTED_RANGE}") from None
    if parsed is None:
        raise ValueError(f"not a date: {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return in_range(calendar.timegm(parsed.utctimetuple()))
    except OverflowError:   # a year-1 or year-9999 date pushed over the edge by its zone
        raise DateRangeError(f"out of range: {ACCEPTED_RANGE}") from None


def _parse_text(text: str) -> datetime | None:
    if text[:1].isdigit():
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            return None
    # RFC 2822; a '+' that arrived decoded as a space in a query string is put back.
    if len(text) > 6 and text[-5] == " " and text[-4:].isdigit() and text[-6] == " ":
        text = text[:-5] + "+" + text[-4:]
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
