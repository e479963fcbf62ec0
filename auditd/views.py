"""The REST handlers of the Actions API. Thin: parse, ask the store, answer."""
import json

from aiohttp import web
from marshmallow import ValidationError

from . import dates, keys
from .auth import require_role, visible_namespaces
from .errors import InvalidRequest
from .schemas import (LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, LIST_QUERY_SCHEMA, STATE_CHANGE_SCHEMA,
                      describe_errors, format_cursor, load_log_lines, load_record_action)
from .store import ListQuery, new_action
from .uris import action_uri

ACTION_URI_HEADER = "X-DockerCloud-Action-URI"


def json_text(text: str, status: int = 200, headers=None) -> web.Response:
    return web.Response(text=text, status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def action_response(action: dict, status: int) -> web.Response:
    return json_text(action["doc"], status, {ACTION_URI_HEADER: action_uri(action["uuid"])})


def single_query(request: web.Request, allowed=None) -> dict:
    """The query string as a plain dict; a parameter given twice is refused."""
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
    try:
        # what json.loads(raw, parse_constant=...) does, without a new decoder per request
        payload = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as err:
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


def _namespaces(request):
    return visible_namespaces(request[keys.PRINCIPAL], request.match_info.get("namespace"))


def _caller(request) -> dict:
    ip = request.remote or ""
    return {"user": request[keys.PRINCIPAL].name, "ip": ip,
            "user_agent": request.headers.get("User-Agent", ""),
            "location": request.app[keys.LOCATOR].locate(ip)}


# ---------------------------------------------------------------------------- reading

def _parse_list_query(params: dict) -> tuple:
    """(filters, limit, offset, newest_first, cursor) from the query's parameters.
    `_list_query` remembers the answer per raw query string."""
    try:
        filters = LIST_QUERY_SCHEMA.load(params)
    except ValidationError as err:
        raise InvalidRequest("invalid query: " + _describe(err, "parameter")) from None
    limit = filters.pop("limit", LIST_DEFAULT_LIMIT)
    limit = LIST_MAX_LIMIT if limit == 0 else min(limit, LIST_MAX_LIMIT)
    offset = filters.pop("offset", 0)
    newest_first = filters.pop("order_by", "-start_date") == "-start_date"
    return filters, limit, offset, newest_first, filters.pop("cursor", None)


_PAGING_PARAMS = ("limit", "offset", "cursor")
_LIST_QUERIES: dict[str, tuple] = {}


def _list_query(request: web.Request) -> tuple:
    """`_parse_list_query`'s answer plus the filters to keep in next/previous links, remembered
    per raw query string: a client polling a list sends the same one again and again."""
    raw = request.rel_url.raw_query_string
    parsed = _LIST_QUERIES.get(raw)
    if parsed is None:
        params = single_query(request)   # raises for a bad query: nothing is remembered
        # next/previous keep every filter exactly as the client wrote it
        kept = "".join(part + "&" for part in request.query_string.split("&")
                       if part and part.partition("=")[0] not in _PAGING_PARAMS)
        parsed = (*_parse_list_query(params), kept)
        if len(_LIST_QUERIES) >= 1024:
            _LIST_QUERIES.clear()
        _LIST_QUERIES[raw] = parsed
    return parsed


async def list_actions(request: web.Request) -> web.Response:
    filters, limit, offset, newest_first, cursor, kept = _list_query(request)
    query = ListQuery(_namespaces(request), limit, offset, newest_first, dict(filters), cursor)
    page = await request.app[keys.STORE].list_actions(query)
    path = request.path if request.path.endswith("/") else request.path + "/"

    def link(at, position=None):
        extra = f"&cursor={format_cursor(position)}" if position else ""
        return f"{path}?{kept}limit={limit}&offset={at}{extra}"

    has_next = offset + limit < page.total and len(page.docs) == limit
    meta = {
        "limit": limit,
        # next carries the last row's position, so following it never rescans skipped rows
        "next": link(offset + limit, page.last) if has_next else None,
        "offset": offset,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
        "total_count": page.total,
    }
    body = b'{"meta": ' + json.dumps(meta).encode() + b', "objects": [' + b", ".join(page.docs)
    return web.Response(body=body + b"]}", content_type="application/json", charset="utf-8")


async def get_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    doc = await request.app[keys.STORE].get_action_doc(request.match_info["uuid"],
                                                       _namespaces(request))
    return json_text(doc)


# ---------------------------------------------------------------------------- user operations

async def cancel_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    action = await request.app[keys.STORE].cancel(request.match_info["uuid"], _namespaces(request))
    return action_response(action, 202)


async def retry_action(request: web.Request) -> web.Response:
    single_query(request, allowed=())
    action = await request.app[keys.STORE].retry(request.match_info["uuid"], _namespaces(request),
                                                 _caller(request))
    return action_response(action, 202)


# ---------------------------------------------------------------------------- producer API

async def record_action(request: web.Request) -> web.Response:
    require_role(request[keys.PRINCIPAL], "producer")
    single_query(request, allowed=())
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object with at least 'action'")
    try:
        fields = load_record_action(payload)
    except ValidationError as err:
        raise InvalidRequest(_describe(err)) from None
    namespace = request.match_info.get("namespace")
    if namespace is not None:
        if fields.setdefault("namespace", namespace) != namespace:
            raise InvalidRequest(f"namespace '{fields['namespace']}' in the body differs from "
                                 f"'{namespace}' in the path")
    caller = _caller(request)
    fields.setdefault("user", caller["user"])
    fields.setdefault("ip", caller["ip"])
    fields.setdefault("user_agent", caller["user_agent"])
    fields["location"] = request.app[keys.LOCATOR].locate(fields["ip"])
    action = await request.app[keys.STORE].record_action(new_action(**fields))
    return action_response(action, 201)


async def change_state(request: web.Request) -> web.Response:
    require_role(request[keys.PRINCIPAL], "producer")
    single_query(request, allowed=())
    payload = await json_body(request)
    if not isinstance(payload, dict):
        raise InvalidRequest('the request body must be a JSON object: {"state": "..."}')
    try:
        state = STATE_CHANGE_SCHEMA.load(payload)["state"]
    except ValidationError as err:
        raise InvalidRequest(_describe(err)) from None
    action = await request.app[keys.STORE].change_state(request.match_info["uuid"], state,
                                                        _namespaces(request))
    return action_response(action, 200)


async def append_logs(request: web.Request) -> web.Response:
    require_role(request[keys.PRINCIPAL], "producer")
    single_query(request, allowed=())
    now = dates.now()
    if request.content_type == "text/plain":
        text = (await request.read()).decode("utf-8", errors="replace")
        payload = text.split("\n")
        if payload and payload[-1] == "":
            payload.pop()
        payload = [line[:-1] if line.endswith("\r") else line for line in payload]
    else:
        payload = await json_body(request)
    try:
        lines = load_log_lines(payload, now)
    except ValidationError as err:
        raise InvalidRequest(_describe(err)) from None
    count = await request.app[keys.STORE].append_logs(request.match_info["uuid"], lines,
                                                      _namespaces(request))
    return json_text(json.dumps({"appended": count}), 201,
                     {ACTION_URI_HEADER: action_uri(request.match_info["uuid"].lower())})


def _describe(err: ValidationError, noun: str = "key") -> str:
    return describe_errors(err.messages, noun)
