"""Request bodies into what a handler needs.

Each parser is a pure function of the body's bytes (and plain arguments) that returns what the
handler uses, checked and bounded (a record's fields, at most MAX_LOG_LINES log lines, a seed's
actions ready to store), or raises InvalidRequest naming the field. A big body is parsed in a
worker process (`bodyparser.py`), so what comes back from there is this bounded answer, never the
decoded body.
"""
import json

from marshmallow import ValidationError

from ..formats.fixtures import parse_fixtures, prepare_fixtures
from ..model.actions import new_action
from ..model.errors import InvalidRequest
from ..schemas import (MAX_LOG_LINES, STATE_CHANGE_SCHEMA, describe_errors, load_log_lines,
                       load_record_action)


def decode_json(raw: bytes):
    """The JSON value of a body; 400 with where it is wrong."""
    try:
        text = raw.decode(json.detect_encoding(raw))
    except UnicodeDecodeError as err:
        raise InvalidRequest(f"the request body is not valid UTF-8 (byte "
                             f"{err.object[err.start]:#04x} at offset {err.start}); send JSON in "
                             "UTF-8") from None
    try:
        # what json.loads(raw, parse_constant=...) does, without a new decoder per request
        payload = _DECODER.decode(text)
    except ValueError as err:
        raise InvalidRequest(f"the request body is not valid JSON ({err}); send a JSON object") \
            from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply") from None
    if b"\\u" in raw and _has_lone_surrogate(payload):
        raise InvalidRequest("the request body is not valid JSON: a \\u escape is half of a "
                             "surrogate pair, which is no character")
    return payload


def record_fields(raw: bytes) -> dict:
    """A producer's new action (POST .../action/): its fields, checked."""
    payload = decode_json(raw)
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object with at least 'action'")
    try:
        return load_record_action(payload)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def record_from_body(raw: bytes, caller: dict, path_namespace: str | None, locator) -> dict:
    """A producer's new action (POST .../action/) as the complete record the store keeps:
    `record_from_fields` of the body's fields. No I/O but the locator's file, so the store may
    run it where it writes (`Store.record_action`), off the event loop."""
    return record_from_fields(record_fields(raw), caller, path_namespace, locator)


def record_from_fields(fields: dict, caller: dict, path_namespace: str | None, locator) -> dict:
    """`new_action` of a producer's checked fields (`record_fields`): the caller's user, ip and
    user_agent where the body gives none; the location of its ip (`locator`, an
    `auditd.geo.Locator`); the namespace of the path, which the body's must match."""
    if path_namespace is not None:
        if fields.setdefault("namespace", path_namespace) != path_namespace:
            raise InvalidRequest(f"namespace '{fields['namespace']}' in the body differs from "
                                 f"'{path_namespace}' in the path")
    for key in ("user", "ip", "user_agent"):
        fields.setdefault(key, caller[key])
    fields["location"] = locator.locate(fields["ip"])
    return new_action(**fields)


def new_state(raw: bytes) -> str:
    """A producer's state change (PATCH .../action/UUID/): the state."""
    payload = decode_json(raw)
    if not isinstance(payload, dict):
        raise InvalidRequest('the request body must be a JSON object: {"state": "..."}')
    try:
        return STATE_CHANGE_SCHEMA.load(payload)["state"]
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def json_log_lines(raw: bytes, now: int) -> list:
    """[(ts, stream_type, line)] from a JSON array of strings or of log objects."""
    try:
        return load_log_lines(decode_json(raw), now)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def text_log_lines(raw: bytes, now: int) -> list:
    """One line per line of a text/plain body (bytes that are not UTF-8 become U+FFFD); the
    line cap is checked before the body is split."""
    if raw.count(b"\n") > MAX_LOG_LINES:
        raise InvalidRequest(f"lines: at most {MAX_LOG_LINES} lines per request")
    payload = raw.decode("utf-8", errors="replace").split("\n")
    if payload and payload[-1] == "":
        payload.pop()
    try:
        return load_log_lines([line[:-1] if line.endswith("\r") else line for line in payload],
                              now)
    except ValidationError as err:
        raise InvalidRequest(describe_errors(err.messages)) from None


def seed_items(raw: bytes, default_user: str, locator) -> list:
    """An admin's seed (POST /_auditd/seed): a JSON array of action items, one item, or NDJSON,
    as [(record, edges, log lines)] ready for `Store.load`; an item without a location gets
    `locator`'s (an `auditd.geo.Locator`: it travels to the worker process as its file's path)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the request body is not UTF-8 text") from None
    return prepare_fixtures(parse_fixtures(text, "seed"), "seed", default_user, locator.locate)


# Checking an item costs ~6 microseconds however small it is: 64 KiB of small items (~4,000)
# held the loop ~20 ms, so a seed goes to the worker process from 4 KiB on (~1 ms here).
seed_items.off_loop_bytes = 4 * 1024


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)   # NaN and Infinity are not JSON


def _has_lone_surrogate(payload) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return False
    return False
