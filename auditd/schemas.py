"""What clients send, defined once and loaded with marshmallow: the list query, the producer's
bodies, log lines, and a fixture item. (The Action as sent is `auditd.model.document`.)

Validation errors become one readable sentence (`describe_errors`) that the error middleware sends
as `{"error": ...}`.
"""
import json
import math
import uuid as uuidlib

from marshmallow import (RAISE, Schema, ValidationError, fields, pre_load, validate,
                         validates_schema)

from .model import dates
from .model.actions import FINAL_STATES, START_STATES, STATES
from .model.compiled import compile_load

MAX_SHORT = 256          # action names, methods, users, ips
MAX_LONG = 4096          # paths, object URIs, user agents
MAX_BODY = 256 * 1024    # the audited call's body, encoded
MAX_LOG_LINE = 64 * 1024
MAX_LOG_LINES = 10_000   # per request
MAX_PARENTS = 16
MAX_EDGES = 4096         # [child, parent] edges an imported action may carry
MAX_OFFSET = 2**62       # SQLite's OFFSET is a 64-bit integer


# ---------------------------------------------------------------------------- strict field types

class StrictBool(fields.Boolean):
    """JSON true/false only: 1, "yes" and friends are refused."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


QUERY_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def query_bool(value: str) -> bool:
    """A boolean query parameter: true or false (any case), or 1 or 0; ValueError otherwise."""
    try:
        return QUERY_BOOLS[str(value).lower()]
    except KeyError:
        raise ValueError("must be 'true' or 'false' (or 1 or 0)") from None


class QueryBool(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return query_bool(value)
        except ValueError as err:
            raise ValidationError(str(err)) from None


class DateValue(fields.Field):
    """Unix seconds from any accepted date form; JSON numbers are Unix seconds too."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    raise ValueError("not a number")
                return dates.in_range(int(value))
            if isinstance(value, str):
                return dates.parse_date(value)
        except dates.DateRangeError:
            raise ValidationError("is out of range: " + dates.ACCEPTED_RANGE) from None
        except ValueError:
            pass
        raise ValidationError("must be a date: " + dates.ACCEPTED_FORMATS)


class BodyValue(fields.Field):
    """A string kept as is, or any other JSON value stored JSON-encoded."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            encoded = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        except (RecursionError, ValueError):
            raise ValidationError("is nested too deeply to store") from None
        if len(encoded) > MAX_BODY:
            raise ValidationError(f"is longer than {MAX_BODY} characters")
        return encoded


def ascii_int(text, max_digits: int = 18) -> int | None:
    """A whole number written in ASCII digits (no sign, no '_', no other scripts' digits, at
    most `max_digits` of them), or None."""
    if isinstance(text, str) and 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


class QueryInteger(fields.Field):
    """A query parameter that is a whole number: ASCII digits only."""

    def __init__(self, maximum: int, **kwargs):
        super().__init__(**kwargs)
        self.maximum = maximum

    def _deserialize(self, value, attr, data, **kwargs):
        number = ascii_int(value)
        if number is None or number > self.maximum:
            raise ValidationError(f"must be an integer from 0 to {self.maximum}, in ASCII "
                                  "digits 0-9")
        return number


class PageCursor(fields.Field):
    """The position token `next` links carry: `<start_ts>.<id>` of the previous page's last row."""

    def _deserialize(self, value, attr, data, **kwargs):
        ts, sep, row = str(value).partition(".")
        negative = ts.startswith("-")
        ts_value, row_value = ascii_int(ts[negative:], 13), ascii_int(row)
        if not sep or ts_value is None or row_value is None:   # both fit 64-bit integers
            raise ValidationError("must be the token a 'next' link carries; "
                                  "drop it and use offset instead")
        return -ts_value if negative else ts_value, row_value


def _short(**kw):
    return fields.String(validate=validate.Length(max=MAX_SHORT), **kw)


def _long(**kw):
    return fields.String(validate=validate.Length(max=MAX_LONG), **kw)


def _state_field(choices, **kw):
    return fields.String(
        validate=validate.OneOf(choices, error="must be one of: " + ", ".join(choices)), **kw)


# ---------------------------------------------------------------------------- what clients send

class StrictSchema(Schema):
    """Refuses unknown names with one message that names them and lists the accepted ones."""

    class Meta:
        unknown = RAISE

    noun = "key"
    unlisted = frozenset()    # accepted but not advertised in the message

    @pre_load
    def _refuse_unknown(self, data, **kwargs):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.load_fields))
            if unknown:
                accepted = sorted(set(self.load_fields) - self.unlisted)
                raise ValidationError([
                    f"unknown {self.noun} {', '.join(repr(n) for n in unknown)}; accepted: "
                    + ", ".join(accepted)])
        return data


# ---------------------------------------------------------------------------- list query

class ListQuerySchema(StrictSchema):
    """The list endpoint's query string (CONTRACT.md section 4)."""

    noun = "parameter"
    unlisted = frozenset({"cursor"})   # only ever copied from a next link

    uuid = fields.String(validate=validate.Length(max=64))
    uuid__startswith = fields.String(validate=validate.Regexp(
        r"^[0-9a-fA-F-]{1,36}$", error="must be the start of a uuid (hex digits and '-')"))
    state = _state_field(STATES)
    start_date__gte = DateValue()
    start_date__lte = DateValue()
    end_date__gte = DateValue()
    end_date__lte = DateValue()
    object = _long()
    include_related = QueryBool()
    action = _short()
    user = _short()
    is_user_action = QueryBool()
    order_by = fields.String(validate=validate.OneOf(
        ("start_date", "-start_date"), error="must be 'start_date' or '-start_date'"))
    limit = QueryInteger(MAX_OFFSET)
    offset = QueryInteger(MAX_OFFSET)
    cursor = PageCursor()

    @validates_schema
    def _related_needs_object(self, data, **kwargs):
        if data.get("include_related") is not None and "object" not in data:
            raise ValidationError("include_related needs the object parameter", "include_related")


LIST_QUERY_SCHEMA = ListQuerySchema()
LIST_DEFAULT_LIMIT = 25
LIST_MAX_LIMIT = 1000


# ---------------------------------------------------------------------------- producer bodies

class RecordActionSchema(StrictSchema):
    """POST /api/audit/v1/action/ (CONTRACT.md section 6)."""

    action = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SHORT))
    object = _long()
    method = fields.String(validate=validate.Length(max=16))
    path = _long()
    user = fields.String(validate=validate.Length(min=1, max=MAX_SHORT))
    namespace = fields.String(validate=validate.Length(min=1, max=MAX_SHORT))
    ip = fields.String(validate=validate.Length(max=64))
    user_agent = _long()
    body = BodyValue(allow_none=True)
    state = _state_field(START_STATES)
    start_date = DateValue()
    end_date = DateValue()
    is_user_action = StrictBool()
    can_be_canceled = StrictBool()
    can_be_retried = StrictBool()
    parents = fields.List(fields.String(validate=validate.Length(min=1, max=MAX_LONG)),
                          validate=validate.Length(max=MAX_PARENTS))

    @validates_schema
    def _dates_fit_state(self, data, **kwargs):
        if data.get("end_date") is not None:
            if data.get("state") not in FINAL_STATES:
                finals = [state for state in self.fields["state"].validate.choices
                          if state in FINAL_STATES]
                raise ValidationError("end_date is only accepted with a final state ("
                                      + ", ".join(finals[:-1]) + " or " + finals[-1] + ")",
                                      "end_date")
            if "start_date" in data and data["end_date"] < data["start_date"]:
                raise ValidationError("end_date is before start_date", "end_date")


RECORD_ACTION_SCHEMA = RecordActionSchema()
load_record_action = compile_load(RECORD_ACTION_SCHEMA)   # RECORD_ACTION_SCHEMA.load, compiled


class UuidText(fields.Field):
    """A uuid in any case, as its lowercase text."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return str(uuidlib.UUID(value))
        except (TypeError, ValueError, AttributeError):
            raise ValidationError(f"{value!r} is not a uuid") from None


class ParentsValue(fields.Field):
    """The object graph above an action's object: a producer's chain of parent URIs, nearest
    first, or an export's [child URI, parent URI] edges. Loaded as edges, given the object."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list) or len(value) > MAX_EDGES:
            raise ValidationError(f"must be a list of at most {MAX_EDGES} parent URIs or "
                                  "[child URI, parent URI] pairs")
        if all(isinstance(p, list) and len(p) == 2
               and all(isinstance(u, str) and 0 < len(u) <= MAX_LONG for u in p) for p in value):
            return [list(p) for p in value]
        if all(isinstance(p, str) and 0 < len(p) <= MAX_LONG for p in value):
            chain = [data.get("object") or "", *value]
            if value and not chain[0]:
                raise ValidationError("a list of parent URIs needs the action's object")
            return [[chain[i], chain[i + 1]] for i in range(len(chain) - 1)]
        raise ValidationError("must be [child URI, parent URI] pairs or a list of parent URIs")


class ActionItemSchema(RecordActionSchema):
    """An action as a file carries it, defined once for `serve --fixtures`, `POST /_auditd/seed`
    and `auditd import`: a fixture item (the producer's shape plus uuid, location, any state and
    logs) or a line of auditd's own export (the Action's keys plus namespace, the producer's flags
    cancelable and retriable, parents as edges, logs with their seq). See `auditd.formats.items`."""

    uuid = UuidText()
    state = _state_field(STATES)
    location = fields.String(validate=validate.Length(max=MAX_SHORT))
    end_date = DateValue(allow_none=True)
    resource_uri = _long()          # the export's; derived from the uuid, so not kept
    cancelable = StrictBool()
    retriable = StrictBool()
    parents = ParentsValue()
    logs = fields.Raw()
    proof = fields.Raw()            # an export's proof: for verifiers, not kept


ACTION_ITEM_SCHEMA = ActionItemSchema()
load_action_item = compile_load(ACTION_ITEM_SCHEMA)   # ACTION_ITEM_SCHEMA.load, compiled


class StateChangeSchema(StrictSchema):
    state = _state_field(STATES, required=True)


STATE_CHANGE_SCHEMA = StateChangeSchema()


class LogLineSchema(StrictSchema):
    log = fields.String(required=True, validate=validate.Length(max=MAX_LOG_LINE))
    timestamp = fields.Integer(strict=True, validate=validate.Range(
        min=dates.MIN_TS, max=dates.MAX_TS,
        error="must be Unix seconds within the years 1 to 9999"))
    streamType = fields.String(validate=validate.Length(max=32))


LOG_LINE_SCHEMA = LogLineSchema()


def _error_at(where: str, message: str) -> ValidationError:
    # keyed messages: a bare ValidationError(message, field_name) outside a schema drops the name
    return ValidationError({where: [message]})


def load_log_lines(payload, now: int) -> list:
    """[(ts, stream_type, line)] from a JSON array of strings or of log objects."""
    if not isinstance(payload, list):
        raise _error_at("lines", "must be a JSON array of strings or of "
                                 '{"log": str, "timestamp": int, "streamType": str} objects')
    if len(payload) > MAX_LOG_LINES:
        raise _error_at("lines", f"at most {MAX_LOG_LINES} lines per request")
    lines = []
    for i, item in enumerate(payload):
        if isinstance(item, str):
            if len(item) > MAX_LOG_LINE:
                raise _error_at(f"lines[{i}]", f"is longer than {MAX_LOG_LINE} characters")
            lines.append((now, None, item))
            continue
        if not isinstance(item, dict):
            raise _error_at(f"lines[{i}]", "must be a string or a log object")
        try:
            loaded = LOG_LINE_SCHEMA.load(item)
        except ValidationError as err:
            raise _error_at(f"lines[{i}]", describe_errors(err.messages)) from None
        lines.append((loaded.get("timestamp", now), loaded.get("streamType"), loaded["log"]))
    return lines


# ---------------------------------------------------------------------------- error sentences

def describe_errors(messages, noun: str = "key", prefix: str = "") -> str:
    """marshmallow's nested error messages as one sentence: `state: must be one of: ...; ...`."""
    if isinstance(messages, str):
        return f"{prefix}: {messages}" if prefix else messages
    if isinstance(messages, list):
        return "; ".join(describe_errors(m, noun, prefix) for m in messages)
    parts = []
    for key, value in messages.items():
        if key == "_schema":
            parts.append(describe_errors(value, noun, prefix))
        elif value == ["Unknown field."]:
            parts.append(f"unknown {noun} '{key}'")
        else:
            parts.append(describe_errors(value, noun, f"{prefix}.{key}" if prefix else str(key)))
    return "; ".join(parts)
