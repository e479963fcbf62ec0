"""Reading a request: its query string, its JSON body, and who is asking from where."""
import asyncio
import json
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from ..model.access import visible_namespaces
from ..model.errors import InvalidRequest
from .appkeys import LOCATOR, PRINCIPAL


def single_query(request: web.Request, allowed=None) -> dict:
    """The query string as a plain dict; a parameter given twice, or a value that is not valid
    UTF-8 once percent-decoded, is refused."""
    raw = request.rel_url.raw_query_string
    if "%" in raw:
        _check_encoding(raw)
    params = {}
    for name in request.query.keys():
        values = request.query.getall(name)
        if len(values) > 1:
            raise InvalidRequest(f"query parameter '{name}' is given {len(values)} times; "
                                 "give it once")
        if allowed is not None and name not in allowed:
            raise InvalidRequest(f"unknown query parameter '{name}'; accepted: "
                                 + ", ".join(sorted(allowed)))
        params[name] = values[0]
    return params


async def json_body(request: web.Request):
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type {request.content_type} is not accepted: send application/json")
    raw = await request.read()
    return await off_loop(_decode_json, raw, size=len(raw))


OFF_LOOP_BYTES = 64 * 1024   # bodies above this are decoded and checked on a worker thread


async def off_loop(fn, *args, size: int):
    """`fn(*args)`, on a worker thread when `size` bytes make it long: a big body is parsed
    while the event loop goes on serving others (a Python-level loop hands the GIL back every
    few milliseconds)."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _decode_json(raw: bytes):
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


def _check_encoding(raw: str):
    for part in raw.split("&"):
        name, _, value = part.partition("=")
        for what, text in (("name", name), ("value", value)):
            try:
                unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                shown = unquote(name, errors="replace")
                raise InvalidRequest(f"query parameter {what} '{shown}' is not valid UTF-8 once "
                                     "percent-decoded: encode text as UTF-8") from None


def namespaces(request: web.Request):
    """The namespaces this request may touch: the caller's, narrowed by a namespaced path."""
    return visible_namespaces(request[PRINCIPAL], request.match_info.get("namespace"))


def caller(request: web.Request) -> dict:
    """The caller as the author of an action it causes (a retry): user, ip, agent, location."""
    ip = request.remote or ""
    return {"user": request[PRINCIPAL].name, "ip": ip,
            "user_agent": request.headers.get("User-Agent", ""),
            "location": request.app[LOCATOR].locate(ip)}
